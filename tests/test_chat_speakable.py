"""What chat turns into speech: zalgo stacks, HTML entities, ANSI escapes, SSML-looking tags and bidi
controls are taken out of the spoken text and of the ``started`` event's text that overlays show, and a
line is bounded by its estimated *spoken* length. Unit checks, then the real daemon (Piper)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import zmq
from support import Events, running_daemon

from ishowttsd.chat.pipeline import Accept, Pipeline
from ishowttsd.chat.settings import ChatSettings
from ishowttsd.chat.speakable import speakable, strip_stacked_marks, unescape_entities
from ishowttsd.chat.text import estimate_seconds
from ishowttsd.protocol import ChatMessage

ZALGO = "z̸̢̛a̵͓͝l̶̰̈́g̷͚̎ọ̷̈́ test"
BRAILLE = "".join(chr(0x2801 + i) for i in range(254))
"""254 different symbols Piper reads by name ("braille pattern dots-1 ..."), no repeats to collapse."""


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        (ZALGO, "zalgo test"),
        ("H̷̡̛e̸͎͐l̴̰̈́l̵̢͝o̶͚͑ chat", "Hello chat"),
        ("s̶t̶r̶i̶k̶e̶ through", "s̶t̶r̶i̶k̶e̶ through"),  # one mark per letter: kept (read silently)
        ("café cafe\u0301 Tiê\u0301ng Việt", "café café Tiếng Việt"),  # accents composed, kept
        ("नमस्ते สวัสดี שָׁלוֹם", "नमस्ते สวัสดี שָׁלוֹם"),  # other scripts' marks untouched
        ("Tom &amp; Jerry&#x27;s &#39;fun&#39; &eacute;t&eacute;", "Tom & Jerry's 'fun' été"),
        ("AT&T &notit &#0; &#xD800; &bogus;", "AT&T &notit &#0; &#xD800; &bogus;"),
        ("&amp;lt;speak&amp;gt;twice escaped", " twice escaped"),
        ("\x1b[31mred\x1b[0m text \x1b]0;title\x07done \x9b1mbold", "red text done bold"),
        ('<speak><break time="60s"/>hello</speak>', "  hello "),
        ("<prosody rate='x-slow' pitch=\"+50%\">slow</prosody> <!-- hidden -->", " slow   "),
        ("I <3 you, a < b, x<y and z>w", "I <3 you, a < b, x<y and z>w"),
        ("\u202eevil\u202c \u2067iso\u2069 \u200fmark", "evil iso mark"),
    ],
)
def test_speakable(raw: str, spoken: str) -> None:
    assert speakable(raw)[0] == spoken


def test_counts_say_what_changed() -> None:
    _, counts = speakable(f"{ZALGO} &amp; \x1b[1m<b>x</b>\u202e")
    assert counts == {"zalgo": 5, "entities": 1, "ansi": 1, "tags": 2, "bidi": 1}
    assert speakable("plain text")[1] == {}
    assert unescape_entities("&amp;amp;amp;amp;")[0] == "&amp;"  # three passes, no more
    assert strip_stacked_marks("e\u0301")[1] == 0


def test_symbols_read_by_name_count_as_spoken_time() -> None:
    assert estimate_seconds("⠿" * 14) == pytest.approx(20.0)
    assert estimate_seconds(ZALGO) == estimate_seconds("zalgo test")


class _Clock:
    def time(self) -> float:
        return 1_000_000.0

    def monotonic(self) -> float:
        return 100.0


def test_pipeline_speaks_and_bounds_the_cleaned_text() -> None:
    p = Pipeline(ChatSettings(), clock=_Clock())
    d = p.process(ChatMessage(text=f"{ZALGO} &amp; <break time='9s'/>friends", user="u1"))
    assert isinstance(d, Accept)
    assert d.text == "zalgo test & friends"
    assert {n.step for n in d.notes} >= {"zalgo", "entities", "tags"}
    d = p.process(ChatMessage(text=BRAILLE, user="u2"))
    assert isinstance(d, Accept)
    assert d.text == BRAILLE[:14] and d.seconds <= ChatSettings().max_seconds


# -- through the daemon -----------------------------------------------------------------------------------
def _send(bot: zmq.Socket[Any], **msg: Any) -> None:
    bot.send_multipart([b"chat", json.dumps({"ts": time.time(), **msg}).encode()])


def _connected(d: Any, ev: Events) -> zmq.Socket[Any]:
    """A bot PUB whose subscription has arrived: one of its probes was queued."""
    bot = d.bot()
    for i in range(100):
        _send(bot, text="probe", user="probe", kind="mod", id=f"probe-{i}")
        try:
            ev.wait_for(lambda e: str(e.get("msg_id")).startswith("probe-") and e["event"] == "queued", 0.5)
            return bot
        except AssertionError:
            continue
    raise AssertionError("the bot never got through")


def test_daemon_speaks_and_shows_the_cleaned_line() -> None:
    hostile = {
        "zalgo": (ZALGO, "zalgo test"),
        "html": ("Tom &amp; Jerry&#x27;s show", "Tom & Jerry's show"),
        "ansi": ("\x1b[31mred\x1b[0m alert", "red alert"),
        "ssml": ('<speak><break time="60s"/>a long pause</speak>', "a long pause"),
        "bidi": ("\u202eevil twin\u202c here", "evil twin here"),
        "braille": (BRAILLE, BRAILLE[:14]),
    }
    with running_daemon({"watchdog": {"rtf_check": False}}) as d:
        ev = d.subscribe(b"")
        bot = _connected(d, ev)
        for i, (mid, (text, _)) in enumerate(hostile.items()):
            _send(bot, text=text, user=f"viewer{i}", id=mid)
        for mid, (_, shown) in hostile.items():
            started = ev.wait_for(lambda e, m=mid: e.get("msg_id") == m and e["event"] == "started", 120)
            assert started["text"] == shown, mid  # what overlays show, and what is spoken
            done = ev.wait_for(lambda e, m=mid: e.get("msg_id") == m and e["event"] == "done", 120)
            print(f"{mid}: {done['audio_s']:.2f} s of audio for {started['text']!r}")
            if mid == "zalgo":
                assert done["audio_s"] < 3.0  # 19.1 s as "symbol three three eight ..." before
            if mid == "braille":
                assert done["audio_s"] < 30.0  # bounded by spoken time (20 s estimated), not 254 symbols
