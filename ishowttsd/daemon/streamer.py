"""Streamer controls in the daemon: the admission asks here, before and after the filters, what a
line is (``ishowttsd/chat/rules.py`` decides) and carries out the :class:`Effects` it gets back.

- before the filters (:meth:`StreamerControls.before`): a chat command is returned to be carried
  out (:meth:`StreamerControls.command`) and not read; a line the rules refuse comes back as its
  ``dropped`` event; a command prefix is stripped;
- after the filters (:meth:`StreamerControls.after`): a channel-point reward's priority and voice,
  the viewer's sticky voice (``!voice``), voice tags split into segments, and approval: a held line
  waits in :attr:`held` until the ``approve`` or ``reject`` control op, or expires
  ``not_approved``.

Nothing here calls back into the admission: every method returns what is to happen (events to
send, a line to queue, a user's lines to cancel, a moderation topic to act on), and the admission,
which owns the queue and the events, does it.

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
from typing import Any

from ishowttsd import log
from ishowttsd.chat.pipeline import Accept
from ishowttsd.chat.rules import Command, Read, Refuse, Rules, decide, voice_segments
from ishowttsd.chat.settings import ChatSettings
from ishowttsd.chat.voicestore import VoiceStore
from ishowttsd.events import Command as CommandEvent
from ishowttsd.events import Dropped, Error, Event, Held, HeldLines, JobEvent, Ok
from ishowttsd.job import Job
from ishowttsd.protocol import ChatMessage

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


@dataclass(frozen=True)
class Effects:
    """What the admission carries out for a decision made here, in the order of the fields."""

    cancel_user: str | None = None
    """Take this viewer's queued chat lines out (``!ttscancel``): ``cancelled_by_user``."""
    emit: tuple[tuple[Job, JobEvent], ...] = ()
    """Job events to send (a refusal, a held line's ``held``, held lines that ended)."""
    submit: HeldLine | None = None
    """An approved line to queue (its chat limits committed then)."""
    moderate: tuple[str, dict[str, Any]] | None = None
    """A moderation topic to act on (a moderator's chat command, already authorised)."""
    count: str | None = None
    """A chat counter to add one to (``commands.<name>``, ``commands.refused``)."""
    publish: Event | None = None
    """An event for the PUB ``event`` topic (a chat command's ``command`` event)."""


NO_EFFECTS = Effects()


class StreamerControls:
    def __init__(self, store: VoiceStore, voice_ids: Callable[[], Collection[str] | None]):
        self.store = store
        self.voice_ids = voice_ids
        self.held: dict[str, HeldLine] = {}
        """Job id -> a line waiting for a moderator (insertion order: oldest first)."""

    # -- before the filters ------------------------------------------------------------------------------
    def before(
        self, msg: ChatMessage, job: Job, rules: Rules
    ) -> tuple[ChatMessage, Read] | Command | Effects:
        """The line to filter (a command prefix stripped) and how it is read; a :class:`Command` to
        carry out (:meth:`command`) instead of reading it; or the refusal (its ``dropped`` event)."""
        v = decide(msg, rules)
        if isinstance(v, Command):
            return v
        if isinstance(v, Refuse):
            return Effects(emit=((job, Dropped(reason=v.reason, detail=v.detail, text=msg.text)),))
        if v.text == msg.text:
            return msg, v
        shift = msg.text.find(v.text)
        emotes = tuple((a - shift, b - shift) for a, b in msg.emotes if a - shift >= 0) if shift >= 0 else ()
        return dataclasses.replace(msg, text=v.text, emotes=emotes), v

    # -- after the filters -------------------------------------------------------------------------------
    def after(
        self, msg: ChatMessage, job: Job, v: Read, accept: Accept, chat: ChatSettings
    ) -> Effects | None:
        """Priority, voice, segments and approval of an accepted line; None: go on to queue it; an
        :class:`Effects`: held (its ``held`` event, and any older held line it pushed out)."""
        if v.priority is not None:
            job.priority = v.priority
        user = (msg.user or "").casefold()
        if v.voice is not None:
            job.voice = v.voice
        elif user and user not in chat.voices:
            sticky = self.store.get(msg.platform, user)
            if sticky is not None:
                job.voice = sticky
        if chat.rules.voice_tags:
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
            return self._hold(job, v.hold, accept, chat.rules.approval_timeout_s)
        return None

    # -- approval -----------------------------------------------------------------------------------------
    def _hold(self, job: Job, reason: str, accept: Accept, timeout_s: float) -> Effects:
        now = time.monotonic()
        ended: list[tuple[Job, JobEvent]] = []
        while len(self.held) >= MAX_HELD:
            ended.append(self._expire(next(iter(self.held)), "too many lines waiting for approval"))
        self.held[job.id] = HeldLine(job, reason, now + timeout_s, now, accept)
        ended.append((job, Held(text=job.text, hold=reason, expires_in_s=timeout_s)))
        return Effects(emit=tuple(ended))

    def tick(self, rules: Rules) -> Effects:
        """From the daemon's loop: held lines past their deadline are dropped ``not_approved``."""
        if not self.held:
            return NO_EFFECTS
        now = time.monotonic()
        detail = f"not approved within {rules.approval_timeout_s:g} s"
        due = [k for k, h in self.held.items() if h.deadline <= now]
        return Effects(emit=tuple(self._expire(job_id, detail) for job_id in due))

    def _expire(self, job_id: str, detail: str, reason: str = "not_approved") -> tuple[Job, JobEvent]:
        h = self.held.pop(job_id)
        return h.job, Dropped(reason=reason, detail=detail, text=h.job.text)

    def _find(self, key: str) -> HeldLine | None:
        h = self.held.get(key)
        if h is None:  # a moderator may name the chat message instead of the job
            h = next((x for x in self.held.values() if x.job.msg_id == key), None)
        return h

    def approval_op(self, op: str, args: dict[str, Any], rules: Rules) -> tuple[Event, Effects]:
        """The control ops ``held`` (list), ``approve`` and ``reject`` (``id``: job or message id):
        the reply, and what to carry out first (the expired lines, then the rejection or the
        approved line)."""
        expired = self.tick(rules)
        if op == "held":
            now = time.monotonic()
            return HeldLines(
                lines=tuple(
                    {**h.job.describe(), "text": h.job.text, "hold": h.reason,
                     "waiting_s": round(now - h.held_at, 1), "expires_in_s": round(h.deadline - now, 1)}
                    for h in self.held.values()
                )
            ), expired  # fmt: skip
        key = args.get("id")
        if not isinstance(key, str) or not key:
            return Error(code="bad_request", reason=f"{op}: field 'id' (a held job) is required"), expired
        h = self._find(key)
        if h is None:
            return Error(code="not_found", reason=f"{op}: no held line {key!r} (expired?)"), expired
        del self.held[h.job.id]
        if op == "reject":
            rejected = Dropped(reason="rejected", detail="rejected by a moderator", text=h.job.text)
            return Ok(op=op, job=h.job.id), Effects(emit=(*expired.emit, (h.job, rejected)))
        return Ok(op=op, job=h.job.id), Effects(emit=expired.emit, submit=h)

    # -- chat commands -----------------------------------------------------------------------------------
    def command(self, msg: ChatMessage, cmd: Command, authorised: bool) -> Effects:
        """A chat command: what it does, its counter and its ``command`` event. ``authorised``:
        the line carries a token from ``chat.moderator_tokens``."""
        ok, why = True, None
        if cmd.moderator_only:
            if not msg.moderator:
                ok, why = False, "moderators and the broadcaster only"
            elif not authorised:
                ok, why = False, "the line carries no valid token (chat.moderator_tokens)"
        done = NO_EFFECTS
        if ok:
            ok, why, done = self._carry_out(msg, cmd)
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
        count = f"commands.{cmd.name}" if ok else "commands.refused"
        return dataclasses.replace(done, count=count, publish=event)

    def _carry_out(self, msg: ChatMessage, cmd: Command) -> tuple[bool, str | None, Effects]:
        user = msg.user or ""
        if cmd.name in ("voice", "voice_reset"):
            if not user:
                return False, "a line without a user", NO_EFFECTS
            voice = cmd.arg if cmd.name == "voice" else None
            if voice is not None:
                known = self.voice_ids() or ()
                match = next((k for k in known if k.casefold() == voice.casefold()), None)
                if match is None:
                    return False, f"unknown voice {voice!r}", NO_EFFECTS
                voice = match
            self.store.set(msg.platform, user, voice)
            return True, None, NO_EFFECTS
        if cmd.name == "cancel":
            folded = user.casefold()
            mine = [h.job.id for h in self.held.values() if (h.job.user or "").casefold() == folded]
            ended = tuple(self._expire(i, "cancelled by the viewer", "cancelled_by_user") for i in mine)
            return True, None, Effects(cancel_user=folded, emit=ended)
        body: dict[str, Any] = {}
        if cmd.name == "ban":
            if not cmd.arg:
                return False, "!ttsban needs a user", NO_EFFECTS
            body = {"user": cmd.arg}
        return True, None, Effects(moderate=(cmd.name, body))
