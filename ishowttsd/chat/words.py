"""Whole-word matching on a case-folded, mark-free skeleton (blocklist and lexicon).

A word is matched in the skeleton of the text (see :func:`ishowttsd.chat.text.skeleton`), so
case, accents, zalgo marks, fullwidth forms and zero-width characters do not hide it; the match
is then mapped back to whole grapheme clusters of the original text. Words in scripts written
without spaces (CJK, Thai, ...) match anywhere, since they have no word edges to look for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import regex

from ishowttsd.chat.text import grapheme_ends, graphemes, is_syllabic, skeleton

P = TypeVar("P")


@dataclass(frozen=True)
class Match(Generic[P]):
    start: int
    """Code-point offset in the original text (a grapheme boundary)."""
    end: int
    payload: P


class WordMatcher(Generic[P]):
    """Finds any of a set of words; each word carries a payload (an action, a pronunciation)."""

    def __init__(self, entries: Sequence[tuple[str, P]]) -> None:
        self._payload: dict[str, P] = {}
        spaced: list[str] = []
        unspaced: list[str] = []
        for word, payload in entries:
            key = skeleton(word.strip())[0]
            if not key or key in self._payload:
                continue  # first entry wins, as in the order the streamer wrote them
            self._payload[key] = payload
            (unspaced if any(is_syllabic(c) for c in key) else spaced).append(key)
        alts = []
        if spaced:
            body = "|".join(regex.escape(w) for w in sorted(spaced, key=len, reverse=True))
            alts.append(rf"(?<!\w)(?:{body})(?!\w)")
        if unspaced:
            alts.append("|".join(regex.escape(w) for w in sorted(unspaced, key=len, reverse=True)))
        self._re = regex.compile("|".join(alts)) if alts else None

    def __bool__(self) -> bool:
        return self._re is not None

    def find(self, text: str) -> list[Match[P]]:
        """Non-overlapping matches, left to right, as spans of whole graphemes of ``text``."""
        if self._re is None:
            return []
        skel, index = skeleton(text)
        found = list(self._re.finditer(skel))
        if not found:
            return []
        ends = grapheme_ends(text)
        out: list[Match[P]] = []
        last = 0
        for m in found:
            start = index[m.start()]
            while start not in ends and start > last:
                start -= 1  # a match starting inside a cluster (after a prepended mark) takes it whole
            end = index[m.end() - 1] + 1
            while end not in ends:
                end += 1  # take the word's trailing combining marks / ZWJ tails with it
            start = max(start, last)
            if end <= start:
                continue
            out.append(Match(start, end, self._payload[m.group()]))
            last = end
        return out

    def sub(self, text: str, repl: Callable[[str, P], str]) -> tuple[str, int]:
        """Replace each match by ``repl(original_span, payload)``; returns the text and the count."""
        matches = self.find(text)
        if not matches:
            return text, 0
        out: list[str] = []
        last = 0
        for m in matches:
            out.append(text[last : m.start])
            out.append(repl(text[m.start : m.end], m.payload))
            last = m.end
        out.append(text[last:])
        return "".join(out), len(matches)


def mask(span: str, char: str) -> str:
    """One mask character per grapheme: "f̸u̸c̸k̸" becomes "****", never half a character."""
    return char * len(graphemes(span))
