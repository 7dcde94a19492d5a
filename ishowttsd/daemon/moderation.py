"""The ingest moderation topics (docs/CHAT.md): ``delete``, ``ban``, ``timeout``, ``clear``, ``skip``,
``pause``, ``resume``. Each handler acts on the queue and the chat pipeline and returns the events
to publish (a SUB socket cannot answer its bot)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ishowttsd import log
from ishowttsd.daemon.scheduler import Scheduler
from ishowttsd.events import Error, Event, Moderation, Paused, Resumed
from ishowttsd.job import Job

if TYPE_CHECKING:
    from ishowttsd.daemon.admission import Admission

_log = log.get(__name__)

DEFAULT_TIMEOUT_S = 600.0
"""A ``timeout`` without a duration mutes for Twitch's default ten minutes."""
AUTHORISED_TOPICS = ("skip", "clear", "pause", "resume")
"""Topics that need a token from ``chat.moderator_tokens``."""

Handler = Callable[[dict[str, Any]], list[Event]]


class Moderator:
    def __init__(self, admission: Admission, scheduler: Scheduler) -> None:
        self.admission = admission
        self.scheduler = scheduler
        self._handlers: dict[str, Handler] = {
            "delete": self._delete,
            "ban": lambda body: self._mute(body, timeout=False),
            "timeout": lambda body: self._mute(body, timeout=True),
            "clear": self._clear,
            "skip": self._skip,
            "pause": self._pause,
            "resume": self._resume,
        }

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def handle(self, topic: str, body: dict[str, Any]) -> list[Event]:
        """Act on one moderation message; the events to publish (an ``error`` for a bad one)."""
        counters = self.admission.counters
        if topic in AUTHORISED_TOPICS and not self.admission.pipeline.authorised(body.get("token")):
            counters["moderation.unauthorised"] += 1
            _log.warning("moderation refused: no valid token", topic=topic)
            reason = f"topic {topic!r} needs a 'token' listed in chat.moderator_tokens"
            return [Error(code="unauthorized", reason=reason, source="ingest")]
        return self.act(topic, body)

    def act(self, topic: str, body: dict[str, Any]) -> list[Event]:
        """Act on a moderation message already authorised (or needing no token); its events."""
        self.admission.counters[f"moderation.{topic}"] += 1
        return self._handlers[topic](body)

    def _remove(self, pred: Callable[[Job], bool], reason: str, action: str, **fields: Any) -> list[Event]:
        jobs = self.scheduler.remove(pred, reason)
        self.admission.cancelled(jobs, reason)
        return [Moderation(action=action, jobs=tuple(j.id for j in jobs), **fields)]

    def _delete(self, body: dict[str, Any]) -> list[Event]:
        mid = body.get("id", body.get("msg_id"))
        if not isinstance(mid, (str, int)) or isinstance(mid, bool) or str(mid) == "":
            return [_bad("delete: field 'id' (the chat message id) is required")]
        target = str(mid)
        return self._remove(lambda j: j.msg_id == target, "deleted", "delete", id=target)

    def _mute(self, body: dict[str, Any], timeout: bool) -> list[Event]:
        user = body.get("user")
        if not isinstance(user, str) or not user:
            return [_bad("ban/timeout: field 'user' is required")]
        duration: float | None = None
        if timeout:
            # ``duration_s`` is the contract; plain ``duration`` is read too, for early bots.
            raw = body.get("duration_s", body.get("duration", DEFAULT_TIMEOUT_S))
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
                return [_bad("timeout: field 'duration_s' must be seconds (a number >= 0)")]
            duration = float(raw)
        folded = user.casefold()
        self.admission.pipeline.mute(user, duration)
        return self._remove(
            lambda j: j.from_chat and (j.user or "").casefold() == folded,
            "banned" if duration is None else "timed_out",
            "ban" if duration is None else "timeout",
            user=user,
            duration_s=duration,
        )

    def _clear(self, body: dict[str, Any]) -> list[Event]:
        # Paid lines are never cleared in bulk ("important" is never interrupted); delete one by id.
        return self._remove(lambda j: j.from_chat and j.priority != "important", "cleared", "clear")

    def _skip(self, body: dict[str, Any]) -> list[Event]:
        cur = self.scheduler.current
        stopped = None
        if cur is not None and cur.priority != "important":
            stopped = self.scheduler.stop_current("skipped", cur.id)
        return [Moderation(action="skip", jobs=(stopped.id,) if stopped else ())]

    def _pause(self, body: dict[str, Any]) -> list[Event]:
        self.scheduler.pause()
        return [Paused(source="ingest")]

    def _resume(self, body: dict[str, Any]) -> list[Event]:
        self.scheduler.resume()
        return [Resumed(source="ingest")]


def _bad(reason: str) -> Error:
    return Error(code="bad_request", reason=reason, source="ingest")
