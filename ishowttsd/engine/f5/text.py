"""Text preparation for F5 (torch-free): normalisation and chunking.

F5 generates a whole chunk at once, so the first audio of a line is out only after its first
chunk is sampled and vocoded. A line longer than ``first_chunk_chars`` therefore speaks a short
first chunk (ending at a clause or word boundary); the rest is packed into sentence-aligned chunks
no longer than what the voice says within F5's context budget (``max_chars``, from its speech rate).
"""

from __future__ import annotations

import re
import unicodedata

_SENTENCE_END = ".!?…。！？"
_CLAUSE_END = ",;:，；：、"
# Split after sentence punctuation followed by space, or after CJK sentence punctuation.
_SENTENCES = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")
_CLAUSES = re.compile(r"(?<=[,;:])\s+|(?<=[，；：、])")
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "´": "'", "`": "'", "«": '"', "»": '"'})
_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, typographic quotes to ASCII, control characters dropped, whitespace collapsed.

    F5's vocabulary has no control characters or fancy quotes: unknown characters map to token 0
    (space), which makes the model pause in odd places.
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in text)
    return _WS.sub(" ", text).strip()


def _is_cjk(c: str) -> bool:
    return "\u3000" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" or "\uff00" <= c <= "\uffef"


def _cut(text: str, limit: int, hard: bool = True) -> tuple[str, str]:
    """Split ``text`` into a head of at most ``limit`` characters and the rest, at the last
    sentence or clause boundary, else the last space, else between CJK characters; failing all
    that, exactly at ``limit`` if ``hard`` (one over-long word), else not at all (head empty)."""
    if len(text) <= limit:
        return text, ""
    window = text[: limit + 1]
    for punct in (_SENTENCE_END, _CLAUSE_END):
        best = max((i for i, c in enumerate(window[:limit]) if c in punct), default=-1)
        if best >= limit // 4:
            return text[: best + 1].strip(), text[best + 1 :].strip()
    sp = window.rfind(" ")
    if sp > 0:
        return text[:sp].strip(), text[sp + 1 :].strip()
    if hard or _is_cjk(text[limit - 1]) or _is_cjk(text[limit]):
        return text[:limit], text[limit:].strip()
    return "", text


def _pieces(text: str, max_chars: int) -> list[str]:
    """Sentences, with any sentence longer than ``max_chars`` split at clauses, then words."""
    out: list[str] = []
    for sent in _SENTENCES.split(text):
        sent = sent.strip()
        if not sent:
            continue
        while len(sent) > max_chars:
            head, sent = _cut(sent, max_chars)
            out.append(head)
        if sent:
            out.append(sent)
    return out


def _join(a: str, b: str) -> str:
    if not a:
        return b
    if _is_cjk(a[-1]) or _is_cjk(b[0]):
        return a + b
    return a + " " + b


def chunk(text: str, max_chars: int, first_chunk_chars: int = 0) -> list[str]:
    """Split normalised ``text`` into chunks of at most ``max_chars`` characters, in order.

    With ``first_chunk_chars`` > 0 and a longer text, the first chunk is at most that long.
    Chunks never end mid-word unless a single word (or unspaced CJK run) exceeds the limit.
    Joining the chunks with spaces gives back the text (modulo whitespace).
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    text = text.strip()
    if not text:
        return []
    chunks: list[str] = []
    if 0 < first_chunk_chars < len(text):
        head, text = _cut(text, min(first_chunk_chars, max_chars), hard=False)
        chunks.append(head)
    current = ""
    for piece in _pieces(text, max_chars):
        joined = _join(current, piece)
        if len(joined) <= max_chars:
            current = joined
        else:
            chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return [c for c in chunks if c]


def reference_text(ref_text: str) -> str:
    """The reference transcript exactly as f5-tts's own inference path prepares it: ending in
    ``. `` (or ``。``) so the generated text starts a new sentence, plus the one extra space that
    ``infer_batch_process`` appends after a single-byte character (the model was tuned that way)."""
    t = normalise(ref_text)
    if not t.endswith(". ") and not t.endswith("。"):
        t = t + " " if t.endswith(".") else t + ". "
    if len(t[-1].encode("utf-8")) == 1:
        t += " "
    return t
