"""F5 text preparation: normalisation, chunking, the reference transcript (torch-free)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ishowttsd.engine.f5.text import chunk, normalise, reference_text


def _words(s: str) -> list[str]:
    return s.split()


def test_normalise_quotes_controls_whitespace() -> None:
    assert normalise("  “Hi”\tthere\x00 it’s\n\nme  ") == '"Hi" there it\'s me'
    assert normalise("ｆｕｌｌｗｉｄｔｈ") == "fullwidth"  # NFKC


def test_short_line_is_one_chunk() -> None:
    assert chunk("Hello chat!", max_chars=200, first_chunk_chars=40) == ["Hello chat!"]


def test_first_chunk_is_short_and_ends_at_a_sentence_or_clause() -> None:
    line = "Hey everyone, thanks for coming. Today we are going to play something new and exciting."
    out = chunk(line, max_chars=200, first_chunk_chars=40)
    assert out == ["Hey everyone, thanks for coming.", line[33:]]
    line = "Hey everyone, thanks so much for coming to the stream today, we are going to play."
    out = chunk(line, max_chars=200, first_chunk_chars=40)
    assert out[0] == "Hey everyone,"
    assert _words(" ".join(out)) == _words(line)


def test_first_chunk_never_splits_a_word() -> None:
    assert chunk("Supercalifragilistic!", max_chars=200, first_chunk_chars=5) == ["Supercalifragilistic!"]


def test_first_chunk_without_punctuation_cuts_at_a_word() -> None:
    line = "this line has no punctuation at all and keeps on going for quite a while longer"
    out = chunk(line, max_chars=200, first_chunk_chars=30)
    assert len(out[0]) <= 30 and line.startswith(out[0] + " ")


def test_sentences_are_packed_up_to_max_chars() -> None:
    line = "One. Two two. Three three three. Four four four four. Five."
    out = chunk(line, max_chars=20)
    assert all(len(c) <= 20 for c in out)
    assert _words(" ".join(out)) == _words(line)
    assert all(c[-1] in ".!?" for c in out)  # sentence-aligned when sentences fit


def test_cjk_text_is_cut_without_spaces() -> None:
    line = "你好。今天天气很好，我们一起去公园散步吧。然后去吃饭。"
    out = chunk(line, max_chars=10)
    assert "".join(out) == line
    assert all(len(c) <= 10 for c in out)


def test_reference_text_matches_f5_preprocessing() -> None:
    # f5-tts: ensure ". " at the end, then one more space after a single-byte character.
    assert reference_text("Hello there") == "Hello there.  "
    assert reference_text("Hello there.") == "Hello there.  "
    assert reference_text("你好。") == "你好。"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet="abcdefghij", min_size=1, max_size=12).map(
            lambda w: w + ("" if len(w) % 3 else ".") + ("," if len(w) % 5 == 0 else "")
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(min_value=16, max_value=120),
    st.integers(min_value=0, max_value=60),
)
def test_chunking_keeps_every_word_in_order_within_limits(
    words: list[str], max_chars: int, first: int
) -> None:
    line = " ".join(words)
    out = chunk(line, max_chars=max_chars, first_chunk_chars=first)
    assert _words(" ".join(out)) == _words(line)
    assert all(c and c == c.strip() for c in out)
    assert all(len(c) <= max_chars for c in out)  # every word here is shorter than the limit
    if 0 < first < len(line) and " " in line[: first + 1]:
        assert len(out[0]) <= first
    assert not any(re.search(r"\s{2,}", c) for c in out)
