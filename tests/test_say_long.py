"""``ishowtts-say`` with long text (a file piped in): cut into ordered jobs under the daemon's
limit, ``--wait`` waits for all, ``-o`` holds them all. Real client, real daemon (Piper)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

import pytest
import soundfile as sf
from robust import LONG
from support import running_daemon

from ishowttsd.cli.split import limit_from_reason, split_text


def _words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def _book(n_chars: int) -> str:
    """Numbered sentences in paragraphs, so order can be read back from the spoken parts."""
    paras: list[str] = []
    i = 0
    size = 0
    while size < n_chars:
        sents = []
        for _ in range(1 + i % 5):
            i += 1
            sents.append(f"Sentence number {i} says the fox ran, the dog slept; and the day went on.")
        para = " ".join(sents)
        paras.append(para)
        size += len(para) + 2
    return "\n\n".join(paras) + "\n"


# -- the cutting, without a daemon -----------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 7, 40, 300, 2000])
def test_split_keeps_every_word_in_order_under_the_limit(limit: int) -> None:
    text = _book(5000) + " " + "x" * 90 + " 最後の文。次の文！ end"
    parts = split_text(text, limit)
    assert all(0 < len(p) <= limit for p in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())
    if limit >= 300:
        assert _words(" ".join(parts)) == _words(text)  # never inside a word


def test_split_prefers_paragraphs_then_sentences() -> None:
    text = _book(3000)
    parts = split_text(text, 300)
    assert all(p.endswith(".") for p in parts)  # every cut at a sentence end
    p1 = "Word " * 39 + "end."
    p2 = "Short one here is a sentence. " * 3
    # the paragraph break (at 199 of 250) wins over the later sentence end in the second paragraph
    assert split_text(f"{p1}\n\n{p2}", 250) == [p1, p2.strip()]
    # out of reach (under half the limit), the last sentence end wins
    assert split_text(f"Hi.\n\n{p2}{p2}", 100)[0] == "Hi.\n\n" + p2.strip()


def test_split_hard_cuts_only_without_spaces() -> None:
    assert split_text("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]
    assert split_text("   \n\n  ", 10) == []


def test_limit_from_reason() -> None:
    assert limit_from_reason("field 'text' has 2000 characters; limit 300", 2000) == 300
    assert limit_from_reason("too long", 2000) == 1000


# -- through the daemon ---------------------------------------------------------------------------
def _control_jobs(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name and e.get("source") == "control"]


def _speak_file(text: str, overrides: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    with running_daemon(overrides) as d:
        sub = d.subscribe(b"event")
        out = d.dir / "book.wav"
        cmd = [sys.executable, "-m", "ishowttsd.cli.say", "--endpoint", d.control, "--wait", "-o", str(out)]
        t0 = time.monotonic()
        r = subprocess.run(cmd, input=text.encode(), capture_output=True, timeout=timeout_s)
        wall = time.monotonic() - t0
        assert r.returncode == 0, r.stderr.decode()
        n = len(split_text(text, overrides.get("queue", {}).get("max_text_chars", 2000)))
        sub.wait_for(lambda e: len(_control_jobs(sub.events, "done")) >= n, timeout_s=10)
        data, rate = sf.read(out, dtype="int16")
        return {
            "started": _control_jobs(sub.events, "started"),
            "done": _control_jobs(sub.events, "done"),
            "samples": len(data),
            "rate": rate,
            "wall_s": wall,
            "stderr": r.stderr.decode(),
        }


def _assert_spoken_in_order(text: str, got: dict[str, Any], limit: int) -> None:
    spoken = [e["text"] for e in got["started"]]
    assert all(len(t) <= limit for t in spoken)
    assert _words(" ".join(spoken)) == _words(text)  # all of it, in order, nothing twice
    assert [e["job"] for e in got["done"]] == [e["job"] for e in got["started"]]
    audio_s = sum(e["audio_s"] for e in got["done"])
    assert abs(got["samples"] / got["rate"] - audio_s) < 0.05 * len(got["done"]) + 0.1


def test_long_text_on_stdin_is_spoken_in_order_under_a_low_limit() -> None:
    """A daemon whose limit (300) is below the client's first guess (2000): the first part is
    refused as too long, the client cuts again at the limit named, and every part follows in order."""
    text = _book(1200)
    got = _speak_file(text, {"queue": {"max_text_chars": 150}}, timeout_s=240)
    assert len(got["started"]) >= 8
    _assert_spoken_in_order(text, got, 150)


@pytest.mark.long
@pytest.mark.skipif(not LONG, reason="long mode: ISHOWTTS_LONG=1")
@pytest.mark.timeout(3700)
def test_70kb_text_on_stdin_is_spoken_in_order() -> None:
    text = _book(70_000)
    assert len(text.encode()) >= 70_000
    got = _speak_file(text, {}, timeout_s=3500)
    _assert_spoken_in_order(text, got, 2000)
    audio_s = sum(e["audio_s"] for e in got["done"])
    synth_s = sum(e["synth_s"] for e in got["done"])
    print(
        f"\n70 KB: {len(text)} characters, {len(got['done'])} jobs, {audio_s:.0f} s of audio, "
        f"synthesised in {synth_s:.0f} s, wall {got['wall_s']:.0f} s"
    )
