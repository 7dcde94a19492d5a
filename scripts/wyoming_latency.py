#!/usr/bin/env python3
"""Time to first audio over Wyoming vs the daemon's own time to first audio.

Starts a daemon and ``ishowtts-wyoming``, and for each of N lines, one after another:
  - direct_ttfa_ms:  the same line asked of the daemon directly (``say`` ``play: false`` over a
                     DEALER): request sent → first PCM frame received;
  - daemon_ttfa_ms:  that job's own ``ttfa_s`` (from its ``done`` event): synthesis start → first chunk;
  - wyoming_ttfa_ms: ``synthesize`` written by the wyoming package's client → first ``audio-chunk`` read.
hop_ms = wyoming − direct is what the Wyoming server adds (its framing, asyncio, one more process).

    python scripts/wyoming_latency.py                       # Piper, a throwaway daemon
    python scripts/wyoming_latency.py --config my.toml      # e.g. [engine] kind = "f5" on a GPU

Prints one JSON object (p50/p90/max of each, and the hop); --out FILE writes it too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomlkit
import zmq
from wyoming.audio import AudioChunk, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize

from ishowttsd.client.aio import DaemonClient

REPO = Path(__file__).resolve().parents[1]
LINES = [
    "Thanks for the follow, welcome to the stream!",
    "The garage door has been open for ten minutes.",
    "Good morning, it is seven degrees outside.",
    "Someone is at the front door.",
    "Dinner is ready in the kitchen.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def _direct(client: DaemonClient, text: str) -> tuple[float, float]:
    """The same speech asked of the daemon directly: (first PCM frame seen by the client, ms;
    the daemon's own ``ttfa_s``, ms)."""
    t0 = time.perf_counter()
    first = float("nan")
    async with client.say(text, play=False) as speech:
        async for frame in speech:
            if frame.samples and first != first:
                first = (time.perf_counter() - t0) * 1000
    assert speech.result is not None
    return first, float(speech.result["ttfa_s"]) * 1000


async def _measure(port: int, n: int, control: str) -> list[dict[str, Any]]:
    rows = []
    async with DaemonClient(control) as daemon, AsyncTcpClient("127.0.0.1", port) as client:
        for i in range(n):
            text = LINES[i % len(LINES)]
            direct_ms, daemon_ms = await _direct(daemon, text)
            t0 = time.perf_counter()
            await client.write_event(Synthesize(text=text).event())
            first = float("nan")
            while True:
                ev = await client.read_event()
                assert ev is not None
                if AudioChunk.is_type(ev.type) and first != first:
                    first = (time.perf_counter() - t0) * 1000
                if AudioStop.is_type(ev.type) or ev.type == "error":
                    break
            rows.append(
                {
                    "text": text,
                    "wyoming_ttfa_ms": first,
                    "direct_ttfa_ms": direct_ms,
                    "daemon_ttfa_ms": daemon_ms,
                }
            )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="a daemon config to start (default: Piper in a temp dir)")
    p.add_argument("-n", type=int, default=30, help="requests (default 30)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    d = Path(tempfile.mkdtemp(prefix="itt-wy-", dir="/tmp"))
    if args.config:
        cfg = args.config
        settings = tomlkit.parse(cfg.read_text()).unwrap()
    else:
        settings = {
            "daemon": {"state_dir": str(d / "state"), "cache_dir": str(d / "cache")},
            "zmq": {k: f"ipc://{d}/{k}.sock" for k in ("control", "ingest", "pcm")},
            "engine": {"kind": "piper"},
            "audio": {"sinks": ["pcm"], "pace": "off"},
        }
        cfg = d / "ishowtts.toml"
        cfg.write_text(tomlkit.dumps(settings))
    daemon = subprocess.Popen([sys.executable, "-m", "ishowttsd.daemon", "--config", str(cfg)])
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ishowttsd.wyoming_server",
            "--config",
            str(cfg),
            "--uri",
            f"tcp://127.0.0.1:{port}",
        ]
    )
    try:
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(settings["zmq"]["control"])
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            dealer.send(b'{"op": "ping"}')
            if dealer.poll(1000) and json.loads(dealer.recv_multipart()[0]).get("ready"):
                break
        dealer.close(0)
        ctx.term()
        asyncio.run(_measure(port, 2, settings["zmq"]["control"]))  # warm the path
        rows = asyncio.run(_measure(port, args.n, settings["zmq"]["control"]))
    finally:
        server.terminate()
        daemon.terminate()
        server.wait()
        daemon.wait()

    def summary(key: str) -> dict[str, float]:
        v = [r[key] for r in rows]
        return {"p50": _pct(v, 0.5), "p90": _pct(v, 0.9), "max": max(v)}

    for r in rows:
        r["hop_ms"] = r["wyoming_ttfa_ms"] - r["direct_ttfa_ms"]
    out = {
        "engine": settings.get("engine", {}).get("kind", "piper"),
        "n": len(rows),
        "wyoming_ttfa_ms": summary("wyoming_ttfa_ms"),
        "direct_ttfa_ms": summary("direct_ttfa_ms"),
        "daemon_ttfa_ms": summary("daemon_ttfa_ms"),
        "hop_ms": {**summary("hop_ms"), "mean": statistics.fmean(r["hop_ms"] for r in rows)},
    }
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
