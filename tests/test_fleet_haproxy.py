"""A fleet on loopback: Debian's HAProxy in front of two gateway+daemon pairs (Piper engine).

200 OpenAI-style speech requests from 10 concurrent clients while one pair is SIGKILLed and
restarted in the middle: every request either succeeds or ends in a clean error the client can
retry (an HTTP error status or a refused/reset connection), none hangs past its timeout, and the
split between the two pairs is reported (HAProxy's own per-server counters).

HAProxy runs from ``etc/haproxy-fleet.cfg`` (docs/FLEET.md) with the addresses substituted, so the
documented configuration is the tested one.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import io
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import REPO, Daemon, base_settings, short_tmpdir
from waits import wait_until

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="HAProxy is not installed (install.sh --dev installs Debian's haproxy as root)"
)

TOKEN = "fleet-test-token-0123456789abcdef"
REQUESTS = 200
CLIENTS = 10
TIMEOUT_S = 30.0
THINK_S = 0.4
"""Seconds each client waits between its requests."""
KILL_AFTER_S = 3.0
RESTART_AFTER_S = 1.5
WEB_MAIN = "import sys; from ishowttsd.web.cli import main; sys.exit(main(sys.argv[1:]))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=1.0).status_code == 200
        return False

    wait_until(healthy, timeout_s, f"{url} to be healthy", lambda: log.read_text()[-3000:], 0.1)


class Box:
    """One appliance: a daemon and its web gateway, sharing the fleet's token."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.port = _free_port()
        token = self.dir / "token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        settings = base_settings(self.dir)
        settings["web"] = {
            "listen": f"127.0.0.1:{self.port}",
            "token_file": str(token),
            "overlay_key_file": str(self.dir / "overlay.key"),
            # Behind the balancer every request comes from its address (docs/FLEET.md).
            "rate_per_min": 100_000,
            "rate_burst": 1_000,
        }
        self.daemon = Daemon(self.dir, settings)
        self.web_log = self.dir / "web.log"
        self.web: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.daemon.start()
        with open(self.web_log, "ab") as log:
            self.web = subprocess.Popen(
                [sys.executable, "-c", WEB_MAIN, "--config", str(self.daemon.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_healthy(self) -> None:
        assert self.web is not None
        self.daemon.wait_ready()
        _wait_http(f"http://127.0.0.1:{self.port}/healthz", 60, self.web, self.web_log)

    def kill(self) -> None:
        for proc in (self.web, self.daemon.proc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

    def close(self) -> None:
        if self.web is not None and self.web.poll() is None:
            self.web.terminate()
            try:
                self.web.wait(10)
            except subprocess.TimeoutExpired:
                self.web.kill()
        self.daemon.close()


class HAProxy:
    def __init__(self, d: Path, boxes: list[Box]) -> None:
        self.port = _free_port()
        self.stats = d / "haproxy.sock"
        cfg = (REPO / "etc" / "haproxy-fleet.cfg").read_text()
        cfg = cfg.replace("bind 127.0.0.1:8700", f"bind 127.0.0.1:{self.port}")
        cfg = cfg.replace("server box-a 192.168.1.21:8765", f"server box-a 127.0.0.1:{boxes[0].port}")
        cfg = cfg.replace("server box-b 192.168.1.22:8765", f"server box-b 127.0.0.1:{boxes[1].port}")
        assert "192.168" not in cfg, "the documented config changed shape: update the substitutions"
        cfg = cfg.replace("global\n", f"global\n    stats socket {self.stats} mode 600 level admin\n", 1)
        self.cfg = d / "haproxy.cfg"
        self.cfg.write_text(cfg)
        self.log = d / "haproxy.log"
        check = subprocess.run(
            [HAPROXY or "haproxy", "-c", "-f", str(self.cfg)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [HAPROXY or "haproxy", "-db", "-f", str(self.cfg)], stdout=log, stderr=log
            )

    def server_stats(self) -> dict[str, dict[str, str]]:
        """HAProxy's ``show stat`` for the backend's servers (``stot``: sessions served, ``status``)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "gateways" and r["svname"].startswith("box-")}

    def wait_up(self, names: set[str], timeout_s: float = 30) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError):
                st = self.server_stats()
                return all(st.get(n, {}).get("status", "").startswith("UP") for n in names)
            return False

        wait_until(up, timeout_s, f"backends {sorted(names)} UP", self.server_stats, 0.2)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture()
def fleet() -> Iterator[tuple[list[Box], HAProxy]]:
    root = short_tmpdir()
    boxes = [Box("a", root), Box("b", root)]
    proxy: HAProxy | None = None
    try:
        for b in boxes:
            b.start()
        for b in boxes:
            b.wait_healthy()
        proxy = HAProxy(root, boxes)
        proxy.wait_up({"box-a", "box-b"})
        yield boxes, proxy
    finally:
        if proxy is not None:
            proxy.close()
        for b in boxes:
            b.close()
        shutil.rmtree(root, ignore_errors=True)


RETRIES_429 = 2
"""Like the official ``openai`` client (``max_retries=2``): a 429 is retried after its
``Retry-After``. With one box down the survivor gets all ten clients against its 8 speech slots
([web] max_speech_requests), and refusing the excess with 429 is its protection working."""


def _speak(client: httpx.Client, url: str, i: int) -> tuple[str, Any, float]:
    """One request: ("ok", bytes, t0) | ("error", status or exception name, t0) | ("hang", None, t0)."""
    t0 = time.monotonic()
    for attempt in range(RETRIES_429 + 1):
        try:
            r = client.post(
                url,
                json={
                    "model": "tts-1",
                    "input": f"Request number {i} is done.",
                    "voice": "joe",
                    "response_format": "wav",
                },
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=TIMEOUT_S,
            )
        except httpx.TimeoutException:
            return "hang", None, t0
        except httpx.TransportError as e:  # refused, reset, cut off mid-body: retryable by the client
            return "error", type(e).__name__, t0
        if r.status_code != 429 or attempt == RETRIES_429:
            break
        retry_after = r.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit(), r.headers  # a 429 says when to retry
        time.sleep(float(retry_after))  # the client does as it is told
    if r.status_code == 200 and r.content[:4] == b"RIFF" and len(r.content) > 10_000:
        return "ok", len(r.content), t0
    return "error", r.status_code, t0


def _client(client: httpx.Client, url: str, c: int) -> list[tuple[str, Any, float]]:
    out = []
    for i in range(c, REQUESTS, CLIENTS):
        out.append(_speak(client, url, i))
        time.sleep(THINK_S)  # a client's think time: the traffic spans the kill and restart
    return out


def test_haproxy_spreads_requests_and_survives_a_box_dying(fleet: tuple[list[Box], HAProxy]) -> None:
    boxes, proxy = fleet
    url = f"http://127.0.0.1:{proxy.port}/v1/audio/speech"
    outcomes: list[tuple[str, Any, float]] = []
    t_kill = 0.0
    with httpx.Client() as client, cf.ThreadPoolExecutor(CLIENTS) as pool:
        # Each client sends its share one request at a time with a short think time, so the
        # traffic spans the kill, the restart and the box's return to the pool.
        futures = [pool.submit(_client, client, url, c) for c in range(CLIENTS)]
        time.sleep(KILL_AFTER_S)  # the kill lands mid-traffic
        boxes[0].kill()
        t_kill = time.monotonic()
        restart = threading.Timer(RESTART_AFTER_S, boxes[0].start)
        restart.start()
        for fut in cf.as_completed(futures, timeout=REQUESTS * TIMEOUT_S):
            outcomes.extend(fut.result())
        restart.join()
        assert min(t for _, _, t in outcomes) < t_kill < max(t for _, _, t in outcomes), "kill not mid-run"
    hangs = [round(t0 - t_kill, 1) for kind, _, t0 in outcomes if kind == "hang"]
    kinds = Counter(kind for kind, _, _ in outcomes)
    stats = proxy.server_stats()
    served = {name: int(row["stot"]) for name, row in stats.items()}
    errors = Counter(str(detail) for kind, detail, _ in outcomes if kind == "error")
    print(f"fleet: {dict(kinds)}; errors {dict(errors)}; served per box {served}")
    assert kinds["hang"] == 0, f"{kinds['hang']} hung, started at {hangs} s from the kill"
    assert kinds["ok"] + kinds["error"] == REQUESTS
    # Most requests succeed: the balancer retries what could not reach the dead box.
    assert kinds["ok"] >= REQUESTS * 0.9, (kinds, errors)
    assert all(isinstance(d, str) or d in (429, 502, 503, 504) for k, d, _ in outcomes if k == "error"), (
        errors
    )
    # Both boxes took a real share.
    assert min(served.values()) >= REQUESTS * 0.1, served
    boxes[0].wait_healthy()
    proxy.wait_up({"box-a", "box-b"})


def test_the_documented_config_is_valid() -> None:
    tmp = short_tmpdir()
    try:
        cfg = tmp / "h.cfg"
        cfg.write_text((REPO / "etc" / "haproxy-fleet.cfg").read_text())
        p = subprocess.run([HAPROXY or "haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
