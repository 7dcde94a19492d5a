"""Spam that dodges dedupe: a raid of disguised copies is spoken once per phrase, ordinary chat is not
suppressed (the figures docs/CHAT.md quotes come from these two replays; ``-s`` prints them)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from ishowttsd.chat.normalize import collapse_stretched, spam_key, user_key
from ishowttsd.chat.pipeline import Accept, Pipeline
from ishowttsd.chat.settings import parse_chat
from ishowttsd.confread import Table
from ishowttsd.protocol import ChatMessage

ORDINARY = Path(__file__).parent / "data" / "chat_ordinary.txt"
PHRASES = ("lol", "first", "raid hype", "W streamer", "get rekt chat")
# Look-alikes Unicode's confusables data lists for these letters (Cyrillic, Greek, Roman numerals,
# letters with dots below or above). Not: Cyrillic "т" (it imitates a small capital T), Greek "ε"
# (Latin open e), or leet digits ("l0l"): those are not confusables, and folding "0" into "o" would
# merge "100" with "10".
HOMOGLYPHS = {
    "a": "аɑα",
    "e": "еė",
    "i": "іι",
    "o": "оοｏ",
    "p": "рρ",
    "c": "сϲ",
    "t": "ṭ",
    "r": "г",
    "s": "ѕ",
    "h": "һ",
    "y": "у",
    "w": "ԝ",
    "l": "ⅼӏ",
}


class Clock:
    def __init__(self) -> None:
        self.wall, self.mono = 1_700_000_000.0, 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, s: float) -> None:
        self.wall += s
        self.mono += s


def disguise(phrase: str, rng: random.Random) -> str:
    """One raid copy of ``phrase``: stretched, spaced, dotted, homoglyphs, zero-width, case, fullwidth."""
    out = []
    for c in phrase:
        if c.isalpha():
            if rng.random() < 0.3 and c.lower() in HOMOGLYPHS:
                c = rng.choice(HOMOGLYPHS[c.lower()])
            if rng.random() < 0.2:
                c = c * rng.randint(2, 8)
            if rng.random() < 0.1:
                c += "\u200b"
        out.append(c)
    text = "".join(out)
    style = rng.randrange(6)
    if style == 1:
        text = " ".join(text)
    elif style == 2:
        text = rng.choice(".-_*").join(text.replace(" ", ""))
    elif style == 3:
        text = text.upper()
    elif style == 4:
        text = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    return text + rng.choice(("", "!", "!!!", " !!", "?", " :)"))


def ordinary() -> list[str]:
    lines = ORDINARY.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1000 and len(set(lines)) == 1000
    return lines


def replay(lines: list[tuple[str, str]], gap_s: float, **keys: object) -> list[tuple[str, bool, str]]:
    """(user, text) at ``gap_s`` apart through a pipeline with ``keys``: (text, accepted, reason)."""
    clock = Clock()
    p = Pipeline(parse_chat(Table(dict(keys), "chat", None)), clock=clock)
    out = []
    for user, text in lines:
        d = p.process(ChatMessage(text=text, user=user, channel="stream"))
        out.append((text, isinstance(d, Accept), "" if isinstance(d, Accept) else d.reason))
        clock.advance(gap_s)
    return out


def test_the_key_folds_every_disguise_and_keeps_words_apart() -> None:
    same = ["LOL", "l o l", "l.o.l", "L-O-L", "LOOOOOL", "ⅼοⅼ", "l\u200bol", "Ｌ Ｏ Ｌ", "𝐥𝐨𝐥", "lоl!!!"]
    assert {spam_key(s) for s in same} == {"ioi"}
    assert spam_key("ТЕХТ") == spam_key("text")  # Cyrillic capitals imitating Latin ones
    assert len({spam_key(s) for s in ["lol", "lul", "lolol", "kekw", "gg", "ggwp"]}) == 6
    assert spam_key("😂😂😂") == spam_key("😂") != spam_key("🔥")
    assert spam_key("привет") != spam_key("пока")  # other scripts keep their letters
    assert user_key("Ｓｐａｍｍｅｒ") == user_key("spаmmer") == user_key("SPAMMER") == "spammer"
    assert spam_key("FΙRST") == spam_key("first")  # Greek capital iota


def test_stretched_words_are_spoken_as_words() -> None:
    assert collapse_stretched("LOOOOOOL") == ("lool", 1)
    assert collapse_stretched("nooooo way, NASA is good") == ("noo way, NASA is good", 1)
    assert collapse_stretched("LOL good 1000") == ("LOL good 1000", 0)


def test_a_raid_of_disguised_copies_is_spoken_once_per_phrase() -> None:
    rng = random.Random(15)
    raid = [(f"raider{i}", disguise(rng.choice(PHRASES), rng)) for i in range(500)]
    normal = [(f"viewer{i}", t) for i, t in enumerate(rng.sample(ordinary(), 200))]
    lines = raid + normal
    rng.shuffle(lines)
    phrase_of = {text: next(p for p in PHRASES if spam_key(text) == spam_key(p)) for _, text in raid}
    # 700 lines in 56 s: the whole raid inside one 60 s duplicate window (defaults otherwise).
    result = replay(lines, 0.08)
    spoken = Counter(phrase_of[t] for t, ok, _ in result if ok and t in phrase_of)
    normal_texts = {t for _, t in normal}
    normal_ok = sum(1 for t, ok, _ in result if ok and t in normal_texts)
    print(f"\nraid: {dict(spoken)} spoken of 500 copies; ordinary lines spoken {normal_ok}/200")
    assert set(spoken.values()) == {1}, spoken
    assert normal_ok >= 198


def test_ordinary_chat_is_rarely_taken_for_a_copy() -> None:
    lines = [(f"viewer{i}", t) for i, t in enumerate(ordinary())]
    # Worst case: all 1,000 lines inside one duplicate window; then at a busy channel's pace (1/s).
    for gap in (0.0, 1.0):
        result = replay(lines, gap)
        wrong = [t for t, ok, reason in result if reason == "duplicate"]
        print(f"\nordinary chat, {gap:g} s apart: {len(wrong)}/1000 suppressed as copies: {wrong}")
        assert len(wrong) <= 10, wrong
        assert all(ok or reason == "duplicate" for _, ok, reason in result)
