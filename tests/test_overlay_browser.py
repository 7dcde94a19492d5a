"""The OBS overlay in a real headless Chromium, fed by the real daemon (Piper) through the gateway.

One daemon (paced: the overlay is the speaker), one gateway and one browser for the module. Chat
lines go in over the daemon's ZeroMQ ingest like a bot's; the page's AudioWorklet posts what it
rendered (``?capture=1``), which is compared with the daemon's own PCM and transcribed back.
"""

from __future__ import annotations

import contextlib
import json
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.asr import transcribe, wer
from tests.overlay_support import Gateway, chromium, page_log, take_capture, wait_js
from tests.support import Daemon, Events, running_daemon, wait_joined
from tests.waits import wait_until

MOD_TOKEN = "moderator-token-0123456789"
RATE = 22050


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    settings = {
        "audio": {"sinks": ["pcm"], "pace": "auto"},
        "chat": {"moderator_tokens": [MOD_TOKEN], "journal": False},
    }
    with running_daemon(settings) as d:
        yield d


@pytest.fixture(scope="module")
def gateway(daemon: Daemon) -> Iterator[Gateway]:
    gw = Gateway(daemon)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def page(gateway: Gateway) -> Iterator[Any]:
    driver = chromium()
    try:
        driver.get(gateway.overlay_url(capture="1"))
        wait_js(driver, "window.__overlay && window.__overlay.connected")
        driver.execute_script("window.__loadedOnce = 'yes'")  # gone if the page ever reloads
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def bot(daemon: Daemon) -> Any:
    sock = daemon.bot()
    return sock


@pytest.fixture()
def pub(daemon: Daemon) -> Iterator[Events]:
    ev = daemon.subscribe()
    yield ev
    ev.close()


def chat(bot: Any, text: str, user: str, msg_id: str) -> None:
    bot.send_multipart([b"chat", json.dumps({"text": text, "user": user, "id": msg_id}).encode()])


def job_of(pub: Events, msg_id: str, event: str = "started", timeout_s: float = 30.0) -> str:
    return str(pub.wait_for(lambda e: e["event"] == event and e.get("msg_id") == msg_id, timeout_s)["job"])


def entries(driver: Any, kind: str, job: str) -> list[dict[str, Any]]:
    return [e for e in page_log(driver) if e.get("type") == kind and e.get("job") == job]


def captions(driver: Any) -> list[str]:
    return list(
        driver.execute_script("return [...document.querySelectorAll('.caption')].map(e => e.textContent)")
    )


def wait_gateway_hears_daemon(page: Any, daemon: Daemon) -> None:
    """Wait until the gateway's SUB has joined the daemon's PUB (after a restart of either): a
    pause and a resume make the daemon publish ``paused`` and ``resumed``, which the gateway passes
    on to the page; with nothing playing they change nothing else."""
    t0 = time.time() * 1000

    def heard() -> bool:
        daemon.request({"op": "pause"})
        daemon.request({"op": "resume"})
        with contextlib.suppress(AssertionError):
            wait_js(page, f"window.__overlay.log.some(e => e.event === 'resumed' && e.wall >= {t0})", 0.3)
            return True
        return False

    wait_until(
        heard, 15, "the page to hear the daemon's events through the gateway", lambda: page_log(page)[-10:]
    )


class SecondOverlay(threading.Thread):
    """Another overlay on the same gateway, at the wire level: collects each job's samples."""

    def __init__(self, gw: Gateway) -> None:
        super().__init__(daemon=True)
        self.url = f"ws://127.0.0.1:{gw.port}/overlay/ws?key={gw.key}"
        self.samples: dict[str, bytearray] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        from websockets.sync.client import connect

        with connect(self.url, max_size=None) as ws:
            self.ready.set()
            while not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    msg = ws.recv(timeout=0.2)
                    if isinstance(msg, bytes):
                        (n,) = struct.unpack("<I", msg[:4])
                        job = json.loads(msg[4 : 4 + n])["job"]
                        self.samples.setdefault(job, bytearray()).extend(msg[4 + n :])


def test_captions_follow_the_audio_which_is_gapless_and_transcribes(
    page: Any, bot: Any, pub: Events, gateway: Gateway
) -> None:
    other = SecondOverlay(gateway)
    other.start()
    assert other.ready.wait(10)
    take_capture(page)  # start from here
    lines = [
        ("alice", "Hello chat, thanks for the follow.", "c-1"),
        ("bob", "The weather is lovely today in the mountains.", "c-2"),
    ]
    for user, text, mid in lines:
        chat(bot, text, user, mid)
    jobs = [job_of(pub, mid, "queued") for _, _, mid in lines]

    # (1) while each line plays its caption shows who said what; it is gone after
    seen: dict[str, set[str]] = {j: set() for j in jobs}
    deadline = time.monotonic() + 60
    while not entries(page, "end", jobs[1]):
        assert time.monotonic() < deadline, page_log(page)[-10:]
        playing = page.execute_script(
            "const l = window.__overlay.log.filter(e => e.type === 'start' || e.type === 'end');"
            "const last = l[l.length - 1]; return last && last.type === 'start' ? last.job : null"
        )
        shown = captions(page)
        if playing in seen:
            seen[playing].update(shown)
        time.sleep(0.1)  # captions sampled while the lines play
    for (user, text, _), job in zip(lines, jobs, strict=True):
        assert f"{user}{text}" in seen[job] or f"{user}: {text}" in seen[job], seen
        assert entries(page, "caption", job) and entries(page, "uncaption", job)
    wait_js(page, "document.querySelectorAll('.caption').length === 0", 2)  # gone after its line

    # (2) what the worklet rendered: each line's samples exactly as the daemon made them, back to
    # back with no underrun, and Whisper hears the words
    pub.pump(0.5)
    # the worklet posts its capture in blocks: wait until the block with the last line's end is in
    last_end = entries(page, "end", jobs[1])[0]["frame"]
    captured_to = "window.__overlay.captureStart + window.__overlay.capture.reduce((n, b) => n + b.length, 0)"
    wait_js(page, f"window.__overlay.captureStart !== null && {captured_to} >= {last_end}", 5)
    start, rendered = take_capture(page)
    stats = page.execute_script("return window.__overlay.underruns")
    for (_, text, _), job in zip(lines, jobs, strict=True):
        sent = pub.audio(job)
        assert len(sent) > RATE
        at = entries(page, "start", job)[0]["frame"] - start
        got = rendered[at : at + len(sent)]
        assert np.array_equal(got, sent), f"{job}: rendered audio differs from the daemon's"
        heard = transcribe(got, RATE)
        assert wer(text, heard) <= 0.10, (text, heard)
        end = entries(page, "end", job)[0]
        assert end["reason"] == "final" and end["frame"] - start == at + len(sent)
    assert stats == 0, f"{stats} frames of underrun"
    # several overlays at once: the other one got the same audio
    other.stop.set()
    other.join(5)
    for job in jobs:
        assert bytes(other.samples[job]) == pub.audio(job).tobytes()
    # the second line started as soon as its audio reached the page: the page adds no gap
    for job in jobs:
        arrived = entries(page, "first", job)[0]["wall"]
        assert entries(page, "start", job)[0]["wall"] - arrived <= 100


def test_skip_silences_at_once_and_a_deleted_line_never_sounds(page: Any, bot: Any, pub: Events) -> None:
    take_capture(page)
    long = "This is a long line that keeps on going, so that a moderator can skip it half way through."
    chat(bot, long, "carol", "s-1")
    chat(bot, "Nobody should ever hear this deleted line.", "dave", "s-2")
    first = job_of(pub, "s-1")
    second = job_of(pub, "s-2", "queued")
    wait_js(page, f"window.__overlay.log.some(e => e.type === 'start' && e.job === '{first}')", 30)
    time.sleep(0.8)  # well into the line: the skip below must silence audible speech
    bot.send_multipart([b"delete", json.dumps({"id": "s-2"}).encode()])
    pub.wait_for(lambda e: e.get("job") == second and e["event"] in ("cancelled", "dropped"), 10)
    # the delete reaches the page too, where it must change nothing
    wait_js(page, f"window.__overlay.log.some(e => e.type === 'event' && e.job === '{second}')", 5)
    assert captions(page) and "carol" in captions(page)[0]
    t_skip = time.time()
    bot.send_multipart([b"skip", json.dumps({"token": MOD_TOKEN}).encode()])
    drop = wait_js(
        page,
        f"window.__overlay.log.find(e => e.type === 'dropped' && e.job === '{first}' && e.audible)",
        5,
        0.01,
    )
    latency = page.execute_script("return window.__overlay.outputLatency()")
    silenced_ms = drop["wall"] - t_skip * 1000 + latency * 1000
    assert silenced_ms <= 150, f"silenced {silenced_ms:.0f} ms after the skip"
    pub.wait_for(lambda e: e.get("job") == first and e["event"] == "cancelled", 10)
    time.sleep(1.5)  # long enough for the deleted line to have started, had it survived
    assert captions(page) == []
    start, rendered = take_capture(page)
    after = rendered[drop["frame"] - start :]
    assert len(after) > RATE and not after.any(), "sound after the skip"
    assert not entries(page, "start", second)
    assert second not in pub.pcm


def test_a_pause_holds_the_line_and_its_caption(page: Any, bot: Any, pub: Events) -> None:
    chat(bot, "Pausing in the middle of this line should keep its caption up until it ends.", "gus", "p-1")
    job = job_of(pub, "p-1")
    wait_js(page, f"window.__overlay.log.some(e => e.type === 'start' && e.job === '{job}')", 30)
    time.sleep(0.5)  # into the line: the pause lands mid-line
    bot.send_multipart([b"pause", json.dumps({"token": MOD_TOKEN}).encode()])
    time.sleep(4.0)  # longer than the page's 3 s limit for a line whose audio stopped
    assert not entries(page, "end", job)
    assert any("gus" in c for c in captions(page))
    bot.send_multipart([b"resume", json.dumps({"token": MOD_TOKEN}).encode()])
    wait_js(page, f"window.__overlay.log.some(e => e.type === 'end' && e.job === '{job}')", 30)
    assert entries(page, "end", job)[-1]["reason"] == "final"


def test_page_plays_on_after_the_gateway_restarts(
    page: Any, daemon: Daemon, gateway: Gateway, bot: Any, pub: Events
) -> None:
    before = page.execute_script("return window.__overlay.sockets")
    gateway.stop()
    wait_js(page, "!window.__overlay.connected", 10)
    gateway.start()
    wait_js(page, f"window.__overlay.connected && window.__overlay.sockets > {before}", 15)
    wait_gateway_hears_daemon(page, daemon)
    chat(bot, "We are back on the air.", "erin", "r-1")
    job = job_of(pub, "r-1")
    wait_js(page, f"window.__overlay.log.some(e => e.type === 'end' && e.job === '{job}')", 30)
    assert entries(page, "caption", job)
    assert page.execute_script("return window.__loadedOnce") == "yes"  # not reloaded


def test_page_plays_on_after_the_daemon_restarts(page: Any, daemon: Daemon, bot: Any, pub: Events) -> None:
    daemon.stop()
    wait_js(page, "window.__overlay.daemon === false", 15)
    daemon.start()
    daemon.wait_ready()
    wait_js(page, "window.__overlay.daemon === true", 15)
    wait_joined(bot)  # the bot's, the gateway's and our SUBs reconnect to the new daemon
    wait_gateway_hears_daemon(page, daemon)
    daemon.wait_subscribed(pub)
    chat(bot, "The daemon is back as well.", "frank", "d-1")
    job = job_of(pub, "d-1")
    wait_js(page, f"window.__overlay.log.some(e => e.type === 'end' && e.job === '{job}')", 30)
    assert entries(page, "caption", job)
    assert page.execute_script("return window.__loadedOnce") == "yes"
