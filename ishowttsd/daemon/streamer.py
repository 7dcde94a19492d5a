"""Streamer controls in the daemon: the admission asks here, before and after the filters, what a
line is (``ishowttsd/chat/rules.py`` decides) and carries out what follows.

- before the filters (:meth:`StreamerControls.before`): a chat command is carried out and not
  read; a line the rules refuse is dropped with its reason; a command prefix is stripped;
- after the filters (:meth:`StreamerControls.after`): a channel-point reward's priority and voice,
  the viewer's sticky voice (``!voice``), voice tags split into segments, and approval: a held line
  waits in :attr:`held` until the ``approve`` or ``reject`` control op, or expires
  ``not_approved``.

Trust (docs/PROTOCOL.md, "role facts"): a moderator's chat command is obeyed only when the line's
roles say moderator or broadcaster *and* it carries a token from ``[chat] moderator_tokens`` (the
Twitch bridge adds its ``moderator_token`` to the lines of moderators): any bot on the ingest socket
can already make the daemon speak, but not stop others' speech.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ishowttsd import log
from ishowttsd.chat.pipeline import Accept
from ishowttsd.chat.rules import Command, Read, Refuse, Rules, decide, voice_segments
from ishowttsd.chat.voicestore import VoiceStore
from ishowttsd.events import Command as CommandEvent
from ishowttsd.events import Dropped, Error, Event, Held, HeldLines, Ok
from ishowttsd.job import Job
from ishowttsd.protocol import ChatMessage

if TYPE_CHECKING:
    from ishowttsd.daemon.admission import Admission

_log = log.get(__name__)

MAX_HELD = 500
"""Lines waiting for approval at most; past it the oldest is dropped ``not_approved``."""


@dataclass
class HeldLine:
    job: Job
    reason: str
    """The ``approval`` mode that held it (``all``, ``first_time``, ``paid``)."""
    deadline: float
    """Monotonic seconds."""
    held_at: float
    accept: Accept
    """The filters' decision: its chat limits are committed when the line is approved."""


class StreamerControls:
    def __init__(
        self, admission: Admission, store: VoiceStore, voice_ids: Callable[[], Collection[str] | None]
    ):
        self.admission = admission
        self.store = store
        self.voice_ids = voice_ids
        self.held: dict[str, HeldLine] = {}
        """Job id -> a line waiting for a moderator (insertion order: oldest first)."""

    @property
    def rules(self) -> Rules:
        return self.admission.pipeline.settings.rules

    # -- before the filters ------------------------------------------------------------------------------
    def before(self, msg: ChatMessage, job: Job) -> tuple[ChatMessage, Read] | None:
        """The line to filter (a command prefix stripped) and how it is read, or None when it is
        handled: a command carried out, or a refusal (its ``dropped`` event sent)."""
        v = decide(msg, self.rules)
        if isinstance(v, Command):
            self._command(msg, v)
            return None
        if isinstance(v, Refuse):
            self.admission.emit(job, Dropped(reason=v.reason, detail=v.detail, text=msg.text))
            return None
        if v.text == msg.text:
            return msg, v
        shift = msg.text.find(v.text)
        emotes = tuple((a - shift, b - shift) for a, b in msg.emotes if a - shift >= 0) if shift >= 0 else ()
        return dataclasses.replace(msg, text=v.text, emotes=emotes), v

    # -- after the filters -------------------------------------------------------------------------------
    def after(self, msg: ChatMessage, job: Job, v: Read, accept: Accept) -> bool:
        """Priority, voice, segments and approval of an accepted line; False: held (its event sent)."""
        if v.priority is not None:
            job.priority = v.priority
        user = (msg.user or "").casefold()
        if v.voice is not None:
            job.voice = v.voice
        elif user and user not in self.admission.pipeline.settings.voices:
            sticky = self.store.get(msg.platform, user)
            if sticky is not None:
                job.voice = sticky
        if self.rules.voice_tags:
            known = self.voice_ids()
            if known:
                segments = voice_segments(job.text, known)
                if len(segments) > 1 or segments[0][0] is not None:
                    job.segments = tuple((voice or job.voice, text) for voice, text in segments)
                    job.text = " ".join(text for _, text in segments)
        if v.hold is not None:
            known = self.voice_ids()
            if job.voice is not None and known is not None and job.voice not in known:
                job.voice = None  # as the admission does for a line queued at once
            self._hold(job, v.hold, accept)
            return False
        return True

    # -- approval -----------------------------------------------------------------------------------------
    def _hold(self, job: Job, reason: str, accept: Accept) -> None:
        now = time.monotonic()
        while len(self.held) >= MAX_HELD:
            self._expire(next(iter(self.held)), "too many lines waiting for approval")
        self.held[job.id] = HeldLine(job, reason, now + self.rules.approval_timeout_s, now, accept)
        self.admission.emit(job, Held(text=job.text, hold=reason, expires_in_s=self.rules.approval_timeout_s))

    def tick(self) -> None:
        """From the daemon's loop: held lines past their deadline are dropped ``not_approved``."""
        if not self.held:
            return
        now = time.monotonic()
        for job_id in [k for k, h in self.held.items() if h.deadline <= now]:
            self._expire(job_id, f"not approved within {self.rules.approval_timeout_s:g} s")

    def _expire(self, job_id: str, detail: str, reason: str = "not_approved") -> None:
        h = self.held.pop(job_id)
        self.admission.emit(h.job, Dropped(reason=reason, detail=detail, text=h.job.text))

    def _find(self, key: str) -> HeldLine | None:
        h = self.held.get(key)
        if h is None:  # a moderator may name the chat message instead of the job
            h = next((x for x in self.held.values() if x.job.msg_id == key), None)
        return h

    def approval_op(self, op: str, args: dict[str, Any]) -> Event:
        """The control ops ``held`` (list), ``approve`` and ``reject`` (``id``: job or message id)."""
        self.tick()
        if op == "held":
            now = time.monotonic()
            return HeldLines(
                lines=tuple(
                    {**h.job.describe(), "text": h.job.text, "hold": h.reason,
                     "waiting_s": round(now - h.held_at, 1), "expires_in_s": round(h.deadline - now, 1)}
                    for h in self.held.values()
                )
            )  # fmt: skip
        key = args.get("id")
        if not isinstance(key, str) or not key:
            return Error(code="bad_request", reason=f"{op}: field 'id' (a held job) is required")
        h = self._find(key)
        if h is None:
            return Error(code="not_found", reason=f"{op}: no held line {key!r} (expired?)")
        del self.held[h.job.id]
        if op == "reject":
            detail = "rejected by a moderator"
            self.admission.emit(h.job, Dropped(reason="rejected", detail=detail, text=h.job.text))
        else:
            self.admission.submit(h.job, h.accept)
        return Ok(op=op, job=h.job.id)

    # -- chat commands -----------------------------------------------------------------------------------
    def _command(self, msg: ChatMessage, cmd: Command) -> None:
        ok, why = True, None
        if cmd.moderator_only:
            if not msg.moderator:
                ok, why = False, "moderators and the broadcaster only"
            elif not self.admission.pipeline.authorised(msg.token):
                ok, why = False, "the line carries no valid token (chat.moderator_tokens)"
        if ok:
            ok, why = self._carry_out(msg, cmd)
        event = CommandEvent(
            command=cmd.name,
            ok=ok,
            user=msg.user,
            channel=msg.channel,
            platform=msg.platform,
            msg_id=msg.id,
            arg=cmd.arg,
            reason=why,
        )
        self.admission.counters[f"commands.{cmd.name}" if ok else "commands.refused"] += 1
        self.admission.publish(event)

    def _carry_out(self, msg: ChatMessage, cmd: Command) -> tuple[bool, str | None]:
        admission = self.admission
        user = msg.user or ""
        if cmd.name in ("voice", "voice_reset"):
            if not user:
                return False, "a line without a user"
            voice = cmd.arg if cmd.name == "voice" else None
            if voice is not None:
                known = self.voice_ids() or ()
                match = next((k for k in known if k.casefold() == voice.casefold()), None)
                if match is None:
                    return False, f"unknown voice {voice!r}"
                voice = match
            self.store.set(msg.platform, user, voice)
            return True, None
        if cmd.name == "cancel":
            folded = user.casefold()
            jobs = admission.scheduler.remove(
                lambda j: j.source in ("chat", "replay") and (j.user or "").casefold() == folded,
                "cancelled",
                include_current=False,
            )
            admission.cancelled(jobs, "cancelled_by_user")
            for h in [h for h in self.held.values() if (h.job.user or "").casefold() == folded]:
                self._expire(h.job.id, "cancelled by the viewer", "cancelled_by_user")
            return True, None
        body: dict[str, Any] = {}
        if cmd.name == "ban":
            if not cmd.arg:
                return False, "!ttsban needs a user"
            body = {"user": cmd.arg}
        admission.moderate(cmd.name, body)
        return True, None
