"""What of a chat line reaches the voice and the overlays: markup and terminal junk taken out.

Chat carries text never meant to be read aloud, and the engine reads it literally. Measured with
the embedded Piper voice (espeak-ng's English phonemiser):

- "zalgo", letters under stacks of combining marks ("z̸̢̛a̵͓͝l̶̰̈́g̷͚̎ọ̷̈́ test"): every mark spelt out
  ("symbol three three eight ..."), 19.1 s for a line that reads in 1.0 s without them;
- HTML entities from web relays and bots (``&amp;``, ``&#x27;``): "and amp semicolon ...";
- ANSI colour escapes (``ESC[31m``): "thirty one m";
- SSML-looking tags a viewer hopes the engine obeys (``<break time="10s"/>``): read as words;
- bidi controls (U+202E ...): silent, but they reorder the text an overlay shows.

:func:`speakable` undoes or removes all of these, before the blocklist and the limits (which then
measure what is spoken) and before the text becomes the ``started`` event's ``text`` that overlays
show. A single combining mark on a letter is kept (an accent with no precomposed form, a
strike-through: Piper reads those silently); only *stacks* are taken off.
"""

from __future__ import annotations

import html.entities
import unicodedata

import regex

_ENTITY = regex.compile(r"&(?:#([0-9]{1,7})|#[xX]([0-9A-Fa-f]{1,6})|([A-Za-z][A-Za-z0-9]{1,31}));")
_ANSI = regex.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|\x9b[0-?]*[ -/]*[@-~]"  # the same with the 8-bit CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[@-Z\\-_]"  # other two-character escapes
)
_TAG = regex.compile(
    r"<!--.*?-->"
    r"""|</?[A-Za-z][\w:.-]*(?:\s+[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*'|[^\s<>"']+))*\s*/?>""",
    regex.DOTALL,
)
"""An XML/HTML/SSML-looking tag (attributes with values only) or comment: ``<speak>``,
``<break time="10s"/>``, ``</prosody>``. ``<3``, ``a < b`` and ``x<y and z>w`` are not tags."""
_BIDI = regex.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Bidi embedding, override and isolate controls, and the directional marks."""
_GENERIC_MARK = regex.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
"""The script-neutral combining-mark blocks zalgo is built from (not Devanagari, Thai, Hebrew... marks)."""
_GRAPHEME = regex.compile(r"\X")

MAX_UNESCAPE_PASSES = 3
"""``&amp;lt;`` (escaped twice by two relays) is still a ``<``; deeper nesting is left alone."""


def _entity(m: regex.Match[str]) -> str:
    dec, hexa, name = m.group(1), m.group(2), m.group(3)
    if name is not None:
        return html.entities.html5.get(name + ";", m.group(0))
    cp = int(dec) if dec is not None else int(hexa, 16)
    if cp == 0 or cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        return m.group(0)
    return chr(cp)


def unescape_entities(text: str) -> tuple[str, int]:
    """HTML character references (``&amp;`` ``&#39;`` ``&#x27;`` ``&eacute;``) as the characters they
    stand for. Only complete references with a ``;`` (``AT&T``, ``&notit`` stay as they are)."""
    total = 0
    for _ in range(MAX_UNESCAPE_PASSES):
        text, n = _ENTITY.subn(_entity, text)
        total += n
        if not n or "&" not in text:
            break
    return text, total


def strip_stacked_marks(text: str) -> tuple[str, int]:
    """Take the generic combining marks off every grapheme that still carries more than one of them
    once composed (NFC): zalgo goes, "café" and "Việt" (composed or not) stay. Returns the text and how
    many graphemes lost their marks."""
    if not _GENERIC_MARK.search(text):
        return text, 0
    out: list[str] = []
    n = 0
    for g in _GRAPHEME.findall(text):
        if _GENERIC_MARK.search(g):
            g = unicodedata.normalize("NFC", g)
            if len(_GENERIC_MARK.findall(g)) > 1:
                # A stack: every generic mark goes, the composed ones too ("ọ̷̈́" -> "o").
                g = unicodedata.normalize("NFC", _GENERIC_MARK.sub("", unicodedata.normalize("NFD", g)))
                n += 1
        out.append(g)
    return "".join(out), n


def speakable(text: str) -> tuple[str, dict[str, int]]:
    """``text`` with entities unescaped, then ANSI escapes, tags and bidi controls removed, then
    combining-mark stacks taken off; and per kind, how many were changed (for ``filtered`` notes)."""
    counts: dict[str, int] = {}
    text, n = unescape_entities(text)
    counts["entities"] = n
    text, n = _ANSI.subn("", text)
    counts["ansi"] = n
    text, n = _TAG.subn(" ", text)
    counts["tags"] = n
    text, n = _BIDI.subn("", text)
    counts["bidi"] = n
    text, n = strip_stacked_marks(text)
    counts["zalgo"] = n
    return text, {k: v for k, v in counts.items() if v}
