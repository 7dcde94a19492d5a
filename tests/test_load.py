"""Bounded load on loopback: 1,000 chat lines/s from four bots (processes of their own) plus two
clients issuing ``status`` and ``say`` on the control socket, against a real daemon speaking with
the embedded voice, chat pipeline and journal on.

Measured: every chat line accounted for (none lost silently), the queue bound respected at every
sample, drops by reason, control latency p50/p99 (status and say), daemon RSS growth. CI runs 2 s;
``ISHOWTTS_LONG=1 pytest -m long tests/test_load.py`` runs the full 10 s.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import uuid
from typing import Any

import pytest
import zmq
from robust import LONG, bot_process, hwm_rss_kb, percentile, record, rss_kb
from support import Daemon, collect_until_terminal, running_daemon

RATE = 1000.0
BOTS = 4
MAX_JOBS = 200
MAX_AUDIO_S = 900.0


class ControlClient(threading.Thread):
    """Issues ``status`` every ~20 ms and a ``say`` every tenth turn, timing each answer."""

    def __init__(self, daemon: Daemon, name: str, until: float) -> None:
        super().__init__(daemon=True, name=name)
        self.sock = daemon.dealer()  # created here, used only by this thread from now on
        self.until = until
        self.latency: dict[str, list[float]] = {"status": [], "say": []}
        self.queue_max = 0
        self.audio_max = 0.0
        self.unanswered = 0
        self.answers: dict[str, int] = {}

    def _request(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        token = uuid.uuid4().hex[:10]
        t0 = time.perf_counter()
        self.sock.send(json.dumps({**obj, "req": token}).encode())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not self.sock.poll(100):
                continue
            ev = json.loads(self.sock.recv_multipart()[0])
            if ev.get("req") == token:
                self.latency[obj["op"]].append(time.perf_counter() - t0)
                return dict(ev)
        self.unanswered += 1
        return None

    def run(self) -> None:
        i = 0
        while time.monotonic() < self.until:
            if i % 10 == 9:
                ev = self._request({"op": "say", "text": f"Client line {i}.", "priority": "message"})
            else:
                ev = self._request({"op": "status"})
                if ev is not None:
                    self.queue_max = max(self.queue_max, ev["queue"]["jobs"])
                    self.audio_max = max(self.audio_max, ev["queue"]["est_audio_s"])
            if ev is not None:
                key = f"{ev['event']}:{ev.get('reason', '')}".rstrip(":")
                self.answers[key] = self.answers.get(key, 0) + 1
            i += 1
            time.sleep(0.02)  # a control client's pace


def _warm_engine(s: zmq.Socket[Any], lines: int) -> None:
    """Speak varied lines first, so the engine's first allocations are not counted as growth under load.

    (Before the Piper session dropped onnxruntime's per-shape memory patterns, its memory stepped up
    ~90 MB over the first ~150 varied lines: that is why the long mode warms up generously.)"""
    for k in range(lines):
        s.send(json.dumps({"op": "say", "text": f"warm {k} " + "word " * (k % 30)}).encode())
        assert collect_until_terminal(s, 60)[-1]["event"] == "done"


def _run_load(seconds: float, speak: bool, warm_lines: int) -> dict[str, Any]:
    settings = {"queue": {"max_jobs": MAX_JOBS, "max_audio_s": MAX_AUDIO_S}}
    if speak:
        settings["piper"] = {"deterministic": True, "length_scale": 0.2}  # type: ignore[assignment]
    with running_daemon(settings) as d:
        pid = d.proc.pid  # type: ignore[union-attr]
        s = d.dealer()
        _warm_engine(s, warm_lines)
        if not speak:  # the I/O side alone: everything accepted waits in the (bounded) queue
            assert d.request({"op": "pause"})["event"] == "ok"
        st0 = d.request({"op": "status"})
        rss0 = rss_kb(pid)

        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        start_at = time.time() + 2.0  # spawned bots import, connect and subscribe first
        procs = [
            ctx.Process(target=bot_process, args=(d.ingest, b, RATE / BOTS, seconds, start_at, out))
            for b in range(BOTS)
        ]
        for p in procs:
            p.start()
        time.sleep(max(0.0, start_at - time.time()))  # bots and clients start together
        until = time.monotonic() + seconds
        clients = [ControlClient(d, f"client{i}", until) for i in range(2)]
        for c in clients:
            c.start()
        rss_samples = []
        while time.monotonic() < until:
            rss_samples.append(rss_kb(pid))
            time.sleep(0.1)  # RSS sampled through the load
        for c in clients:
            c.join(10)
        results = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        sent = sum(n for _, n, _ in results)
        send_s = max(t for _, _, t in results)

        # Every line sent must be accounted for (spoken later, filtered or dropped with a reason).
        t_end = time.monotonic()
        deadline = t_end + 30
        while True:
            st = d.request({"op": "status"})
            chat_in = st["counters"]["chat_in"] - st0["counters"]["chat_in"]
            if chat_in >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        catch_up_s = time.monotonic() - t_end
        rss1 = rss_kb(pid)
        peak = hwm_rss_kb(pid)
        alive = d.proc.poll() is None  # type: ignore[union-attr]

        # Afterwards: the queue is cut, and an ordinary say goes through.
        assert d.request({"op": "cancel"})["event"] == "ok"
        assert d.request({"op": "resume"})["event"] == "ok"
        s.send(json.dumps({"op": "say", "text": "The raid is over."}).encode())
        after = collect_until_terminal(s, 60)[-1]["event"]

    status_lat = [x for c in clients for x in c.latency["status"]]
    say_lat = [x for c in clients for x in c.latency["say"]]
    drops = st.get("chat", {}).get("dropped", {})
    fig: dict[str, Any] = {
        "seconds": seconds,
        "speaking": speak,
        "warm_lines": warm_lines,
        "target_rate": RATE,
        "bots": BOTS,
        "sent": sent,
        "send_s": round(send_s, 2),
        "achieved_rate": round(sent / send_s),
        "chat_in": chat_in,
        "catch_up_s": round(catch_up_s, 2),
        "queue_max_seen": max(c.queue_max for c in clients),
        "queue_limit": MAX_JOBS,
        "est_audio_max_s": max(c.audio_max for c in clients),
        "drops": dict(sorted(drops.items(), key=lambda kv: -kv[1])),
        "queued": st.get("chat", {}).get("queued"),
        "jobs": st["jobs"],
        "control_requests": len(status_lat) + len(say_lat),
        "unanswered": sum(c.unanswered for c in clients),
        "status_p50_ms": round(percentile(status_lat, 50) * 1000, 2),
        "status_p99_ms": round(percentile(status_lat, 99) * 1000, 2),
        "say_p50_ms": round(percentile(say_lat, 50) * 1000, 2) if say_lat else None,
        "say_p99_ms": round(percentile(say_lat, 99) * 1000, 2) if say_lat else None,
        "rss_start_mb": round(rss0 / 1024, 1),
        "rss_end_mb": round(rss1 / 1024, 1),
        "rss_max_sampled_mb": round(max(rss_samples) / 1024, 1),
        "rss_growth_mb": round((max(rss1, *rss_samples) - rss0) / 1024, 1),
        "vm_hwm_mb": round(peak / 1024, 1),
        "alive": alive,
        "say_after": after,
    }
    record(("load_long" if seconds >= 10 else "load_ci") + ("_speaking" if speak else "_paused"), **fig)
    return fig


def _check(fig: dict[str, Any]) -> None:
    assert fig["alive"]
    assert fig["unanswered"] == 0
    assert fig["sent"] >= 0.95 * RATE * fig["seconds"]
    assert fig["chat_in"] == fig["sent"], "chat lines were lost before the daemon counted them"
    assert fig["queue_max_seen"] <= MAX_JOBS
    assert fig["est_audio_max_s"] <= MAX_AUDIO_S
    assert sum(fig["drops"].values()) > 0 and all(isinstance(k, str) and k for k in fig["drops"])
    assert fig["status_p99_ms"] < 500, fig
    assert fig["rss_growth_mb"] < 50, fig
    assert fig["say_after"] == "done"


def test_load_short() -> None:
    """CI: 2 s of raid with the worker paused, so the figures are the I/O side's own (the queue
    fills to its bound and everything else drops with a reason)."""
    _check(_run_load(2.0, speak=False, warm_lines=3))


@pytest.mark.long
@pytest.mark.timeout(900)
@pytest.mark.skipif(not LONG, reason="long mode: ISHOWTTS_LONG=1")
@pytest.mark.parametrize("speak", [False, True], ids=["paused", "speaking"])
def test_load_full(speak: bool) -> None:
    """The full 10 s; speaking, the engine is warmed with varied lines first."""
    _check(_run_load(10.0, speak=speak, warm_lines=50 if speak else 3))


def test_piper_session_keeps_no_per_shape_memory_patterns() -> None:
    """onnxruntime's memory patterns cache a plan per input shape, and every chat line is a new
    shape: with them on, RSS stepped up ~90 MB over 250 varied lines (see docs/RELIABILITY.md)."""
    from ishowttsd.config import engine_sections, parse
    from ishowttsd.engine import create_engine

    engine, _ = create_engine(*engine_sections(parse({"engine": {"kind": "piper"}}, None)))
    engine.load(lambda _line: None)
    session = engine._voice.session  # type: ignore[attr-defined]
    assert session.get_session_options().enable_mem_pattern is False
