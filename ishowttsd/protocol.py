"""Wire formats of the three sockets (see docs/PROTOCOL.md).

Everything that crosses a socket is parsed here into small frozen dataclasses, and every
way a message can be wrong becomes a :class:`ProtocolError` with a stable ``code`` that the
daemon sends back as an ``error`` event. Unknown JSON keys are ignored (forward compatible).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ishowttsd.job import ChatOrigin

PRIORITIES = ("important", "message", "text")
"""Highest first, with speech-dispatcher's meanings."""

CHAT_TOPIC = b"chat"
EVENT_TOPIC = b"event"
PCM_TOPIC = b"pcm"
MODERATION_TOPICS = (b"delete", b"ban", b"timeout", b"clear", b"skip", b"pause", b"resume")

OPS = (
    "say", "cancel", "stop", "pause", "resume", "status", "voices", "ping",
    "queue", "history", "clear", "moderate", "reload_voices", "default_voice",
    "held", "approve", "reject",
)  # fmt: skip
MODERATE_ACTIONS = ("delete", "ban", "timeout")
"""``moderate`` op actions: the ingest moderation topics a control client may use without a token."""
MAX_HISTORY = 200
PCM_FORMAT = "s16le"
MAX_ID_CHARS = 128
MAX_JSON_DEPTH = 32


class ProtocolError(ValueError):
    """A message that can't be served; ``code`` is machine-readable, ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# -- JSON helpers ----------------------------------------------------------------------------


def _depth_ok(obj: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return True


def decode_json_object(frame: bytes, what: str) -> dict[str, Any]:
    """Decode one frame as a JSON object, or raise a ProtocolError naming what is wrong."""
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("bad_encoding", f"{what} is not valid UTF-8 (byte {e.start})") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError("bad_json", f"{what} is nested too deeply") from None
    except ValueError as e:
        raise ProtocolError("bad_json", f"{what} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_request", f"{what} must be a JSON object, got {type(obj).__name__}")
    if not _depth_ok(obj, MAX_JSON_DEPTH):
        raise ProtocolError("bad_json", f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text) and not _encodable(obj):
        # "\ud800" alone is valid JSON but not Unicode: it could never be spoken or sent back out.
        raise ProtocolError("bad_encoding", f"{what} contains a lone UTF-16 surrogate escape")
    return obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def encode(obj: Mapping[str, Any]) -> bytes:
    # "replace": a stray surrogate in some field must cost a '?' in one event, not the I/O loop.
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace")


def _opt_str(obj: Mapping[str, Any], key: str, limit: int = MAX_ID_CHARS) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ProtocolError("bad_request", f"field {key!r} must be a string, got {type(v).__name__}")
    s = str(v)
    if len(s) > limit:
        raise ProtocolError("bad_request", f"field {key!r} is longer than {limit} characters")
    return s


def _text(obj: Mapping[str, Any], max_chars: int) -> str:
    if "text" not in obj:
        raise ProtocolError("bad_request", "field 'text' is required")
    v = obj["text"]
    if not isinstance(v, str):
        raise ProtocolError("bad_request", f"field 'text' must be a string, got {type(v).__name__}")
    if len(v) > max_chars:
        raise ProtocolError("text_too_long", f"field 'text' has {len(v)} characters; limit {max_chars}")
    return v


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


# -- ingest: chat from bots --------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    """A chat line from a bot: frames ``[b"chat", JSON]``."""

    text: str
    user: str | None = None
    channel: str | None = None
    platform: str | None = None
    kind: str = "chat"
    """``chat`` (default), ``paid``, ``mod``, or an announcement kind (``sub``, ``raid``, ...)."""
    voice: str | None = None
    id: str | None = None
    ts: float | None = None
    """Unix time in seconds when the message was posted (for staleness)."""
    emotes: tuple[tuple[int, int], ...] = ()
    """Inclusive code-point ranges of emotes in ``text`` (Twitch style), for the emote filter."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Other fields the bot sent (e.g. ``subscriber``, ``bits``), kept for filters and events."""
    # -- role facts (docs/PROTOCOL.md): what the platform says about the sender and the line ---------
    roles: frozenset[str] = frozenset()
    """``broadcaster``, ``moderator``, ``vip``, ``subscriber``, ``founder`` (others kept, unused)."""
    months: int = 0
    """Months subscribed (0: unknown or not a subscriber)."""
    bits: int = 0
    """Bits cheered with this line."""
    first_msg: bool = False
    """The sender's first line in this channel."""
    reward_id: str | None = None
    """A channel-point redemption: the reward's id."""
    token: str | None = field(default=None, repr=False)
    """A shared secret from ``chat.moderator_tokens``: vouches for the roles (never published)."""

    @property
    def moderator(self) -> bool:
        """Broadcaster or moderator, as the bot says (see :attr:`token` for whether to believe it)."""
        return bool(self.roles & {"broadcaster", "moderator"})

    @property
    def origin(self) -> ChatOrigin:
        """Who posted it, where, which message: the record the daemon keeps with the job."""
        return ChatOrigin(self.user, self.channel, self.platform, self.kind, self.id)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], max_chars: int) -> ChatMessage:
        text = _text(obj, max_chars)
        kind = _opt_str(obj, "kind") or "chat"
        ts = obj.get("ts")
        if ts is not None:
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
                raise ProtocolError("bad_request", "field 'ts' must be a number (Unix seconds)")
            ts = float(ts)
        token = obj.get("token")
        return cls(
            roles=_roles(obj, kind),
            months=_count(obj.get("months")),
            bits=_count(obj.get("bits")),
            first_msg=obj.get("first_msg") is True,
            reward_id=_opt_str(obj, "reward_id"),
            token=token if isinstance(token, str) else None,
            text=text,
            user=_opt_str(obj, "user"),
            channel=_opt_str(obj, "channel"),
            platform=_opt_str(obj, "platform"),
            kind=kind,
            voice=_opt_str(obj, "voice"),
            id=_opt_str(obj, "id"),
            ts=ts,
            emotes=_emote_ranges(obj.get("emotes")),
            extra={
                k: v
                for k, v in obj.items()
                if k in ("subscriber", "bits", "color", "badges", "months", "viewers", "amount", "msg_type")
            },
        )


ROLE_NAMES = ("broadcaster", "moderator", "vip", "subscriber", "founder")


def _roles(obj: Mapping[str, Any], kind: str) -> frozenset[str]:
    """Roles from ``roles`` (a list), else ``badges`` (``{name: version}``), plus ``subscriber: true``.

    Role facts are forgiving: a garbled one is ignored rather than losing the whole line."""
    roles: set[str] = set()
    given = obj.get("roles")
    if isinstance(given, list):
        roles.update(r.lower() for r in given[:20] if isinstance(r, str) and len(r) <= 32)
    badges = obj.get("badges")
    if isinstance(badges, dict):
        roles.update(b for b in ROLE_NAMES if b in badges)
    if obj.get("subscriber") is True:
        roles.add("subscriber")
    if kind == "mod":
        roles.add("moderator")
    return frozenset(roles)


def _count(value: Any) -> int:
    """A non-negative whole number, else 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def _emote_ranges(value: Any) -> tuple[tuple[int, int], ...]:
    """Accept ``[[start, end], ...]`` or Twitch's ``{"emote_id": ["0-4", ...]}``; ignore garbage."""
    out: list[tuple[int, int]] = []
    items: list[Any] = []
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        for ranges in value.values():
            if isinstance(ranges, list):
                items.extend(ranges)
    for it in items[:1000]:
        try:
            if isinstance(it, str):
                a, b = it.split("-", 1)
                start, end = int(a), int(b)
            elif isinstance(it, Sequence) and len(it) == 2:
                start, end = int(it[0]), int(it[1])
            else:
                continue
        except (ValueError, TypeError):
            continue
        if 0 <= start <= end:
            out.append((start, end))
    return tuple(sorted(out))


def parse_ingest(frames: Sequence[bytes], max_chars: int) -> tuple[str, Mapping[str, Any]]:
    """Split an ingest message into its topic and JSON body; raise ProtocolError if malformed.

    The body is validated by the consumer of the topic (``ChatMessage.from_json`` for chat).
    """
    if len(frames) == 0:
        raise ProtocolError("bad_frames", "empty message")
    topic = bytes(frames[0])
    if topic not in (CHAT_TOPIC, *MODERATION_TOPICS):
        shown = topic[:32].decode("utf-8", "replace")
        raise ProtocolError("unknown_topic", f"unknown topic {shown!r}")
    if len(frames) == 1 and topic != CHAT_TOPIC:
        return topic.decode(), {}
    if len(frames) != 2:
        raise ProtocolError("bad_frames", f"expected 2 frames [topic, JSON], got {len(frames)}")
    return topic.decode(), decode_json_object(bytes(frames[1]), f"{topic.decode()} body")


# -- control: requests from clients --------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One control request (a single JSON frame)."""

    op: str
    req: str | None = None
    """Client's correlation token, echoed in every reply to this request."""
    text: str = ""
    voice: str | None = None
    priority: str = "message"
    id: str | None = None
    """``say``: the job id to use (else one is made); ``cancel``/``stop``: only this job."""
    pcm: bool = False
    """``say``: also send this job's audio to the requesting client as ``pcm`` replies."""
    play: bool = True
    """``say``: false synthesises for the requester only (not played, not published, not
    queued behind the speaker); its audio comes back as with ``pcm``."""
    args: Mapping[str, Any] = field(default_factory=dict)
    """The whole request object, for ops added later (e.g. moderation)."""


def parse_request(frame: bytes, max_chars: int) -> Request:
    obj = decode_json_object(frame, "request")
    req = _opt_str(obj, "req")
    op = obj.get("op")
    if not isinstance(op, str):
        raise ProtocolError("bad_request", "field 'op' is required and must be a string")
    if op not in OPS:
        raise ProtocolError("unknown_op", f"unknown op {op[:32]!r}; known: {', '.join(OPS)}")
    if op != "say":
        return Request(op=op, req=req, id=_opt_str(obj, "id"), args=obj)
    text = _text(obj, max_chars)
    priority = obj.get("priority", "message")
    if priority not in PRIORITIES:
        raise ProtocolError("bad_request", f"field 'priority' must be one of {', '.join(PRIORITIES)}")
    pcm = obj.get("pcm", False)
    if not isinstance(pcm, bool):
        raise ProtocolError("bad_request", "field 'pcm' must be true or false")
    play = obj.get("play", True)
    if not isinstance(play, bool):
        raise ProtocolError("bad_request", "field 'play' must be true or false")
    return Request(
        op=op,
        req=req,
        text=text,
        voice=_opt_str(obj, "voice"),
        priority=str(priority),
        id=_opt_str(obj, "id"),
        pcm=pcm,
        play=play,
        args=obj,
    )


# -- pcm: audio out ------------------------------------------------------------------------------


def pcm_topic(job: str) -> bytes:
    """``b"pcm/<job>"``: subscribe to ``b"pcm"`` for all audio or to this for one job."""
    return PCM_TOPIC + b"/" + job.encode("utf-8")


def pcm_header(job: str, seq: int, rate: int, final: bool, channels: int = 1) -> dict[str, Any]:
    return {"job": job, "seq": seq, "rate": rate, "channels": channels, "format": PCM_FORMAT, "final": final}
