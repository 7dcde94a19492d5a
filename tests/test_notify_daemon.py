"""sd_notify from the real daemon process: a bound AF_UNIX datagram socket plays systemd.

Faults are injected with the daemon's documented ``[debug]`` knobs (warm-up delay, per-chunk
delay, a hang marker); the engine is the embedded Piper voice, run for real.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import running_daemon, short_tmpdir
from waits import wait_until


class SystemdSide:
    """Receives notify datagrams on a thread (systemd drains its socket too) with arrival times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.t0 = time.monotonic()
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            msg = dict(line.split("=", 1) for line in data.decode("utf-8").split("\n"))
            with self._lock:
                self.raw.append(data)
                self.messages.append((time.monotonic() - self.t0, msg))

    def snapshot(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, pred: Callable[[dict[str, str]], bool], timeout_s: float = 30.0) -> float:
        def match() -> tuple[float, dict[str, str]] | None:
            return next(((t, m) for t, m in self.snapshot() if pred(m)), None)

        found = wait_until(match, timeout_s, "a matching notify message", lambda: self.snapshot()[-8:])
        return found[0]

    def pings(self, since: float = 0.0) -> list[float]:
        return [t for t, m in self.snapshot() if m.get("WATCHDOG") == "1" and t >= since]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[tuple[SystemdSide, Path]]:
    d = short_tmpdir()
    side = SystemdSide(d / "notify.sock")
    yield side, d
    side.close()
    shutil.rmtree(d, ignore_errors=True)


def env_for(side: SystemdSide, watchdog_usec: int) -> dict[str, str]:
    return {"NOTIFY_SOCKET": str(side.path), "WATCHDOG_USEC": str(watchdog_usec)}


def say(d: Any, text: str, job_id: str) -> None:
    s = d.dealer()
    s.send(json.dumps({"op": "say", "text": text, "id": job_id}).encode())


def test_ready_only_after_warmup_then_pings_at_half_watchdog_usec(systemd: tuple[SystemdSide, Path]) -> None:
    side, d = systemd
    overrides = {"debug": {"warmup_delay_s": 1.5}, "watchdog": {"rtf_engines": ["piper"]}}
    with running_daemon(overrides, env=env_for(side, 2_000_000), ready=False, d=d) as daemon:
        t_ready = side.wait_for(lambda m: m.get("READY") == "1", timeout_s=60)
        before = [m for t, m in side.snapshot() if t < t_ready]
        # Warm-up reported progress (and pushed the start timeout out), then the calibration ran,
        # and only after that READY=1; no watchdog ping before READY.
        assert any(m.get("STATUS", "").startswith("debug warm-up delay") for m in before)
        assert any("EXTEND_TIMEOUT_USEC" in m for m in before)
        assert any("calibration" in m.get("STATUS", "") for m in before)
        assert not any("WATCHDOG" in m for m in before)
        assert t_ready >= 1.5
        ready_msg = next(m for t, m in side.snapshot() if m.get("READY") == "1")
        assert ready_msg["STATUS"].startswith("ready: piper")
        # Half of WATCHDOG_USEC = 1 s; the main loop ticks every <= 0.25 s: 4 pings within 5.5 s.
        pings = wait_until(
            lambda: p if len(p := side.pings(since=t_ready)) >= 4 else None,
            5.5,
            "4 watchdog pings after READY",
            lambda: side.pings(since=t_ready),
        )
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.95 <= g < 1.9 for g in gaps), gaps
        assert pings[0] - t_ready < 1.5  # promptly after READY (the loop ticks every <= 0.25 s)
        st = daemon.request({"op": "status"})
        assert st["watchdog"]["phase"] == "running"
        assert st["watchdog"]["baseline"]["s_per_audio_s"] > 0
        assert st["telemetry"] == ({} if not Path("/etc/nv_tegra_release").exists() else st["telemetry"])
        # What a person sees: ishowtts-say --status shows the watchdog and the telemetry.
        p = subprocess.run(
            [sys.executable, "-m", "ishowttsd.cli.say", "--status", "--endpoint", daemon.control],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert p.returncode == 0, p.stderr
        lines = {ln.split(": ", 1)[0]: ln.split(": ", 1)[1] for ln in p.stdout.splitlines() if ": " in ln}
        assert json.loads(lines["watchdog"])["phase"] == "running"
        assert json.loads(lines["telemetry"]) == st["telemetry"]


def test_stuck_worker_stops_pings_and_sigterm_sends_stopping(systemd: tuple[SystemdSide, Path]) -> None:
    side, d = systemd
    overrides = {
        "debug": {"hang_marker": "HANG"},
        "watchdog": {"stall_s": 1.5},
        "daemon": {"drain_timeout_s": 0.5},
    }
    with running_daemon(overrides, env=env_for(side, 1_000_000), d=d) as daemon:
        events = daemon.subscribe(b"event")
        say(daemon, "Hello there. HANG right here.", "stuck")
        events.wait_for(lambda e: e.get("event") == "started" and e.get("job") == "stuck", timeout_s=30)
        t_started = time.monotonic() - side.t0
        side.wait_for(lambda m: m.get("STATUS", "").startswith("worker stalled"), timeout_s=10)
        t_stall = time.monotonic() - side.t0
        time.sleep(3.0)  # no ping for 6 ping intervals: an absence takes a while to show
        # Pings went on while the heartbeat was fresh, then stopped for good.
        assert side.pings(since=t_started - 2.0), "pings before the hang"
        assert side.pings(since=t_stall) == []
        assert daemon.request({"op": "ping"})["event"] == "pong"  # the I/O loop itself is fine
        assert not any(m.get("WATCHDOG") == "trigger" for _, m in side.snapshot())

        daemon.signal(signal.SIGTERM)
        assert daemon.proc is not None and daemon.proc.wait(20) == 0
        side.wait_for(lambda m: m.get("STOPPING") == "1", timeout_s=5)


def test_rtf_drift_sends_watchdog_trigger(systemd: tuple[SystemdSide, Path]) -> None:
    side, d = systemd
    overrides = {
        # After the (undelayed) calibration, every chunk costs 2.5 s more: a GPU gone slow. Piper
        # makes this line's ~2 s of audio in ~0.1 s, so the drift is large even on a loaded CI box.
        "debug": {"chunk_delay_s": 2.5},
        "watchdog": {
            "rtf_engines": ["piper"],  # off for Piper by default: CPU load is not a fault to restart for
            "rtf_factor": 2.5,
            "rtf_window": 1,
            "rtf_jobs": 2,
            "min_audio_s": 0.2,
        },
    }
    with running_daemon(overrides, env=env_for(side, 10_000_000), d=d) as daemon:
        s = daemon.dealer()
        for i in range(3):
            s.send(
                json.dumps({"op": "say", "text": "Thanks for the follow, friend.", "id": f"j{i}"}).encode()
            )
        t_trig = side.wait_for(lambda m: m.get("WATCHDOG") == "trigger", timeout_s=40)
        trig = next(m for _, m in side.snapshot() if m.get("WATCHDOG") == "trigger")
        assert "slower than at warm-up for 2 jobs" in trig["STATUS"]
        st = daemon.request({"op": "status"})
        assert st["watchdog"]["phase"] == "triggered"
        assert st["jobs"]["done"] >= 2
        assert "rtf watchdog trigger" in daemon.log_text()
        time.sleep(1.0)  # two ping intervals, in which no ping may come
        assert side.pings(since=t_trig) == []  # no pings after the trigger
        # Once only, and the trigger's reason stays in STATUS (no later job line replaces it).
        assert sum(1 for _, m in side.snapshot() if m.get("WATCHDOG") == "trigger") == 1


def test_emoji_status_line_arrives_intact(systemd: tuple[SystemdSide, Path]) -> None:
    side, d = systemd
    text = "Thanks 🦄 Ünïcørn for the raid 👋 こんにちは"
    with running_daemon(env=env_for(side, 0), d=d) as daemon:
        events = daemon.subscribe(b"event")
        say(daemon, text, "emoji")
        events.wait_for(lambda e: e.get("event") == "done" and e.get("job") == "emoji", timeout_s=30)
        side.wait_for(lambda m: "STATUS" in m and "Ünïcørn" in m["STATUS"], timeout_s=5)
        raw = [r for r in side.raw if "Ünïcørn".encode() in r]
        assert raw == [f"STATUS=ready; last: say: {text}".encode()]
        # Defaults: no RTF check (and no calibration lines) for the CPU voice.
        wd = daemon.request({"op": "status"})["watchdog"]
        assert wd["rtf_check"] is False and wd["phase"] == "running"
        assert not any("calibration" in m.get("STATUS", "") for _, m in side.snapshot())

        # A chat line: the user's name (with its emoji) is in the STATUS line too.
        bot = daemon.bot()
        user = "💜xX_Ðark_Ünicorn_Xx💜"
        bot.send_multipart([b"chat", json.dumps({"user": user, "text": "hello streamer"}).encode()])
        started = events.wait_for(
            lambda e: e.get("event") == "started" and e.get("user") == user, timeout_s=30
        )
        events.wait_for(lambda e: e.get("event") == "done" and e.get("job") == started["job"], timeout_s=30)
        side.wait_for(lambda m: user in m.get("STATUS", ""), timeout_s=5)
        raw = [r for r in side.raw if user.encode() in r]
        assert raw == [f"STATUS=ready; last: {user}: {started['text']}".encode()]


def test_pause_mid_job_is_not_a_hang(systemd: tuple[SystemdSide, Path]) -> None:
    """A moderator's pause holds the worker between chunks: pings go on (no restart for a pause)."""
    side, d = systemd
    overrides = {"watchdog": {"stall_s": 1.5}, "debug": {"chunk_delay_s": 0.3}}
    with running_daemon(overrides, env=env_for(side, 1_000_000), d=d) as daemon:
        events = daemon.subscribe(b"event")
        say(daemon, "First sentence here. Second sentence there. Third one too.", "paused")
        events.wait_for(lambda e: e.get("event") == "started" and e.get("job") == "paused", timeout_s=30)
        assert daemon.request({"op": "pause"})["event"] != "error"
        t_pause = time.monotonic() - side.t0
        time.sleep(4.0)  # paused well past stall_s: the thing under test
        pings = side.pings(since=t_pause + 1.0)
        assert len(pings) >= 4, pings
        assert not any(m.get("STATUS", "").startswith("worker stalled") for _, m in side.snapshot())
        assert daemon.request({"op": "resume"})["event"] != "error"
        events.wait_for(lambda e: e.get("event") == "done" and e.get("job") == "paused", timeout_s=30)
