"""The ingest moderation topics (docs/CHAT.md): ``delete``, ``ban``, ``timeout``, ``clear``, ``skip``,
``pause``, ``resume``. Each handler acts on the queue and the chat pipeline and returns a
:class:`Moderated`: the events to publish (a SUB socket cannot answer its bot), the jobs it took
out of the queue (the admission reports them ``cancelled``) and the counter to add one to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ishowttsd import log
from ishowttsd.chat.pipeline import Pipeline
from ishowttsd.daemon.scheduler import Scheduler
from ishowttsd.events import Error, Event, Moderation, Paused, Resumed
from ishowttsd.job import Job

_log = log.get(__name__)

DEFAULT_TIMEOUT_S = 600.0
"""A ``timeout`` without a duration mutes for Twitch's default ten minutes."""
AUTHORISED_TOPICS = ("skip", "clear", "pause", "resume")
"""Topics that need a token from ``chat.moderator_tokens``."""


@dataclass(frozen=True)
class Moderated:
    """What one moderation message did, for the admission to report: the removed jobs first
    (``cancelled`` with :attr:`reason`), then :attr:`events` on the PUB ``event`` topic."""

    events: list[Event]
    removed: tuple[Job, ...] = ()
    reason: str = ""
    count: str = ""
    """The chat counter to add one to (``moderation.<topic>``, ``moderation.unauthorised``)."""


Handler = Callable[[dict[str, Any], Pipeline], Moderated]


class Moderator:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._handlers: dict[str, Handler] = {
            "delete": self._delete,
            "ban": lambda body, pipeline: self._mute(body, pipeline, timeout=False),
            "timeout": lambda body, pipeline: self._mute(body, pipeline, timeout=True),
            "clear": self._clear,
            "skip": self._skip,
            "pause": self._pause,
            "resume": self._resume,
        }

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def handle(self, topic: str, body: dict[str, Any], pipeline: Pipeline) -> Moderated:
        """Act on one moderation message (an ``error`` event for a bad or unauthorised one)."""
        if topic in AUTHORISED_TOPICS and not pipeline.authorised(body.get("token")):
            _log.warning("moderation refused: no valid token", topic=topic)
            reason = f"topic {topic!r} needs a 'token' listed in chat.moderator_tokens"
            refused = Error(code="unauthorized", reason=reason, source="ingest")
            return Moderated([refused], count="moderation.unauthorised")
        return self.act(topic, body, pipeline)

    def act(self, topic: str, body: dict[str, Any], pipeline: Pipeline) -> Moderated:
        """Act on a moderation message already authorised (or needing no token)."""
        return replace(self._handlers[topic](body, pipeline), count=f"moderation.{topic}")

    def _remove(self, pred: Callable[[Job], bool], reason: str, action: str, **fields: Any) -> Moderated:
        jobs = tuple(self.scheduler.remove(pred, reason))
        return Moderated([Moderation(action=action, jobs=tuple(j.id for j in jobs), **fields)], jobs, reason)

    def _delete(self, body: dict[str, Any], pipeline: Pipeline) -> Moderated:
        mid = body.get("id", body.get("msg_id"))
        if not isinstance(mid, (str, int)) or isinstance(mid, bool) or str(mid) == "":
            return Moderated([_bad("delete: field 'id' (the chat message id) is required")])
        target = str(mid)
        return self._remove(lambda j: j.msg_id == target, "deleted", "delete", id=target)

    def _mute(self, body: dict[str, Any], pipeline: Pipeline, timeout: bool) -> Moderated:
        user = body.get("user")
        if not isinstance(user, str) or not user:
            return Moderated([_bad("ban/timeout: field 'user' is required")])
        duration: float | None = None
        if timeout:
            # ``duration_s`` is the contract; plain ``duration`` is read too, for early bots.
            raw = body.get("duration_s", body.get("duration", DEFAULT_TIMEOUT_S))
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
                return Moderated([_bad("timeout: field 'duration_s' must be seconds (a number >= 0)")])
            duration = float(raw)
        folded = user.casefold()
        pipeline.mute(user, duration)
        return self._remove(
            lambda j: j.from_chat and (j.user or "").casefold() == folded,
            "banned" if duration is None else "timed_out",
            "ban" if duration is None else "timeout",
            user=user,
            duration_s=duration,
        )

    def _clear(self, body: dict[str, Any], pipeline: Pipeline) -> Moderated:
        # Paid lines are never cleared in bulk ("important" is never interrupted); delete one by id.
        return self._remove(lambda j: j.from_chat and j.priority != "important", "cleared", "clear")

    def _skip(self, body: dict[str, Any], pipeline: Pipeline) -> Moderated:
        cur = self.scheduler.current
        stopped = None
        if cur is not None and cur.priority != "important":
            stopped = self.scheduler.stop_current("skipped", cur.id)
        return Moderated([Moderation(action="skip", jobs=(stopped.id,) if stopped else ())])

    def _pause(self, body: dict[str, Any], pipeline: Pipeline) -> Moderated:
        self.scheduler.pause()
        return Moderated([Paused(source="ingest")])

    def _resume(self, body: dict[str, Any], pipeline: Pipeline) -> Moderated:
        self.scheduler.resume()
        return Moderated([Resumed(source="ingest")])


def _bad(reason: str) -> Error:
    return Error(code="bad_request", reason=reason, source="ingest")
