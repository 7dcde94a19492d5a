"""Fuzzing the control ROUTER (via DEALER and REQ) of a real daemon.

Property-based (hypothesis) and corpus-driven: wrong frame counts, non-UTF-8, invalid JSON,
wrong types, lone surrogates, deep nesting, unknown ops, NUL bytes, control characters, and
frames over ``[zmq] max_message_bytes``. Invariants: the daemon never dies; every request under
the transport bound (8 MiB) gets an answer, ``too_large`` over ``max_message_bytes`` (the
generator sends frames from 64 KiB to 4 MiB); a frame over the bound is dropped by libzmq with
the connection (no answer, no memory); after the fuzz a normal ``say`` is spoken.

CI runs a few hundred cases per socket; ``ISHOWTTS_LONG=1 pytest -m long`` runs 10,000.
tests/test_control.py holds the table of known-bad requests and their codes; this file is the
generator on top of it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import zmq
from fuzzgen import REQUEST_CORPUS, control_frames, req_frames
from hypothesis import HealthCheck, given, settings
from robust import LONG, announce_huge_frame, ipc_path, record, rss_kb, wait_disconnected
from support import Daemon, collect_until_terminal, running_daemon

from ishowttsd.daemon.sockets import TRANSPORT_MAX_BYTES

LIMIT = 65536
"""The daemon's [zmq] max_message_bytes (the default)."""
CI_CASES = 300
LONG_CASES = 10_000
ANSWER_TIMEOUT_S = 20.0
LATE_TIMEOUT_S = 90.0
"""For the answers that wait for the job being spoken to end (a loaded 2-core machine is slow)."""

# A reply that can only be the answer to the request just sent (the worker's own events,
# started/done/cancelled/error-with-job/dropped-stale, can arrive at any time in between).
DIRECT = {"queued", "pong", "status", "voices", "ok", "queue", "history", "voices_reloaded"}
LATE = {"voices_reloaded", "done", "cancelled", "dropped", "error"}

FUZZ_SETTINGS = {
    "queue": {"max_jobs": 8, "max_text_chars": 300},
    "piper": {"deterministic": True, "length_scale": 0.2},  # short audio: fuzzed says cost little CPU
}


def _is_direct_answer(ev: dict[str, Any]) -> bool:
    name = ev.get("event")
    if name in DIRECT or "job" not in ev:
        return True  # the reply to an op (new ops' replies too: they carry no job), or an error about it
    return name == "dropped" and ev.get("reason") != "stale"


def _json_frame(frames: list[bytes]) -> dict[str, Any]:
    body = [f for f in frames if f != b""]
    obj: dict[str, Any] = json.loads(body[0])
    return obj


class DealerProbe:
    """Sends one fuzz message, then a ping sentinel; the window up to the sentinel's pong must hold
    an answer to the fuzz message."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.sock = daemon.dealer()
        self.sent = 0
        self.answers = 0
        self.big = 0
        self.biggest = 0
        self.outcomes: dict[str, int] = {}

    def check(self, frames: list[bytes]) -> None:
        assert self.daemon.proc is not None
        size = sum(len(f) for f in frames)
        if size > LIMIT:
            self.big += 1
            self.biggest = max(self.biggest, size)
        token = f"sentinel-{uuid.uuid4().hex[:8]}"
        self.sock.send_multipart(frames)
        self.sock.send(json.dumps({"op": "ping", "req": token}).encode())
        self.sent += 1
        answered = False
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise AssertionError(
                    f"no answer to {frames!r} (daemon exit code {self.daemon.proc.poll()}); "
                    f"log:\n{self.daemon.log_text()[-3000:]}"
                )
            ev = _json_frame(self.sock.recv_multipart())
            if ev.get("req") == token:
                assert ev["event"] == "pong", ev
                break
            if ev.get("event") in ("error", "dropped", "done"):
                key = f"{ev['event']}:{ev.get('code') or ev.get('reason') or ''}"
                self.outcomes[key] = self.outcomes.get(key, 0) + 1
            assert ev.get("code") != "internal_error", f"{frames!r} hit a daemon bug: {ev}"
            answered = answered or _is_direct_answer(ev)
        late = time.monotonic() + LATE_TIMEOUT_S
        resumed = False
        while not answered and time.monotonic() < late:
            # Answered later than the sentinel: reload_voices once the worker has the voices (after
            # the line being spoken; paused in mid-line, after resume), a REQ-style "wait" say when
            # it has been heard (paced output: in real time).
            if self.sock.poll(5000):
                answered = _json_frame(self.sock.recv_multipart()).get("event") in LATE
            elif not resumed:
                self.sock.send(json.dumps({"op": "resume"}).encode())
                resumed = True
        assert answered, f"the request {frames!r} got no answer"
        self.answers += 1
        assert self.daemon.proc.poll() is None


class ReqProbe:
    """A REQ socket: exactly one reply per request, or the socket is stuck (the test fails)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.sock = self._new()
        self.sent = 0

    def _new(self) -> zmq.Socket[Any]:
        s = self.daemon.ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.daemon.control)
        return s

    def check(self, frames: list[bytes]) -> None:
        assert self.daemon.proc is not None
        self.sock.send_multipart(frames)
        self.sent += 1
        if not self.sock.poll(int(ANSWER_TIMEOUT_S * 1000)):
            raise AssertionError(
                f"REQ got no reply to {frames!r} (daemon exit code {self.daemon.proc.poll()}); "
                f"log:\n{self.daemon.log_text()[-3000:]}"
            )
        reply = self.sock.recv_multipart()
        assert len(reply) == 1, reply
        ev = json.loads(reply[0])
        assert isinstance(ev.get("event"), str), ev
        assert ev.get("code") != "internal_error", f"{frames!r} hit a daemon bug: {ev}"
        assert self.daemon.proc.poll() is None

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture(scope="module")
def daemon():  # type: ignore[no-untyped-def]
    with running_daemon(FUZZ_SETTINGS) as d:
        yield d


def _reset(d: Daemon) -> None:
    assert d.request({"op": "resume"})["event"] == "ok"
    assert d.request({"op": "cancel"})["event"] == "ok"


def _say_still_works(d: Daemon) -> None:
    _reset(d)
    s = d.dealer()
    s.send(json.dumps({"op": "say", "text": "Still here after the fuzz."}).encode())
    evs = collect_until_terminal(s, timeout_s=60)
    assert evs[-1]["event"] == "done", evs
    assert evs[-1]["audio_s"] > 0.2


def _fuzz_dealer(d: Daemon, n: int) -> None:
    _reset(d)
    probe = DealerProbe(d)
    rss0 = rss_kb(d.proc.pid)  # type: ignore[union-attr]
    t0 = time.monotonic()
    for frames in REQUEST_CORPUS:
        probe.check(frames)

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(control_frames())
    def run(frames: list[bytes]) -> None:
        probe.check(frames)

    run()
    elapsed = time.monotonic() - t0
    rss1 = rss_kb(d.proc.pid)  # type: ignore[union-attr]
    st = d.request({"op": "status"})
    _say_still_works(d)
    record(
        "fuzz_control_dealer",
        cases=probe.sent,
        answered=probe.answers,
        seconds=round(elapsed, 1),
        bad_messages=st["counters"]["bad_messages"],
        jobs=st["jobs"],
        outcomes=probe.outcomes,
        big_frames=probe.big,
        biggest_frame_bytes=probe.biggest,
        rss_growth_mb=round((rss1 - rss0) / 1024, 1),
    )
    assert probe.answers == probe.sent >= n
    assert probe.big > 0 and probe.outcomes.get("error:too_large", 0) == probe.big, probe.outcomes
    assert st["jobs"]["done"] > 0, st  # the generator did reach the engine
    assert "error:engine_error" not in probe.outcomes, "well-formed text failed in the engine"
    assert "handler failed" not in d.log_text()


def _fuzz_req(d: Daemon, n: int) -> None:
    _reset(d)
    probe = ReqProbe(d)
    t0 = time.monotonic()
    try:
        for frames in REQUEST_CORPUS:
            probe.check([f for f in frames if f != b""] or [b""])

        @settings(
            max_examples=n,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(req_frames())
        def run(frames: list[bytes]) -> None:
            probe.check(frames)

        run()
    finally:
        probe.close()
    record("fuzz_control_req", cases=probe.sent, seconds=round(time.monotonic() - t0, 1))
    _say_still_works(d)
    assert probe.sent >= n


def test_fuzz_control_dealer(daemon: Daemon) -> None:
    _fuzz_dealer(daemon, CI_CASES)


def test_fuzz_control_req(daemon: Daemon) -> None:
    _fuzz_req(daemon, CI_CASES)


@pytest.mark.long
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not LONG, reason="long mode: ISHOWTTS_LONG=1")
def test_fuzz_control_dealer_long(daemon: Daemon) -> None:
    _fuzz_dealer(daemon, LONG_CASES)


@pytest.mark.long
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not LONG, reason="long mode: ISHOWTTS_LONG=1")
def test_fuzz_control_req_long(daemon: Daemon) -> None:
    _fuzz_req(daemon, LONG_CASES)


# -- frames over [zmq] max_message_bytes -------------------------------------------------------------


def test_100mb_frame_is_dropped_without_memory_growth(daemon: Daemon) -> None:
    """A real 100 MB frame (over the 8 MiB transport bound) on DEALER and REQ: libzmq drops the
    connection; RSS barely moves."""
    pid = daemon.proc.pid  # type: ignore[union-attr]
    rss0 = rss_kb(pid)
    big = b"\x00" * (100 << 20)
    for kind in (zmq.DEALER, zmq.REQ):
        s = daemon.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        monitor = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        s.connect(daemon.control)
        s.send(big)
        assert wait_disconnected(monitor), "the daemon did not drop the connection of the oversized frame"
        assert not s.poll(200), "a frame over max_message_bytes was answered"
        s.disable_monitor()
        monitor.close(0)
        s.close(0)
    del big
    rss1 = rss_kb(pid)
    assert daemon.request({"op": "ping"})["event"] == "pong"
    growth_mb = (rss1 - rss0) / 1024
    record(
        "huge_frame_control",
        frame_mb=100,
        rss_before_mb=round(rss0 / 1024, 1),
        rss_growth_mb=round(growth_mb, 1),
    )
    assert growth_mb < 8, f"daemon RSS grew {growth_mb:.1f} MB on a 100 MB frame"


@pytest.mark.parametrize("size", [1 << 30, (1 << 63) - 1])
def test_announced_gigabyte_frame_drops_the_connection(daemon: Daemon, size: int) -> None:
    """Speak ZMTP by hand and announce a 1 GiB (and a 2^63 B) frame: the daemon must hang up at
    the header, before allocating. Nothing of that size is ever allocated on either side."""
    pid = daemon.proc.pid  # type: ignore[union-attr]
    rss0 = rss_kb(pid)
    assert announce_huge_frame(ipc_path(daemon.control), size) == "closed"
    rss1 = rss_kb(pid)
    assert daemon.request({"op": "ping"})["event"] == "pong"
    record("announced_huge_frame_control", frame_bytes=size, rss_growth_mb=round((rss1 - rss0) / 1024, 1))
    assert (rss1 - rss0) / 1024 < 8


@pytest.mark.parametrize("size", [LIMIT + 1, 1 << 20, 4 << 20, TRANSPORT_MAX_BYTES])
def test_frames_over_the_limit_get_too_large_up_to_the_transport_bound(daemon: Daemon, size: int) -> None:
    """Over max_message_bytes and up to the 8 MiB transport bound: an answer naming the limit
    (ishowtts-say used to report "the daemon did not answer" for a 64 KiB line)."""
    for kind in (zmq.DEALER, zmq.REQ):
        s = daemon.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(daemon.control)
        body = json.dumps({"op": "say", "text": "a" * (size - 40), "req": "big"}).encode()
        s.send(body + b" " * (size - len(body)))
        assert s.poll(20000), f"no answer to a {size}-byte request"
        ev = json.loads(s.recv_multipart()[-1])
        assert ev["event"] == "error" and ev["code"] == "too_large", ev
        assert ev["limit"] == LIMIT and ev["size"] == size and str(LIMIT) in ev["reason"], ev
        s.close(0)
    assert daemon.request({"op": "ping"})["event"] == "pong"


def test_a_frame_over_the_transport_bound_drops_the_connection(daemon: Daemon) -> None:
    s = daemon.ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    monitor = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    s.connect(daemon.control)
    s.send(b"x" * (TRANSPORT_MAX_BYTES + 1))
    assert wait_disconnected(monitor)
    assert not s.poll(200)
    s.disable_monitor()
    monitor.close(0)
    s.close(0)
    assert daemon.request({"op": "ping"})["event"] == "pong"


def test_frame_just_under_the_limit_is_answered(daemon: Daemon) -> None:
    limit = 65536
    pad = limit - 200
    frame = json.dumps({"op": "ping", "req": "edge", "pad": "x" * pad}).encode()
    assert len(frame) < limit
    assert daemon.request(frame)["event"] == "pong"
