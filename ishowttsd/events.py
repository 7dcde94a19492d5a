"""Everything the daemon sends: outbound events as frozen dataclasses, and the tables of codes.

Each class is one ``event`` name on the wire (docs/PROTOCOL.md, docs/CHAT.md); :meth:`Event.to_json`
makes its JSON object. Job events (:class:`JobEvent`) carry the job's fields (``job``, ``priority``,
``source``, the chat origin, ``voice``, ``req``); they leave through one door,
:meth:`ishowttsd.daemon.report.Report.emit`, which also keeps the job's journal row and the
drop counters. Other events are published or replied by the I/O loop (:mod:`ishowttsd.daemon.sockets`).

Optional fields marked ``omit`` are left out of the JSON when None (as the wire has always done);
other fields are always sent, None as ``null``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ishowttsd.job import Job

ERROR_CODES: Mapping[str, str] = {
    # protocol: a message that can't be served
    "bad_frames": "wrong number of frames",
    "bad_encoding": "not UTF-8, or a lone UTF-16 surrogate escape",
    "bad_json": "not JSON, or nested too deeply",
    "bad_request": "a field is missing or has the wrong type",
    "unknown_op": "a control request with an op the daemon does not know",
    "unknown_topic": "an ingest message on a topic the daemon does not know",
    "unsupported_topic": "a known ingest topic that this daemon does not handle",
    "too_large": "a control request over [zmq] max_message_bytes (answered with limit and size)",
    "text_too_long": "more characters than [queue] max_text_chars",
    "empty_text": "a say request with nothing to speak",
    "unknown_voice": "a say request for a voice the engine does not have",
    "duplicate_id": "a say request whose id is already queued or being spoken",
    "not_ready": "a job reached the engine before it was loaded",
    "unauthorized": "a moderation topic without a valid token",
    "internal_error": "a bug in a request handler (see the daemon log)",
    "not_found": "approve/reject of a line that is not held (expired?)",
    # a job that failed
    "engine_error": "synthesis failed",
    "out_of_memory": "synthesis ran out of GPU or host memory",
    "audio_error": "the sound card failed",
    # the job journal
    "journal_full": "the journal reached [chat] journal_max_mb",
    "journal_error": "the journal could not be written",
    "bad_text": "text the journal cannot store",
}
"""Every ``code`` of an ``error`` event."""

DROP_REASONS: Mapping[str, str] = {
    "queue_full": "no room in the queue (or made room for newer speech)",
    "user_limit": "the user already has [queue] max_per_user lines queued",
    "text_too_long": "more characters than [queue] max_text_chars after the chat filters",
    "stale": "waited past its staleness limit",
    "ignored": "the user is on chat.ignore_users",
    "banned": "the user is banned or timed out",
    "blocked": "a chat.blocklist word with action = drop",
    "empty": "nothing speakable left after the chat filters",
    "duplicate": "the same text in the channel within chat.duplicate_window_s",
    "cooldown": "the user spoke within chat.user_cooldown_s",
    "rate_limited": "more than chat.rate_limit_messages lines in the window",
    "not_command": "chat.mode = command and the line is not a command",
    "ignored_prefix": "starts with one of chat.ignore_prefixes (another bot's command)",
    "not_allowed": "the sender's role is not read (chat.who)",
    "notice_not_read": "a notice kind not in chat.who.notices",
    "reward_not_read": "a channel-point reward that is not read (chat.rewards)",
    "bits_below_min": "fewer bits than chat.who.bits_min",
    "first_time": "a first-time chatter's line (chat.first_time = skip)",
    "not_approved": "held for approval and not approved in time (or too many held)",
    "rejected": "held for approval and rejected by a moderator",
    "cancelled_by_user": "the viewer's own !tts cancel while the line was held",
}
"""Every ``reason`` of a ``dropped`` event."""

CANCEL_REASONS: Mapping[str, str] = {
    "cancelled": "a client's cancel",
    "stopped": "a client's stop",
    "shutdown": "the daemon is stopping (journalled jobs are replayed at the next start)",
    "deleted": "a moderator deleted the chat message",
    "banned": "a moderator banned the user",
    "timed_out": "a moderator timed the user out",
    "cleared": "a moderator cleared the chat",
    "skipped": "a moderator skipped the line being spoken",
    "cancelled_by_user": "the viewer's own !tts cancel",
}
"""Every ``reason`` of a ``cancelled`` event."""


def omit() -> Any:
    """An optional field that the JSON leaves out when it is None."""
    return field(default=None, metadata={"omit": True})


def _flat() -> Any:
    """A mapping field whose items are merged into the event's JSON object."""
    return field(default_factory=dict, metadata={"flat": True})


@dataclass(frozen=True)
class Event:
    """One outbound JSON object; ``name`` is its ``event`` field."""

    name: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.metadata.get("flat"):
                out.update(v)
            elif v is None and f.metadata.get("omit"):
                continue
            else:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Event:
        """The event that :meth:`to_json` made ``obj`` from (clients and tests read events back)."""
        if obj.get("event") != cls.name:
            raise ValueError(f"not a {cls.name!r} event: {obj.get('event')!r}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        flat = next((f.name for f in known.values() if f.metadata.get("flat")), None)
        kwargs: dict[str, Any] = {flat: {}} if flat else {}
        for k, v in obj.items():
            f = known.get(k)
            if k == "event":
                continue
            if f is None or f.metadata.get("flat"):
                if flat is None:
                    raise ValueError(f"{cls.name!r} has no field {k!r}")
                kwargs[flat][k] = v
            else:
                kwargs[k] = tuple(v) if isinstance(v, list) and "tuple" in str(f.type) else v
        return cls(**kwargs)


@dataclass(frozen=True)
class JobEvent(Event):
    """An event about one job; ``info`` holds the job's fields (see :meth:`for_job`)."""

    info: Mapping[str, Any] = _flat()
    terminal: ClassVar[bool] = False
    """The job's last event (its outcome)."""

    def for_job(self, job: Job) -> JobEvent:
        """This event with ``job``'s fields: ``job``, ``priority``, ``source``, origin, ``voice``, ``req``."""
        info = job.describe()
        if job.req is not None:
            info["req"] = job.req
        return dataclasses.replace(self, info=info)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        req = out.pop("req", None)  # last, as clients have always seen it
        if req is not None:
            out["req"] = req
        return out


# -- job events -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued(JobEvent):
    name = "queued"
    position: int = 0
    text: str = ""
    crash_safe: bool | None = omit()
    """False when the journal could not take it: it would not survive a crash."""


@dataclass(frozen=True)
class Started(JobEvent):
    name = "started"
    text: str = ""
    voice: str | None = None
    segments: tuple[Mapping[str, Any], ...] | None = omit()
    """Voice tags: each segment's voice and text, in speaking order."""


@dataclass(frozen=True)
class Done(JobEvent):
    name = "done"
    terminal = True
    audio_s: float = 0.0
    synth_s: float = 0.0
    rtf: float = 0.0
    ttfa_s: float = 0.0
    chunks: int = 0
    batch: int | None = omit()
    """How many jobs were synthesised together (only when batched)."""


@dataclass(frozen=True)
class Cancelled(JobEvent):
    name = "cancelled"
    terminal = True
    reason: str = "cancelled"
    audio_s: float | None = omit()


@dataclass(frozen=True)
class Dropped(JobEvent):
    name = "dropped"
    terminal = True
    reason: str = ""
    detail: str | None = omit()
    text: str | None = omit()


@dataclass(frozen=True)
class JobError(JobEvent):
    """``error`` about a job (a synthesis failure, a journal refusal)."""

    name = "error"
    terminal = True
    code: str = ""
    reason: str = ""
    text: str | None = omit()


@dataclass(frozen=True)
class Filtered(JobEvent):
    """The chat filters changed the line: the final text and what was replaced."""

    name = "filtered"
    text: str = ""
    original: str = ""
    replacements: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Held(JobEvent):
    """A chat line waiting for a moderator's ``approve`` (or ``reject``)."""

    name = "held"
    text: str = ""
    hold: str = ""
    """The ``approval`` mode that held it (``all``, ``first_time``, ``paid``)."""
    expires_in_s: float = 0.0


@dataclass(frozen=True)
class Replayed(JobEvent):
    """A journalled job queued again after a restart."""

    name = "replayed"
    text: str = ""
    origin: str = ""
    accepted_at: float = 0.0


# -- other events -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Error(Event):
    """``error`` about a message (not a job): a control reply, or on the event topic for ingest."""

    name = "error"
    code: str = ""
    reason: str = ""
    source: str | None = omit()
    """``ingest`` for errors about ingest messages (published: a SUB socket can't answer)."""

    def to_json(self) -> dict[str, Any]:
        if self.source is None:
            return {"event": self.name, "code": self.code, "reason": self.reason}
        return {"event": self.name, "source": self.source, "code": self.code, "reason": self.reason}


@dataclass(frozen=True)
class TooLarge(Event):
    """``error`` for a control request over ``[zmq] max_message_bytes`` (answered unread)."""

    name = "error"
    code: str = "too_large"
    reason: str = ""
    limit: int = 0
    size: int = 0


@dataclass(frozen=True)
class Ready(Event):
    name = "ready"
    engine: str = ""


@dataclass(frozen=True)
class Paused(Event):
    name = "paused"
    source: str | None = omit()


@dataclass(frozen=True)
class Resumed(Event):
    name = "resumed"
    source: str | None = omit()


@dataclass(frozen=True)
class Moderation(Event):
    """A moderation topic acted on: which jobs it removed."""

    name = "moderation"
    action: str = ""
    id: str | None = omit()
    user: str | None = omit()
    duration_s: float | None = omit()
    jobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pong(Event):
    name = "pong"
    ready: bool = False
    ts: float = 0.0


@dataclass(frozen=True)
class Voices(Event):
    name = "voices"
    voices: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Ok(Event):
    name = "ok"
    op: str = ""
    jobs: tuple[str, ...] | None = omit()
    job: str | None = omit()
    """``approve``/``reject``: the job."""
    action: str | None = omit()
    """``moderate``: the action taken."""


@dataclass(frozen=True)
class VoiceChosen(Event):
    """The ``default_voice`` op's reply: the default voice now in effect (null: the engine's)."""

    name = "ok"
    op: str = "default_voice"
    voice: str | None = None


@dataclass(frozen=True)
class VoicesReloaded(Event):
    """The engine has new voices (published; and the ``reload_voices`` op's reply)."""

    name = "voices_reloaded"
    voices: tuple[str, ...] = ()
    default: str | None = None
    req: str | None = omit()


@dataclass(frozen=True)
class QueueListing(Event):
    """The ``queue`` op's reply: the line being spoken, then those waiting, in speaking order."""

    name = "queue"
    paused: bool = False
    current: Mapping[str, Any] | None = None
    jobs: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class HeldLines(Event):
    """The ``held`` op's reply: the lines waiting for a moderator, oldest first."""

    name = "held"
    lines: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Command(Event):
    """A chat command (``!voice``, ``!tts cancel``, a moderator's ``!skip``...): carried out or refused."""

    name = "command"
    command: str = ""
    ok: bool = False
    user: str | None = None
    channel: str | None = None
    platform: str | None = None
    msg_id: str | None = None
    arg: str | None = omit()
    reason: str | None = omit()


@dataclass(frozen=True)
class JournalDamaged(Event):
    """At ready: the journal was found damaged at start (random bytes, a cut write-ahead log),
    moved aside, every readable row salvaged and the waiting jobs replayed (docs/CHAT.md)."""

    name = "journal_damaged"
    problem: str = ""
    """What the check found."""
    moved_to: str = ""
    """Where the damaged file went (``journal.sqlite3.corrupt-<time>``)."""
    recovered_jobs: int = 0
    """Waiting (accepted or started) jobs read back."""
    recovered_rows: int = 0
    """Job rows read back in all, history included."""
    unreadable_pages: int = 0
    """Pages of the file with no readable version: the rows on them are lost."""
    replayed: int = 0
    """Recovered jobs queued again (those not past their staleness limit)."""
    pause_restored: bool = False
    """Whether the daemon was paused before and is paused again."""


@dataclass(frozen=True)
class JournalUnavailable(Event):
    """At ready: the journal could not be opened (locked); accepted lines are not crash-safe
    while it is retried, and a pause before the restart was not restored."""

    name = "journal_unavailable"
    unavailable: str = ""
    """Why (SQLite's or the file system's error)."""
    retrying: bool = True
    attempts: int = 0
    """Opens tried so far."""
    retry_in_s: float = 0.0
    """Seconds to the next try (doubling to 30)."""
    crash_safe: bool = False
    pause_restored: bool = False


@dataclass(frozen=True)
class JournalAvailable(Event):
    """The journal opened after the start: lines are crash-safe again."""

    name = "journal_available"
    replayed: int = 0
    """Jobs an earlier run left in it, now queued."""
    journaled: int = 0
    """Lines accepted while it was unavailable, now journalled."""


@dataclass(frozen=True)
class PausedAtRestart(Event):
    """Paused when the daemon stopped: still paused after the restart, with ``waiting`` lines."""

    name = "paused"
    source: str = "restart"
    waiting: int = 0


@dataclass(frozen=True)
class History(Event):
    """The ``history`` op's reply: the lines that are over, newest first."""

    name = "history"
    lines: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Status(Event):
    name = "status"
    uptime_s: float = 0.0
    paused: bool = False
    queue: Mapping[str, Any] = field(default_factory=dict)
    current: Mapping[str, Any] | None = None
    counters: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = _flat()
    """The daemon's part: engine, watchdog, telemetry, chat, ..."""


@dataclass(frozen=True)
class Pcm(Event):
    """A block of a job's audio for the requesting client (the samples follow in the next frame)."""

    name = "pcm"
    header: Mapping[str, Any] = _flat()


def event_classes() -> list[type[Event]]:
    """Every concrete event class (those with a ``name``)."""
    found: list[type[Event]] = []
    todo: list[type[Event]] = [Event]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "name" in vars(cls):
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


__all__ = [
    "CANCEL_REASONS",
    "DROP_REASONS",
    "ERROR_CODES",
    "Cancelled",
    "Command",
    "Done",
    "Dropped",
    "Error",
    "Event",
    "Filtered",
    "Held",
    "HeldLines",
    "History",
    "JobError",
    "JobEvent",
    "JournalAvailable",
    "JournalDamaged",
    "JournalUnavailable",
    "Moderation",
    "Ok",
    "Paused",
    "PausedAtRestart",
    "Pcm",
    "Pong",
    "QueueListing",
    "Queued",
    "Ready",
    "Replayed",
    "Resumed",
    "Started",
    "Status",
    "TooLarge",
    "VoiceChosen",
    "Voices",
    "VoicesReloaded",
    "event_classes",
]
