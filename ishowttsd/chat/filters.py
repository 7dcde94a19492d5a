"""Content filters on one chat line: emote ranges, links, repeated tokens and characters.

Each filter is a pure function ``text -> (text, count)`` where ``count`` says how many
things it changed (for the replacement notes that become events).
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

from ishowttsd.chat.text import graphemes, is_emoji

# Common TLDs a bare domain ("clips.twitch.tv", "bit.ly") may end with; a bare "word.word" with any
# other ending counts as a link only when a path follows, so "hello.world" and "file.txt" stay text.
_TLDS = (  # noqa: SIM905 (a word list reads better as words)
    "com net org io tv gg co uk de fr es it nl be ch at se no dk fi pl ru ua cz jp cn kr in br au ca us "
    "me ly gl to app dev xyz info biz site online link live stream store shop club top fm am gd sh ai "
    "eu mx ar cl id vn tr ir th my ph sg hk tw nz za ie pt ro hu gr il sk lt lv ee bg rs hr si is "
    "рф xn--p1ai"
).split()
_LABEL = r"[\p{L}\p{N}](?:[\p{L}\p{N}\-]{0,61}[\p{L}\p{N}])?"
_URL = regex.compile(
    r"""
    (?:
        (?<![\w])[a-z][a-z0-9+.\-]{1,15}://[^\s<>"]++           # scheme://anything
      | (?<![\w.\-])www\.[^\s<>"]++                             # www.example
      | (?<![\w@.\-/])(?>(?:LABEL\.)++)(?:TLDS)(?::\d{1,5})?(?:/[^\s<>"]*+)?(?![\w\-])
      | (?<![\w@.\-/])(?>(?:LABEL\.)++)\p{L}{2,63}(?::\d{1,5})?/[^\s<>"]*+
      | (?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?:/[^\s<>"]*+)?(?![\w.])
    )
    """.replace("LABEL", _LABEL).replace("TLDS", "|".join(sorted(_TLDS, key=len, reverse=True))),
    flags=regex.IGNORECASE | regex.VERBOSE | regex.V0,
)
_TRAILING = ".,;:!?'\"»”’)]}>"


def _trim_url(url: str) -> str:
    """Sentence punctuation after a link is not part of it; a closing bracket is if it was opened."""
    while url and url[-1] in _TRAILING:
        if url[-1] == ")" and url.count("(") >= url.count(")"):
            break
        url = url[:-1]
    return url


def find_urls(text: str) -> list[tuple[int, int]]:
    """Code-point spans of the links in ``text``."""
    spans = []
    for m in _URL.finditer(text):
        url = _trim_url(m.group())
        if url:
            spans.append((m.start(), m.start() + len(url)))
    return spans


def replace_urls(text: str, replacement: str) -> tuple[str, int]:
    """Replace every link by ``replacement`` ("" removes them)."""
    spans = find_urls(text)
    if not spans:
        return text, 0
    out: list[str] = []
    last = 0
    for a, b in spans:
        out.append(text[last:a])
        out.append(replacement)
        last = b
    out.append(text[last:])
    return "".join(out), len(spans)


def _at_token_edge(text: str, i: int) -> bool:
    return i <= 0 or i >= len(text) or text[i - 1].isspace() or text[i].isspace()


def strip_emote_ranges(text: str, ranges: Sequence[tuple[int, int]]) -> tuple[str, int]:
    """Remove Twitch-style emote ranges: inclusive code-point offsets ``(start, end)``.

    An emote is always a whole space-separated token, so a range that does not start and end
    at token edges (a bot counting UTF-16 units or bytes, or a stale tag) is ignored instead of
    cutting a word or a character in half.
    """
    keep = [True] * len(text)
    n = 0
    for start, end in ranges:
        if start < 0 or end >= len(text) or start > end:
            continue
        if not (_at_token_edge(text, start) and _at_token_edge(text, end + 1)):
            continue
        if not all(keep[start : end + 1]):
            continue  # overlapping ranges: count each emote once
        for i in range(start, end + 1):
            keep[i] = False
        n += 1
    if n == 0:
        return text, 0
    return "".join(c for c, k in zip(text, keep, strict=True) if k), n


def strip_emoji(text: str) -> tuple[str, int]:
    """Remove emoji (whole ZWJ sequences, skin tones and flags with them)."""
    kept: list[str] = []
    n = 0
    for g in graphemes(text):
        if is_emoji(g):
            n += 1
        else:
            kept.append(g)
    return ("".join(kept), n) if n else (text, 0)


_SPLIT_WS = regex.compile(r"(\s+)")


def collapse_tokens(text: str, max_repeat: int) -> tuple[str, int]:
    """Cut a run of the same word (case-folded), e.g. an emote wall, to ``max_repeat`` words."""
    if max_repeat <= 0:
        return text, 0
    parts = _SPLIT_WS.split(text)
    out: list[str] = []
    prev: str | None = None
    run = 0
    removed = 0
    # parts alternate: token, separator, token, ... (tokens may be "" at the ends)
    for i in range(0, len(parts), 2):
        tok = parts[i]
        sep = parts[i + 1] if i + 1 < len(parts) else ""
        key = tok.casefold()
        if tok and key == prev:
            run += 1
        else:
            prev, run = (key if tok else None), 1
        if tok and run > max_repeat:
            removed += 1
            continue
        out.append(tok)
        out.append(sep)
    if not removed:
        return text, 0
    return "".join(out).strip(), removed


def collapse_chars(text: str, max_repeat: int) -> tuple[str, int]:
    """Cut a run of the same grapheme ("loooool", "!!!!!!", "😂😂😂😂") to ``max_repeat``.

    Digits are left alone: "1000000" is a number, not a stretched word.
    """
    if max_repeat <= 0 or len(text) <= max_repeat:
        return text, 0
    out: list[str] = []
    prev = ""
    run = 0
    removed = 0
    for g in graphemes(text):
        if g == prev:
            run += 1
        else:
            prev, run = g, 1
        if run > max_repeat and not g[0].isdigit() and not g.isspace():
            removed += 1
            continue
        out.append(g)
    if not removed:
        return text, 0
    return "".join(out), removed
