"""Cut long text into parts under the daemon's per-job limit, at the most natural boundary.

A file piped into ``ishowtts-say`` can be far longer than one job may be (``[queue]
max_text_chars``, 2000 by default). It is cut into parts that are spoken one after another:
at a paragraph break where one falls in the second half of a part, else at the last sentence
end, else at a clause mark (``,;:—``), else between words, and only as a last resort inside a
word. Parts are slices of the original text, stripped, so nothing is reworded or lost.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

DEFAULT_PART_CHARS = 2000
"""The daemon's default ``[queue] max_text_chars``; a daemon configured lower says so in its
``text_too_long`` answer, and the client cuts again at that limit."""

_CLOSERS = "\"'”’»)\\]」』）"
# Ranked boundaries: (regex, group whose span is the whitespace between two parts, or 0 for none).
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE = re.compile(rf"[.!?…]+[{_CLOSERS}]*(\s+)|[。！？]+[{_CLOSERS}]*(\s*)")
_CLAUSE = re.compile(rf"[,;:—–][{_CLOSERS}]*(\s+)|[，、；：]+(\s*)")
_WORD = re.compile(r"\s+")

_LIMIT_IN_REASON = re.compile(r"limit (\d+)")


@dataclass(frozen=True)
class _Cuts:
    """Where parts may end (``ends``) and where the next one then starts (``starts``)."""

    ends: list[int]
    starts: list[int]

    @classmethod
    def find(cls, text: str, pattern: re.Pattern[str]) -> _Cuts:
        ends: list[int] = []
        starts: list[int] = []
        for m in pattern.finditer(text):
            groups = [g for g in range(1, (pattern.groups or 0) + 1) if m.group(g) is not None]
            gap = groups[0] if groups else 0
            ends.append(m.start(gap) if gap else m.start())
            starts.append(m.end(gap) if gap else m.end())
        return cls(ends, starts)

    def last_before(self, lo: int, hi: int) -> tuple[int, int] | None:
        """The last cut whose part end lies in (lo, hi]."""
        i = bisect.bisect_right(self.ends, hi) - 1
        if i < 0 or self.ends[i] <= lo:
            return None
        return self.ends[i], self.starts[i]


def split_text(text: str, limit: int = DEFAULT_PART_CHARS) -> list[str]:
    """``text`` as parts of at most ``limit`` characters each, in order; blank parts are left out."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    ranked = [_Cuts.find(text, p) for p in (_PARAGRAPH, _SENTENCE, _CLAUSE, _WORD)]
    parts: list[str] = []
    pos = len(text) - len(text.lstrip())
    n = len(text.rstrip())
    while pos < n:
        if n - pos <= limit:
            parts.append(text[pos:n])
            break
        end, start = _cut(ranked, pos, limit)
        part = text[pos:end].strip()
        if part:
            parts.append(part)
        pos = start
        while pos < n and text[pos].isspace():
            pos += 1
    return parts


def _cut(ranked: list[_Cuts], pos: int, limit: int) -> tuple[int, int]:
    """Where the part starting at ``pos`` ends: the best-ranked boundary that leaves a part of
    a reasonable size (at least half, then an eighth of ``limit``), else any boundary, else ``limit``."""
    hi = pos + limit
    for floor in (limit // 2, limit // 8, 0):
        for cuts in ranked:
            found = cuts.last_before(pos, hi)
            if found is not None and found[0] - pos >= floor:
                return found
    return hi, hi


def limit_from_reason(reason: str, current: int) -> int:
    """The limit a ``text_too_long`` answer names ("…; limit 500"), else half the current one."""
    m = _LIMIT_IN_REASON.search(reason)
    if m is not None and 0 < int(m.group(1)) < current:
        return int(m.group(1))
    return max(1, current // 2)
