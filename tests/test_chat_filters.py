"""Each chat filter on its own, with real chat lines: links, emotes, repeats, blocklist, lexicon."""

from __future__ import annotations

import time

import pytest

from ishowttsd.chat.filters import (
    collapse_chars,
    collapse_tokens,
    find_urls,
    replace_urls,
    strip_emote_ranges,
)
from ishowttsd.chat.words import WordMatcher, mask

FAMILY = "👩\u200d👩\u200d👧"


# -- links -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("check https://example.com/a?b=1&c=2#x out", "check link out"),
        ("see https://clips.twitch.tv/FunnyClip-abc123.", "see link."),
        ("HTTP://EXAMPLE.COM/UPPER", "link"),
        ("go to www.twitch.tv/someone!", "go to link!"),
        ("twitch.tv/someone is live", "link is live"),
        ("bit.ly/3xYz and youtu.be/dQw4w9WgXcQ", "link and link"),
        ("discord.gg/abcdef join", "link join"),
        ("(https://en.wikipedia.org/wiki/Foo_(bar))", "(link)"),
        ("ftp://files.example.org/pub", "link"),
        ("sub.domain.example.co.uk/path?q", "link"),
        ("192.168.1.20:8080/admin", "link"),
        ("пример.рф/страница привет", "link привет"),
        ("xn--e1afmkfd.xn--p1ai ok", "link ok"),
        ("example.com", "link"),
        ("foo.bar/baz", "link"),
        ("看这个 https://www.bilibili.com/video/BV1xx 哈哈", "看这个 link 哈哈"),
        ("مرحبا https://example.com/ar مرحبا", "مرحبا link مرحبا"),
        ("steam://run/440", "link"),
        ("<https://example.com>", "<link>"),
    ],
)
def test_links_are_replaced(text: str, expected: str) -> None:
    assert replace_urls(text, "link")[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "hello.world",
        "file.txt is missing",
        "e.g. this i.e. that",
        "pi is 3.14159",
        "version 1.2.3",
        "mail me at someone@example.com",  # an address, not a link
        "wait...what",
        "Mr.Smith",
        "这是一个句子。那是另一个。",
    ],
)
def test_non_links_are_left_alone(text: str) -> None:
    assert find_urls(text) == []


def test_links_removed() -> None:
    assert replace_urls("a https://x.com/y b", "") == ("a  b", 1)


@pytest.mark.parametrize("text", ["a." * 5000, "a-" * 5000, "http://" * 1400, "1." * 5000, "x" * 10_000])
def test_link_search_is_linear_on_hostile_lines(text: str) -> None:
    t0 = time.perf_counter()
    replace_urls(text, "link")
    assert time.perf_counter() - t0 < 0.5


# -- emotes --------------------------------------------------------------------------------------------


def test_twitch_emote_ranges() -> None:
    # Twitch IRC: "emotes=25:0-4,12-16/1902:6-10" on "Kappa Keepo Kappa"
    assert strip_emote_ranges("Kappa Keepo Kappa", [(0, 4), (6, 10), (12, 16)]) == ("  ", 3)
    assert strip_emote_ranges("nice Kappa play", [(5, 9)]) == ("nice  play", 1)


def test_emote_ranges_count_code_points_not_utf16() -> None:
    text = f"{FAMILY} PogChamp 😂 LUL"
    start = text.index("PogChamp")  # code points: the ZWJ family is 5 of them
    assert start == 6
    out, n = strip_emote_ranges(text, [(start, start + 7), (text.index("LUL"), len(text) - 1)])
    assert (out, n) == (f"{FAMILY}  😂 ", 2)


def test_misaligned_emote_ranges_are_ignored() -> None:
    text = "😂😂 Kappa"  # a bot counting UTF-16 units would send 5-9 here (off by two)
    assert strip_emote_ranges(text, [(5, 9)]) == (text, 0)
    assert strip_emote_ranges(text, [(3, 7)]) == ("😂😂 ", 1)
    assert strip_emote_ranges(text, [(3, 100)]) == (text, 0)  # out of range


def test_emote_wall_collapses() -> None:
    assert collapse_tokens("LUL LUL LUL LUL LUL LUL", 2) == ("LUL LUL", 4)
    assert collapse_tokens("pog POG Pog pog nice", 1) == ("pog nice", 3)
    assert collapse_tokens(f"{FAMILY} {FAMILY} {FAMILY}", 1) == (FAMILY, 2)
    assert collapse_tokens("a b a b", 1) == ("a b a b", 0)


def test_repeated_characters_collapse_by_grapheme() -> None:
    assert collapse_chars("loooooool", 3) == ("loool", 4)
    assert collapse_chars("!!!!!!!!", 3) == ("!!!", 5)
    assert collapse_chars("😂😂😂😂😂😂", 2) == ("😂😂", 4)
    assert collapse_chars(FAMILY * 5, 1) == (FAMILY, 4)
    assert collapse_chars("ééééé", 2) == ("éé", 3)  # e + combining acute, kept whole
    assert collapse_chars("wwwwwwwww 草草草草草草", 3) == ("www 草草草", 9)
    assert collapse_chars("1000000 dollars", 2) == ("1000000 dollars", 0)  # numbers are not stretched words


def test_ten_thousand_char_spam() -> None:
    text = "A" * 10_000
    out, n = collapse_chars(text, 3)
    assert out == "AAA" and n == 9997
    text = "LUL " * 2500
    out, n = collapse_tokens(text, 2)
    assert out == "LUL LUL"


# -- blocklist and lexicon (whole words, case-folded, Unicode-aware) ------------------------------------


def _masker(m: WordMatcher[str], text: str) -> str:
    return m.sub(text, lambda span, p: mask(span, "*") if p == "mask" else p)[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what the heck", "what the ****"),
        ("HECK yes", "**** yes"),
        ("ＨＥＣＫ", "****"),  # fullwidth
        ("h̸e̸c̸k̸ off", "**** off"),  # zalgo marks go with the word
        ("he\u200bck", "*****"),  # zero-width space inside: still the word, masked whole
        ("heckin good", "heckin good"),  # whole words only
        ("check", "check"),
        ("heck, heck!", "****, ****!"),
        ("STRASSE and straße", "******* and ******"),  # ß folds to ss
        ("你是傻逼吗", "你是**吗"),  # CJK: no spaces, matched inside
        ("هذا كلب سيء", "هذا *** سيء"),  # Arabic, right-to-left
        ("זה כלב רע", "זה *** רע"),  # Hebrew
    ],
)
def test_blocklist_mask(text: str, expected: str) -> None:
    m: WordMatcher[str] = WordMatcher(
        [("heck", "mask"), ("strasse", "mask"), ("傻逼", "mask"), ("كلب", "mask"), ("כלב", "mask")]
    )
    assert _masker(m, text) == expected


def test_blocklist_replace_and_first_rule_wins() -> None:
    m: WordMatcher[str] = WordMatcher([("darn", "dang"), ("DARN", "ignored"), ("dang it", "oh no")])
    assert _masker(m, "Darn it, dang it") == "dang it, oh no"


def test_lexicon_longest_match_first() -> None:
    m: WordMatcher[str] = WordMatcher(
        [("gg", "good game"), ("gg wp", "good game, well played"), ("kekw", "kek")]
    )
    assert (
        m.sub("GG WP everyone, KEKW gg", lambda _s, say: say)[0]
        == "good game, well played everyone, kek good game"
    )


def test_empty_matcher() -> None:
    m: WordMatcher[str] = WordMatcher([])
    assert not m
    assert m.sub("anything", lambda _s, p: p) == ("anything", 0)


def test_strip_emoji_takes_whole_sequences() -> None:
    from ishowttsd.chat.filters import strip_emoji

    text = f"gg {FAMILY} 👍🏽 🇯🇵 🏳️\u200d🌈 1️⃣ ok 😂😂"
    out, n = strip_emoji(text)
    assert n == 6
    assert out.split() == ["gg", "1️⃣", "ok"]  # a keycap is a digit, read as one
    assert strip_emoji("no emoji here, 你好") == ("no emoji here, 你好", 0)
