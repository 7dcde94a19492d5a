"""Unicode text helpers for the chat filters: graphemes, match skeletons, speech estimates, truncation.

Chat is hostile Unicode: combining-mark "zalgo", emoji ZWJ sequences, RTL text, CJK without
spaces. Everything here works on extended grapheme clusters (the ``regex`` package's ``\\X``)
so a cut or a mask never leaves half a character behind.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence

import regex

_GRAPHEME = regex.compile(r"\X")
_WORD_BOUNDARY = regex.compile(r"\b", flags=regex.WORD | regex.V1)
"""Unicode (UAX #29) word boundaries: between words, and between CJK ideographs."""
_SYLLABIC = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]")
"""Scripts written without spaces, where one character is about one syllable of speech."""
_EMOJI = regex.compile(r"[\p{Extended_Pictographic}\p{Regional_Indicator}]")
_SILENT = regex.compile(r"[\p{Mark}\p{Cf}\p{Cc}]")
"""Graphemes an engine does not pronounce (stray marks, format and control characters)."""
_MARKS = frozenset(("Mn", "Me", "Cf"))
_SYMBOLS = frozenset(("So", "Sm", "Sc", "Sk"))

SYLLABIC_WEIGHT = 3.0
"""One CJK/Thai character costs this many alphabetic characters of speaking time (~4.7/s at 14)."""
DIGIT_WEIGHT = 2.0
"""Digits are read as number words, longer than their glyphs."""
SYMBOL_WEIGHT = 20.0
"""A non-ASCII symbol that is no emoji (★ ™ → ⠿ °): Piper's espeak reads its Unicode name, measured
0.4-1.9 s each (up to 27 characters of speech); the estimate takes the long side."""
EMOJI_WEIGHT = 10.0
"""Piper's espeak reads an emoji's name ("😂": "face with tears of joy"); F5-TTS is silent on them.
The estimate takes the longer, so limits and queue bounds err on the short side."""


def graphemes(text: str) -> list[str]:
    """The extended grapheme clusters of ``text``, in order (they concatenate back to ``text``)."""
    return _GRAPHEME.findall(text)


def grapheme_ends(text: str) -> set[int]:
    """Code-point offsets at which a grapheme cluster ends (0 included): the safe places to cut."""
    ends = {0}
    ends.update(m.end() for m in _GRAPHEME.finditer(text))
    return ends


def is_syllabic(ch: str) -> bool:
    return _SYLLABIC.match(ch) is not None


@functools.lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    if c.isascii():
        return c.lower()
    decomposed = unicodedata.normalize("NFKD", c)
    return "".join(x for x in decomposed if unicodedata.category(x) not in _MARKS).casefold()


def skeleton(text: str) -> tuple[str, list[int]]:
    """A match form of ``text`` and, per skeleton character, its offset in ``text``.

    Compatibility-decomposed, case-folded, with combining marks and format characters (ZWJ,
    zero-width space, bidi controls) removed: ``"F̸ᵁ\u200bck"`` and ``"fuck"`` look alike to it.
    """
    out: list[str] = []
    index: list[int] = []
    for i, c in enumerate(text):
        s = _fold_char(c)
        if s:
            out.append(s)
            index.extend([i] * len(s))
    return "".join(out), index


def _cost(g: str) -> float:
    c = g[0]
    if c.isdigit():
        return DIGIT_WEIGHT
    if _SYLLABIC.match(c):
        return SYLLABIC_WEIGHT
    if _EMOJI.match(c):
        return EMOJI_WEIGHT
    if _SILENT.match(c):
        return 0.0
    if not c.isascii() and unicodedata.category(c) in _SYMBOLS:
        return SYMBOL_WEIGHT
    return 1.0


def is_emoji(g: str) -> bool:
    """Whether grapheme ``g`` is an emoji (pictograph, ZWJ sequence, or flag)."""
    return _EMOJI.match(g) is not None


CHARS_PER_SECOND = 14.0
"""Default speech rate of the one estimate of a text's spoken length (``[chat] chars_per_second``)."""


def estimate_seconds(text: str, chars_per_second: float = CHARS_PER_SECOND) -> float:
    """A rough duration of ``text`` spoken aloud, for limits and queue bounds (not for timing):
    the one estimator, script-aware (CJK, digits, emoji, silent marks)."""
    return sum(_cost(g) for g in _GRAPHEME.findall(text)) / chars_per_second


def _strip_trailing_space(gs: Sequence[str]) -> int:
    n = len(gs)
    while n and gs[n - 1].isspace():
        n -= 1
    return n


def truncate(
    text: str, max_chars: int = 0, max_seconds: float = 0.0, chars_per_second: float = CHARS_PER_SECOND
) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_chars`` code points and ``max_seconds`` of estimated speech.

    The cut falls on a Unicode word boundary when there is one (for CJK, between characters),
    else on a grapheme boundary; never inside a character or a grapheme cluster. Zero means
    no limit. Returns the text and whether it was cut.
    """
    over_chars = max_chars > 0 and len(text) > max_chars
    over_secs = max_seconds > 0 and estimate_seconds(text, chars_per_second) > max_seconds
    if not (over_chars or over_secs):
        return text, False
    gs = graphemes(text)
    budget = max_seconds * chars_per_second if max_seconds > 0 else float("inf")
    char_limit = max_chars if max_chars > 0 else len(text)
    pos = 0
    cost = 0.0
    ends = {0}
    for g in gs:
        npos, ncost = pos + len(g), cost + _cost(g)
        if npos > char_limit or ncost > budget + 1e-9:
            break
        pos, cost = npos, ncost
        ends.add(pos)
    cut = pos
    best = 0
    for m in _WORD_BOUNDARY.finditer(text):
        b = m.start()
        if b > cut:
            break
        if b in ends:
            best = b
    if best > 0 and text[:best].strip():
        cut = best
    kept = graphemes(text[:cut])
    return "".join(kept[: _strip_trailing_space(kept)]), True
