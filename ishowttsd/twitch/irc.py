"""IRC lines in and out: framing, parsing (IRCv3 tags) and safe formatting.

Tokenising is done by ``irctokens`` (see docs/TWITCH.md for why that library): it unescapes
tag values exactly as the IRCv3 message-tags spec says (``\\:`` ``\\s`` ``\\\\`` ``\\r`` ``\\n``,
an unknown escape drops its backslash, a trailing lone backslash is dropped). This module adds
what a long-running bot needs around it: a bound on line length, UTF-8 decoding that cannot
fail, stricter shape checks, and one exception type (:class:`MalformedLine`) for every way a
line can be bad, so the caller logs and skips it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from irctokens.line import tokenise

MAX_LINE_BYTES = 16384
"""IRCv3 allows 8191 bytes of tags + 512 for the rest; Twitch stays well inside. Longer lines are dropped."""

_COMMAND_RE = re.compile(r"^(?:[A-Za-z]+|[0-9]{3})$")
_TAG_KEY_RE = re.compile(r"^\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9_-]+$")


class MalformedLine(ValueError):
    """A line that is not a well-formed IRC message; ``line`` is a printable excerpt for the log."""

    def __init__(self, reason: str, line: bytes | str) -> None:
        raw = line if isinstance(line, str) else line.decode("utf-8", "replace")
        self.reason = reason
        self.line = raw[:200]
        super().__init__(f"{reason}: {self.line!r}")


@dataclass(frozen=True)
class Message:
    """One parsed IRC message. ``tags`` values are already unescaped."""

    command: str
    """Upper-case command or three-digit numeric."""
    params: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None
    """``nick!user@host`` or a server name, without the leading ``:``."""

    @property
    def nick(self) -> str | None:
        if not self.source:
            return None
        return self.source.split("!", 1)[0].split("@", 1)[0] or None

    def param(self, i: int) -> str | None:
        return self.params[i] if i < len(self.params) else None


def parse_line(raw: bytes | str) -> Message:
    """Parse one line (without or with its CR LF); raise :class:`MalformedLine` if it is not IRC."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_LINE_BYTES:
            raise MalformedLine(f"longer than {MAX_LINE_BYTES} bytes", raw[:200])
        # Twitch speaks UTF-8; a broken sequence becomes U+FFFD rather than losing the line.
        text = raw.decode("utf-8", "replace")
    else:
        text = raw
        if len(text.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
            raise MalformedLine(f"longer than {MAX_LINE_BYTES} bytes", text[:200])
    text = text.rstrip("\r\n")
    if "\x00" in text or "\r" in text or "\n" in text:
        raise MalformedLine("NUL, CR or LF inside the line", text)
    if not text.strip(" "):
        raise MalformedLine("empty line", text)
    if text.startswith("@") and " " not in text:
        raise MalformedLine("tags with no command", text)
    try:
        line = tokenise(text)
    except (ValueError, IndexError) as e:
        raise MalformedLine(f"not an IRC message ({e})", text) from None
    command = line.command
    if not _COMMAND_RE.match(command):
        raise MalformedLine(f"bad command {command[:20]!r}", text)
    tags: dict[str, str] = {}
    for k, v in (line.tags or {}).items():
        if not k:
            continue  # "@;a=b": an empty tag is noise, not a reason to lose the line
        if not _TAG_KEY_RE.match(k):
            raise MalformedLine(f"bad tag key {k[:40]!r}", text)
        tags[k] = v
    source = line.source or None
    return Message(command=command, params=tuple(line.params), tags=tags, source=source)


_UNSAFE = re.compile(r"[\x00\r\n]")


def format_line(command: str, *params: str) -> bytes:
    """One outgoing line, CR LF terminated. The last parameter becomes trailing (``:``) when it must.

    Raises ValueError if a parameter would inject another line (CR, LF, NUL), or if a middle
    parameter has a space or starts with ``:`` -- outgoing lines carry our own values only, so
    this is a programming or configuration error, not something to repair.
    """
    if not _COMMAND_RE.match(command):
        raise ValueError(f"bad IRC command {command!r}")
    parts = [command.upper()]
    for i, p in enumerate(params):
        if _UNSAFE.search(p):
            raise ValueError(f"IRC parameter {i} contains CR, LF or NUL")
        last = i == len(params) - 1
        if last and (not p or " " in p or p.startswith(":")):
            parts.append(":" + p)
        elif " " in p or p.startswith(":") or not p:
            raise ValueError(
                f"IRC parameter {i} ({p!r}) must not be empty, contain a space or start with ':'"
            )
        else:
            parts.append(p)
    return (" ".join(parts) + "\r\n").encode("utf-8")


class LineBuffer:
    """Splits a byte stream into lines; a line longer than the limit is discarded up to its newline."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_bytes
        self._discarding = False
        self.overlong = 0
        """Lines dropped for exceeding the limit."""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield each complete line (without CR LF); blank lines are skipped."""
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self._max:
                    if not self._discarding:
                        self.overlong += 1
                    self._discarding = True
                    self._buf.clear()
                return
            line = bytes(self._buf[:nl]).rstrip(b"\r")
            del self._buf[: nl + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > self._max:
                self.overlong += 1
                continue
            if line:
                yield line
