"""A job: one piece of text to speak, where it came from, and who to tell about it.

:class:`ChatOrigin` is the chat line's identity (who said it, where, which message): the same
record travels from the ingest message through the moderation decision, the job, the journal
entry and back out of a replay, instead of its fields being copied one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ishowttsd.chat.text import estimate_seconds
from ishowttsd.engine.base import CancelToken


@dataclass(frozen=True)
class ChatOrigin:
    """Who posted a chat line, where, and which message it was."""

    user: str | None = None
    channel: str | None = None
    platform: str | None = None
    kind: str | None = None
    """``chat``, ``paid``, ``mod``, or an announcement kind (``sub``, ``raid``, ...)."""
    msg_id: str | None = None
    """The platform's message id (for ``delete``)."""

    def to_json(self) -> dict[str, Any]:
        """The fields every event about a chat job carries (those that are set)."""
        out: dict[str, Any] = {}
        for k in ("user", "channel", "platform", "kind"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out


@dataclass(frozen=True)
class Announce:
    """How a chat line is introduced when it is spoken (``[chat] announce``), worked out when the
    line is accepted; its turn (:mod:`ishowttsd.daemon.turn`) adds it or, when the same user spoke
    last and :attr:`skip_same_user`, leaves it out."""

    template: str
    """``[chat] announce``: ``{user}``, ``{text}``, ``{channel}``, ``{platform}``."""
    user: str
    """The user's name as it is spoken (underscores as spaces, blocked words masked, lexicon)."""
    channel: str = ""
    platform: str = ""
    skip_same_user: bool = True

    def format(self, text: str) -> str:
        return self.template.format(user=self.user, text=text, channel=self.channel, platform=self.platform)


@dataclass(eq=False)
class Job:
    """One piece of text to speak, with where it came from and who to tell about it."""

    id: str
    text: str
    priority: str = "message"
    voice: str | None = None
    source: str = "control"
    """``control`` (a client), ``chat`` (a bot), ``replay`` (journal after restart)."""
    origin: ChatOrigin | None = None
    """The chat line's identity (chat jobs, and replayed ones that were chat)."""
    first_source: str | None = None
    """A replayed job's original source (``chat`` or ``control``)."""
    peer: bytes | None = None
    """ROUTER identity of the requesting client, if any."""
    single_reply: bool = False
    """REQ-style peer: exactly one reply (the acknowledgement, or the outcome with ``wait``)."""
    wait: bool = False
    req: str | None = None
    want_pcm: bool = False
    play: bool = True
    """False: a private job, synthesised for its requester only (never played, published or
    journalled; see :mod:`ishowttsd.daemon.scheduler`)."""
    estimate_s: float | None = None
    """Estimated seconds of speech at the configured rate (``[chat] chars_per_second``), set by the
    admission; None: the same estimate at the default rate."""
    journaled: bool = False
    """Whether the journal holds this job (so its outcome is recorded there)."""
    crash_safe: bool = True
    """False: accepted while the journal could not be written (said in its ``queued`` event)."""
    segments: tuple[tuple[str | None, str], ...] | None = None
    """Voice tags: (voice, text) spoken back to back in one job (``text`` is their join)."""
    announce: Announce | None = None
    """A chat line's announce, added at its turn (None: not announced)."""
    expires_wall: float | None = None
    """Unix seconds after which the job is stale (kept in the journal across restarts)."""
    accepted_at: float = 0.0
    """Monotonic seconds when the daemon accepted it."""
    expires_at: float | None = None
    """Monotonic deadline after which the job is stale and is dropped instead of spoken."""
    seq: int = 0
    cancel: CancelToken = field(default_factory=CancelToken)

    @property
    def est_seconds(self) -> float:
        return self.estimate_s if self.estimate_s is not None else estimate_seconds(self.text)

    @property
    def user(self) -> str | None:
        return self.origin.user if self.origin is not None else None

    @property
    def msg_id(self) -> str | None:
        return self.origin.msg_id if self.origin is not None else None

    @property
    def from_chat(self) -> bool:
        """A chat line, also after it was replayed."""
        return (self.first_source or self.source) == "chat"

    def describe(self) -> dict[str, Any]:
        """Fields every event about this job carries."""
        d: dict[str, Any] = {"job": self.id, "priority": self.priority, "source": self.source}
        if self.origin is not None:
            d.update(self.origin.to_json())
        if self.voice is not None:
            d["voice"] = self.voice
        if self.msg_id is not None:
            d["msg_id"] = self.msg_id
        return d
