"""Grapheme-safe truncation and speech estimates on hostile real-world chat text."""

from __future__ import annotations

import time

import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from ishowttsd.chat.text import estimate_seconds, grapheme_ends, graphemes, skeleton, truncate

ZWJ_FAMILY = "👩\u200d👩\u200d👧\u200d👦"
ZALGO = "Z̵̡̢̛̗̘̙̜̝̞̟̠̊̋̌̍̎̏̐̑̒̓̔̽̾̿̀́͂̓̈́͆͊͋͌ͅÅ̸̧̨̛̖̗̘̙̜̝̞̟̠̋̌̍̎̏̐̑̒̓̔̽̾̿̀́͂̓̈́͆͊͋͌L̶̡̢̛̗̘̙̜̝̞̟̠̊̋̌̍̎̏̐̑̒̓̔̽̾̿̀́͂̓̈́͆͊͋͌G̷̡̢̛̗̘̙̜̝̞̟̠̊̋̌̍̎̏̐̑̒̓̔̽̾̿̀́͂̓̈́͆͊͋͌Ơ̴̡̢̗̘̙̜̝̞̟̠̊̋̌̍̎̏̐̑̒̓̔̽̾̿̀́͂̓̈́͆͊͋͌"
CHAT = [
    "gg wp that clutch was insane 🔥🔥🔥",
    "这个主播太厉害了，我从来没见过这么好的操作！",
    "配信お疲れ様でした！また明日ね〜",
    "안녕하세요 여러분 오늘도 재밌게 봐요",
    "مرحبا بالجميع، كيف حالكم اليوم؟",
    "שלום לכולם מה שלומכם היום",
    f"{ZALGO} he comes {ZALGO}",
    f"family time {ZWJ_FAMILY}{ZWJ_FAMILY} 🏳️\u200d🌈 🇯🇵 👍🏽",
    "mixed: hello 世界 مرحبا мир שלום 🌍 ok",
    "ไม่เป็นไรครับ สนุกมาก",
    "e\u0301e\u0301e\u0301 cafe\u0301 नमस्ते दुनिया",
]


def _is_grapheme_prefix(cut: str, text: str) -> bool:
    return text.startswith(cut) and len(cut) in grapheme_ends(text)


def test_short_text_untouched() -> None:
    for line in CHAT:
        assert truncate(line, 10_000, 1000.0) == (line, False)


def test_cuts_at_a_word() -> None:
    assert truncate("hello wonderful world", 17) == ("hello wonderful", True)
    assert truncate("hello wonderful world", 12) == ("hello", True)
    # no space to cut at: a grapheme boundary
    assert truncate("a" * 50, 10) == ("a" * 10, True)


def test_cjk_cuts_between_characters() -> None:
    text = "这个主播太厉害了"
    out, cut = truncate(text, 5)
    assert cut and out == "这个主播太"


def test_rtl_cuts_at_a_word() -> None:
    text = "مرحبا بالجميع كيف حالكم"
    out, cut = truncate(text, 16)
    assert cut and out == "مرحبا بالجميع"


def test_zalgo_never_loses_its_marks() -> None:
    out, cut = truncate(ZALGO, len(ZALGO) - 5)
    assert cut and _is_grapheme_prefix(out, ZALGO)
    assert graphemes(out) == graphemes(ZALGO)[: len(graphemes(out))]
    assert len(graphemes(out)) == 4  # the fifth letter with all its marks did not fit: it is gone whole


def test_zwj_sequence_is_never_split() -> None:
    text = ZWJ_FAMILY * 3
    for n in range(1, len(text)):
        out, _ = truncate(text, n)
        assert out in ("", ZWJ_FAMILY, ZWJ_FAMILY * 2), (n, out)


def test_flags_and_skin_tones_are_never_split() -> None:
    text = "🇯🇵🇫🇷👍🏽👍🏽"
    for n in range(len(text)):
        out, _ = truncate(text, n)
        assert _is_grapheme_prefix(out, text), (n, out)


def test_seconds_limit() -> None:
    text = " ".join(["word"] * 200)  # ~1000 chars ≈ 70 s at 14 chars/s
    out, cut = truncate(text, 0, 5.0, 14.0)
    assert cut and estimate_seconds(out, 14.0) <= 5.0
    assert len(out) > 55 and out.endswith("word")


def test_estimates_by_script() -> None:
    en = estimate_seconds("hello everyone how are you", 14.0)
    zh = estimate_seconds("大家好你们好吗", 14.0)
    assert 1.5 < en < 2.2
    assert 1.2 < zh < 1.8  # ~5 syllables a second
    # Piper reads an emoji's name ("fire", "woman woman girl"): ~10 characters' worth each
    assert estimate_seconds("🔥🔥🔥" + ZWJ_FAMILY, 14.0) == 4 * 10 / 14
    assert estimate_seconds("\u0301\u200b\x07", 14.0) == 0.0  # marks and controls are silent
    assert estimate_seconds("1000000", 14.0) > estimate_seconds("abcdefg", 14.0)


def test_ten_thousand_char_line_is_fast_and_safe() -> None:
    line = ("LUL " + ZWJ_FAMILY + " 这个 " + ZALGO + " مرحبا ") * 200
    line = line[:10_000]
    t0 = time.perf_counter()
    out, cut = truncate(line, 300, 20.0)
    elapsed = time.perf_counter() - t0
    assert cut and len(out) <= 300 and _is_grapheme_prefix(out, line)
    assert elapsed < 0.5, elapsed


def test_skeleton_maps_back_to_the_text() -> None:
    text = "ＦＵＣＫ Straße İstanbul Z̵A̸"
    skel, index = skeleton(text)
    assert skel == "fuck strasse istanbul za"
    assert len(index) == len(skel)
    assert all(0 <= i < len(text) for i in index)
    assert index == sorted(index)


# -- properties ------------------------------------------------------------------------------------

_chat_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from([*CHAT, ZWJ_FAMILY, ZALGO, " ", "\u0301", "\u200d", "🇯", "🇵"]), max_size=30).map(
        "".join
    ),
)


@settings(max_examples=400, deadline=None)
@given(_chat_text, st.integers(0, 400), st.floats(0, 30))
def test_truncation_never_splits_a_grapheme(text: str, max_chars: int, max_seconds: float) -> None:
    out, cut = truncate(text, max_chars, max_seconds)
    if not cut:
        assert out == text
        return
    assert _is_grapheme_prefix(out, text)
    if max_chars:
        assert len(out) <= max_chars
    if max_seconds:
        assert estimate_seconds(out) <= max_seconds + 1e-6
    # the graphemes of the result are exactly the first graphemes of the input
    gs = graphemes(out)
    assert gs == graphemes(text)[: len(gs)]


@settings(max_examples=200, deadline=None)
@given(_chat_text)
def test_graphemes_round_trip(text: str) -> None:
    assert "".join(graphemes(text)) == text
    assert regex.fullmatch(r"\X*", text)
