"""Fuzzing the ingest SUB (via a bot's PUB) of a real daemon, chat pipeline and journal included.

A SUB cannot answer, so the invariant is accounting: after each fuzz message a sentinel chat line
is published, and by the time the sentinel's event comes back every message before it (same pipe,
same order) has been handled — counted as chat in (queued, filtered or dropped with a reason,
each with its event) or as a bad message (an ``error`` event with ``source: ingest``). Moderation
topics may be handled without either. The daemon never dies; a normal chat line is spoken after.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import zmq
from fuzzgen import INGEST_CORPUS, ingest_frames
from hypothesis import HealthCheck, given, settings
from robust import LONG, announce_huge_frame, ipc_path, record, rss_kb, wait_disconnected
from support import Daemon, Events, running_daemon

from ishowttsd.protocol import MODERATION_TOPICS

CI_CASES = 300
LONG_CASES = 10_000

FUZZ_SETTINGS = {
    "queue": {"max_jobs": 8, "max_text_chars": 300},
    "piper": {"deterministic": True, "length_scale": 0.2},
}


def _accounted(st: dict[str, Any]) -> int:
    c = st["counters"]
    return int(c["chat_in"]) + int(c["bad_messages"])


class IngestProbe:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.bot = daemon.bot()
        self.ctl = daemon.dealer()  # one control socket for the whole run (not one per request)
        self.events: Events = daemon.subscribe(b"event")
        self.sent = 0
        self.bad_events = 0
        self._sync()

    def _sentinel(self) -> str:
        mid = f"sentinel-{uuid.uuid4().hex[:10]}"
        # Blank text: accounted (chat in) and dropped at once, so sentinels are never spoken.
        self.bot.send_multipart([b"chat", json.dumps({"text": " ", "id": mid, "user": mid}).encode()])
        return mid

    def _wait_sentinel(self, mid: str, timeout_s: float = 20.0) -> None:
        seen = len(self.events.events)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.events.pump(0.002)
            for ev in self.events.events[seen:]:
                if ev.get("msg_id") == mid:
                    assert ev["event"] == "dropped", ev
                    return
            seen = len(self.events.events)
        raise AssertionError(f"no event for sentinel {mid} within {timeout_s}s")

    def _sync(self) -> None:
        """A PUB drops what it sends before the subscription arrives: retry until one gets through."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            mid = self._sentinel()
            try:
                self._wait_sentinel(mid, 0.3)
                return
            except AssertionError:
                continue
        raise AssertionError("the ingest subscription never came up")

    def check(self, frames: list[bytes]) -> None:
        proc = self.daemon.proc
        assert proc is not None
        before = _accounted(self.daemon.request({"op": "status"}, sock=self.ctl))
        n_events = len(self.events.events)
        self.bot.send_multipart(frames)
        mid = self._sentinel()
        try:
            self._wait_sentinel(mid)
        except AssertionError:
            raise AssertionError(
                f"ingest stalled after {frames!r} (daemon exit code {proc.poll()}); "
                f"log:\n{self.daemon.log_text()[-3000:]}"
            ) from None
        self.sent += 1
        after = _accounted(self.daemon.request({"op": "status"}, sock=self.ctl))
        counted = after - before - 1  # minus the sentinel
        moderation = frames[0] in MODERATION_TOPICS
        assert counted == 1 or (moderation and counted == 0), (frames, counted)
        new = self.events.events[n_events:]
        for ev in new:
            assert ev.get("code") != "internal_error", (frames, ev)
        self.bad_events += sum(1 for e in new if e.get("event") == "error" and e.get("source") == "ingest")
        assert proc.poll() is None
        if len(self.events.events) > 5000:
            del self.events.events[:4000]


@pytest.fixture(scope="module")
def daemon():  # type: ignore[no-untyped-def]
    with running_daemon(FUZZ_SETTINGS) as d:
        yield d


def _fuzz_ingest(d: Daemon, n: int) -> None:
    probe = IngestProbe(d)
    pid = d.proc.pid  # type: ignore[union-attr]
    rss0 = rss_kb(pid)
    t0 = time.monotonic()
    for frames in INGEST_CORPUS:
        probe.check(frames)

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(ingest_frames())
    def run(frames: list[bytes]) -> None:
        probe.check(frames)

    run()
    elapsed = time.monotonic() - t0
    st = d.request({"op": "status"})
    # Afterwards an ordinary chat line is still spoken.
    assert d.request({"op": "resume"})["event"] == "ok"
    assert d.request({"op": "cancel"})["event"] == "ok"
    mid = f"after-{uuid.uuid4().hex[:8]}"
    probe.bot.send_multipart(
        [b"chat", json.dumps({"text": "Still reading chat.", "id": mid, "user": "calm"}).encode()]
    )
    done = probe.events.wait_for(
        lambda e: e.get("msg_id") == mid and e["event"] in ("done", "dropped", "error"), 60
    )
    assert done["event"] == "done", done
    record(
        "fuzz_ingest_pub",
        cases=probe.sent,
        seconds=round(elapsed, 1),
        bad_messages=st["counters"]["bad_messages"],
        chat_in=st["counters"]["chat_in"],
        error_events=probe.bad_events,
        jobs=st["jobs"],
        rss_growth_mb=round((rss_kb(pid) - rss0) / 1024, 1),
    )
    assert probe.sent >= n
    assert "handler failed" not in d.log_text()


def test_fuzz_ingest(daemon: Daemon) -> None:
    _fuzz_ingest(daemon, CI_CASES)


@pytest.mark.long
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not LONG, reason="long mode: ISHOWTTS_LONG=1")
def test_fuzz_ingest_long(daemon: Daemon) -> None:
    _fuzz_ingest(daemon, LONG_CASES)


def test_100mb_chat_frame_is_dropped_without_memory_growth(daemon: Daemon) -> None:
    pid = daemon.proc.pid  # type: ignore[union-attr]
    rss0 = rss_kb(pid)
    probe = IngestProbe(daemon)  # its bot is connected and subscribed to once this returns
    monitor = probe.bot.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    probe.bot.send_multipart([b"chat", b"x" * (100 << 20)])
    assert wait_disconnected(monitor), "the daemon did not drop the connection of the oversized frame"
    probe.bot.disable_monitor()
    monitor.close(0)
    growth_mb = (rss_kb(pid) - rss0) / 1024
    assert daemon.request({"op": "ping"})["event"] == "pong"
    probe = IngestProbe(daemon)  # chat from a well-behaved bot (a fresh connection) still flows
    probe.check([b"chat", json.dumps({"text": "normal line", "user": "u1"}).encode()])
    record("huge_frame_ingest", frame_mb=100, rss_growth_mb=round(growth_mb, 1))
    assert growth_mb < 8, f"daemon RSS grew {growth_mb:.1f} MB on a 100 MB chat frame"


def test_announced_gigabyte_chat_frame_drops_the_connection(daemon: Daemon) -> None:
    pid = daemon.proc.pid  # type: ignore[union-attr]
    rss0 = rss_kb(pid)
    assert announce_huge_frame(ipc_path(daemon.ingest), 1 << 30, socket_type=b"PUB") == "closed"
    assert (rss_kb(pid) - rss0) / 1024 < 8
    assert daemon.request({"op": "ping"})["event"] == "pong"
