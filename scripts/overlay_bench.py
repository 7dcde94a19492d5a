"""Overlay benchmark (numbers for the notes, not a timed test). Run from the checkout:

    PYTHONPATH=$PWD .venv/bin/python scripts/overlay_bench.py [--lines 50] [--part latency,ping,rss]

- latency: daemon PCM publish (a SUB beside the gateway stamps each job's first frame) → the
  first sample of that job rendered by the overlay's AudioWorklet in headless Chromium (the
  worklet stamps it with Date.now()); p50/p99 over ``--lines`` lines on loopback.
- ping: the daemon's control ``ping`` round trip (p50/p99) while lines play, with no overlay and
  with 20 overlay WebSockets connected and reading.
- rss: the gateway's RSS while a WebSocket client that never reads is connected and the daemon
  (unpaced, so audio comes as fast as it is made) speaks minutes of audio.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from tests.overlay_support import Gateway, chromium, wait_js
from tests.support import Daemon, running_daemon


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


_STAMPER = """
import json, sys, time, zmq
s = zmq.Context().socket(zmq.SUB)
s.setsockopt(zmq.SUBSCRIBE, b"pcm/")
s.setsockopt(zmq.SUBSCRIBE, b"event")
s.connect(sys.argv[1])
seen = set()
while True:
    frames = s.recv_multipart()
    t = time.time() * 1000
    if frames[0] == b"event":
        ev = json.loads(frames[1])
        if ev.get("event") == "done":
            print("done", ev["job"], t, flush=True)
        continue
    job = json.loads(frames[1])["job"]
    if job not in seen:
        seen.add(job)
        print("first", job, t, flush=True)
"""


class FirstFrames:
    """Stamps (time.time(), ms) the first PCM frame of each job on the daemon's PUB, in a process of
    its own (a thread here would wait for the GIL behind the browser driver and stamp late)."""

    def __init__(self, d: Daemon) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _STAMPER, d.pcm_endpoint], stdout=subprocess.PIPE, text=True
        )
        self.first: dict[str, float] = {}
        self.done: dict[str, float] = {}

    def stop(self) -> None:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        for line in out.splitlines():
            kind, job, t = line.split()
            (self.first if kind == "first" else self.done)[job] = float(t)


def say_and_wait(d: Daemon, dealer: Any, text: str) -> str:
    dealer.send(json.dumps({"op": "say", "text": text}).encode())
    job = None
    while True:
        ev = json.loads(dealer.recv_multipart()[0])
        job = job or ev.get("job")
        if ev["event"] in ("done", "cancelled", "error", "dropped"):
            return str(job)


def latency(d: Daemon, gw: Gateway, lines: int) -> dict[str, Any]:
    ff = FirstFrames(d)
    driver = chromium()
    try:
        driver.get(gw.overlay_url())
        wait_js(driver, "window.__overlay && window.__overlay.connected")
        time.sleep(0.5)
        dealer = d.dealer()
        say_and_wait(d, dealer, "Warming up the page.")  # creates the AudioContext
        jobs = [say_and_wait(d, dealer, f"Line number {i}, short and sweet.") for i in range(lines)]
        time.sleep(1.0)
        log = driver.execute_script("return window.__overlay.log")
        starts = {e["job"]: e["wall"] for e in log if e.get("type") == "start"}
        ends = {e["job"]: e["wall"] for e in log if e.get("type") == "end"}
    finally:
        driver.quit()
        ff.stop()
    lat = [starts[j] - ff.first[j] for j in jobs if j in starts and j in ff.first]
    # "done means heard": the page plays a line's last sample this long after the daemon's done
    heard = [ends[j] - ff.done[j] for j in jobs if j in ends and j in ff.done]
    return {
        "lines": len(lat),
        "p50_ms": round(pct(lat, 50), 1),
        "p99_ms": round(pct(lat, 99), 1),
        "min_ms": round(min(lat), 1),
        "max_ms": round(max(lat), 1),
        "page_end_after_done_p50_ms": round(pct(heard, 50), 1),
        "page_end_after_done_p99_ms": round(pct(heard, 99), 1),
    }


def pings(d: Daemon, seconds: float) -> list[float]:
    """Ping the daemon every 20 ms for ``seconds`` while it speaks; round trips in ms."""
    dealer = d.dealer()
    talker = d.dealer()
    rtt: list[float] = []
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        if n % 50 == 0:
            talker.send(
                json.dumps({"op": "say", "text": f"Background line {n}, to keep audio flowing."}).encode()
            )
        t0 = time.perf_counter()
        dealer.send(b'{"op": "ping"}')
        dealer.recv_multipart()
        rtt.append((time.perf_counter() - t0) * 1000)
        n += 1
        time.sleep(0.02)
        while talker.poll(0):
            talker.recv_multipart()
    d.request({"op": "cancel"})
    return rtt


async def _readers(url: str, n: int, stop: threading.Event, counts: list[int]) -> None:
    import websockets

    async def one(i: int) -> None:
        async with websockets.connect(url, max_size=None) as ws:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), 0.5)
                    counts[i] += 1
                except TimeoutError:
                    pass

    await asyncio.gather(*(one(i) for i in range(n)))


def ping_with_overlays(d: Daemon, gw: Gateway, seconds: float, n: int = 20) -> dict[str, Any]:
    quiet = pings(d, seconds)
    time.sleep(1.0)
    stop = threading.Event()
    counts = [0] * n
    url = f"ws://127.0.0.1:{gw.port}/overlay/ws?key={gw.key}"
    t = threading.Thread(target=lambda: asyncio.run(_readers(url, n, stop, counts)), daemon=True)
    t.start()
    time.sleep(2.0)
    busy = pings(d, seconds)
    stop.set()
    t.join(5)
    return {
        "pings": len(quiet),
        "no_overlay_p50_ms": round(pct(quiet, 50), 3),
        "no_overlay_p99_ms": round(pct(quiet, 99), 3),
        f"{n}_overlays_p50_ms": round(pct(busy, 50), 3),
        f"{n}_overlays_p99_ms": round(pct(busy, 99), 3),
        "messages_per_overlay": sorted(counts)[n // 2],
    }


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stuck_client(port: int, key: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    k = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /overlay/ws?key={key} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {k}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head, head
    return s


def rss(seconds: float, clients: int = 5) -> dict[str, Any]:
    """Gateway RSS, sampled every 0.2 s, while ``clients`` WebSockets that never read are connected
    and the (unpaced) daemon speaks for ``seconds``."""
    with running_daemon({"audio": {"sinks": ["pcm"], "pace": "off"}}) as d:
        gw = Gateway(d)
        gw.start()
        try:
            assert gw.proc is not None
            pid = gw.proc.pid
            time.sleep(1.0)
            base = rss_kb(pid)
            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((time.monotonic(), rss_kb(pid)))
                    time.sleep(0.2)

            threading.Thread(target=sample, daemon=True).start()
            stuck = [stuck_client(gw.port, gw.key) for _ in range(clients)]
            t0 = time.monotonic()
            talker = d.dealer()
            text = "This is a rather long line of chat, spoken again and again to fill the pipe. " * 2
            audio_s = 0.0
            sent = 0
            while time.monotonic() - t0 < seconds:
                if sent < 4:  # keep a few lines queued
                    talker.send(json.dumps({"op": "say", "text": text}).encode())
                    sent += 1
                if talker.poll(100):
                    ev = json.loads(talker.recv_multipart()[0])
                    if ev["event"] in ("done", "error", "cancelled", "dropped"):
                        audio_s += float(ev.get("audio_s", 0))
                        sent -= 1
            stop.set()
            d.request({"op": "cancel"})
            # what each stuck client's kernel buffer holds, and whether the gateway closed it
            held, closed = [], 0
            for c in stuck:
                c.setblocking(False)
                n = 0
                try:
                    while True:
                        b = c.recv(1 << 16)
                        if not b:
                            closed += 1
                            break
                        n += len(b)
                except BlockingIOError:
                    pass
                except ConnectionResetError:  # the gateway aborted it
                    closed += 1
                held.append(n)
                c.close()
            time.sleep(0.5)
            lines = gw.log.read_text().splitlines()
            log = [ln for ln in lines if "overlay left" in ln or "not reading" in ln]
            peak = max(r for _, r in samples)
            return {
                "stuck_clients": clients,
                "seconds": seconds,
                "audio_s_pushed": round(audio_s, 1),
                "pcm_mb_pushed": round(audio_s * 22050 * 2 / 1e6, 1),
                "rss_before_kb": base,
                "rss_peak_kb": peak,
                "rss_end_kb": samples[-1][1],
                "rss_every_5s_kb": [r for i, (_, r) in enumerate(samples) if i % 25 == 0],
                "closed_by_gateway": closed,
                "bytes_in_client_buffers": held,
                "gateway_log": log[-clients:],
            }
        finally:
            gw.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lines", type=int, default=50)
    p.add_argument("--part", default="latency,ping,rss")
    p.add_argument("--ping-seconds", type=float, default=20.0)
    p.add_argument("--rss-seconds", type=float, default=60.0)
    a = p.parse_args()
    out: dict[str, Any] = {}
    parts = a.part.split(",")
    if "latency" in parts or "ping" in parts:
        with running_daemon({"audio": {"sinks": ["pcm"], "pace": "on"}}) as d:
            gw = Gateway(d)
            gw.start()
            try:
                if "latency" in parts:
                    out["latency"] = latency(d, gw, a.lines)
                    print(json.dumps(out["latency"]), flush=True)
                if "ping" in parts:
                    out["ping"] = ping_with_overlays(d, gw, a.ping_seconds)
                    print(json.dumps(out["ping"]), flush=True)
            finally:
                gw.stop()
    if "rss" in parts:
        out["rss"] = rss(a.rss_seconds)
        print(json.dumps(out["rss"]), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
