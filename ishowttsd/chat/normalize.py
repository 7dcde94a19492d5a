"""Spam that dodges the duplicate check: one key for "LOL", "l o l", "l.o.l", "LOOOOL" and "ⅼοⅼ".

A raid pastes one phrase hundreds of times with small changes that keep it readable for people
and make it a "new" line for a naive comparison: letters spaced out or separated by punctuation,
letters stretched, case changed, zero-width characters inserted, letters swapped for look-alikes
from other scripts (Cyrillic ``о``, Greek ``ο``, fullwidth ``ｏ``, mathematical ``𝐨``).
:func:`spam_key` maps all of those to one key, for the duplicate window and the cooldown:

1. per character: compatibility decomposition (NFKD: fullwidth and mathematical letters become
   plain ones), combining marks and format characters (ZWJ, zero-width space, bidi controls)
   removed, case-folded, then a look-alike from another script replaced by the ASCII letter it
   imitates (Unicode's confusables data, from the ``confusable_homoglyphs`` package);
2. everything but letters and digits removed (spacing and punctuation between letters);
3. ``l`` read as ``i``: capital ``I`` and small ``l`` are one glyph in many fonts, and Unicode's data
   maps their look-alikes to either (Cyrillic ``ӏ`` to ``i``, Greek ``Ι`` to ``l``);
4. runs of one letter collapsed to one ("looool" and "lol" are one line; digits are kept: "100" is
   not a stretched "10").

The key is only ever compared, never spoken. Its false-positive side was measured on 1,000
ordinary chat lines (``tests/data/chat_ordinary.txt``, ``tests/test_chat_spam.py``): see
docs/CHAT.md for the figures.

:func:`collapse_stretched` is the speaking side: "LOOOOOOL" is read "lool", not spelled out.
"""

from __future__ import annotations

import functools
import unicodedata

import regex

_MARKS = frozenset(("Mn", "Me", "Cf"))
_MAX_HOPS = 4
"""Confusables chains (Cyrillic ``т`` -> small capital ``ᴛ`` -> ``T``) are followed this far."""


@functools.lru_cache(maxsize=1)
def _lookalikes() -> dict[str, str]:
    """Non-ASCII character -> the ASCII letter or digit it imitates (lower case).

    Built once, on first use, from Unicode's confusables.txt as ``confusable_homoglyphs`` ships it
    (a JSON map: character -> the characters it can be confused with, prototype first).
    """
    from confusable_homoglyphs import confusables

    data: dict[str, list[dict[str, str]]] = confusables.confusables_data
    out: dict[str, str] = {}
    for ch in data:
        if len(ch) != 1 or ch.isascii():
            continue
        cur, hops = ch, 0
        while not cur.isascii() and hops < _MAX_HOPS:
            nxt = [a["c"] for a in data.get(cur, ()) if len(a["c"]) == 1]
            if not nxt:
                break
            ascii_alnum = [c for c in nxt if c.isascii() and c.isalnum()]
            cur = ascii_alnum[0] if ascii_alnum else nxt[0]
            hops += 1
        if cur.isascii() and cur.isalnum():
            out[ch] = cur.lower()
    return out


def warm() -> None:
    """Load the look-alike table now (~0.1-0.5 s, once per process): call before serving, so the
    first non-ASCII chat line does not stall the socket loop while it loads."""
    _lookalikes()


@functools.lru_cache(maxsize=8192)
def _fold(c: str) -> str:
    if c.isascii():
        return c.lower() if c.isalnum() else ""
    return "".join(x for x in _unlook(c) if x.isalnum())


def _unlook(c: str) -> str:
    """NFKD without marks, each character replaced by the ASCII letter it imitates (looked up
    before case-folding too: Cyrillic ``Т`` imitates ``T``, while its small ``т`` imitates ``ᴛ``)."""
    table = _lookalikes()
    if c in table:
        return table[c]  # before NFKD, which turns Greek lunate sigma "ϲ" (a "c") into "ς"
    out: list[str] = []
    for x in unicodedata.normalize("NFKD", c):
        if unicodedata.category(x) in _MARKS:
            continue
        if x in table:
            out.append(table[x])
            continue
        out.extend(table.get(y, y) for y in x.casefold())
    return "".join(out)


_NON_SPACE = regex.compile(r"\S")


def spam_key(text: str) -> str:
    """The key under which copies of a line are recognised (see the module docstring).

    A line with no letters or digits at all (an emoji wall) keys on its non-space characters with
    runs collapsed, so "😂😂😂" and "😂" are copies but "😂" and "🔥" are not.
    """
    folded = "".join(_fold(c) for c in text)
    if not folded:
        folded = "".join(_NON_SPACE.findall(text))
    out: list[str] = []
    for c in folded.replace("l", "i"):
        if not out or out[-1] != c or c.isdigit():  # "100" is not a stretched "10"
            out.append(c)
    return "".join(out)


def user_key(user: str) -> str:
    """A user name for the cooldown: case, width, marks, zero-width and look-alike letters folded
    ("Ｓｐａｍｍｅｒ", "spаmmer" with a Cyrillic ``а``, and "SPAMMER" are one user); other
    characters are kept (``_`` and digits distinguish real accounts)."""
    out: list[str] = []
    for c in user:
        if c.isascii():
            out.append(c.lower())
            continue
        out.append(_unlook(c))
    return "".join(out) or user


_STRETCH = regex.compile(r"(\p{L})\1{2,}")
_WORD = regex.compile(r"[\p{L}\p{M}]+")


def collapse_stretched(text: str) -> tuple[str, int]:
    """Read stretched words as words: a letter repeated three or more times is cut to two, and a
    stretched word in capitals is lower-cased ("LOOOOOOL" -> "lool", "nooooo" -> "noo").

    Capitals matter for speech: an engine spells out a short all-capital word ("L-O-O-L"). Words
    that are not stretched ("LOL", "NASA", "good") are left as they are. Returns the text and how
    many words changed.
    """
    n = 0

    def fix(m: regex.Match[str]) -> str:
        nonlocal n
        word = m.group()
        if not _STRETCH.search(word):
            return word
        n += 1
        short = _STRETCH.sub(r"\1\1", word)
        return short.lower() if short.isupper() else short

    out = _WORD.sub(fix, text)
    return (out, n) if n else (text, 0)
