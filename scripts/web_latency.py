#!/usr/bin/env python3
"""API request → first response byte of ``POST /v1/audio/speech``, against the engine's own time
to first audio.

Starts a daemon and an ``ishowtts-web`` of this checkout in a temp dir (ipc sockets, a free
loopback port), warms them up, then for each of ``--n`` lines, alternately:

- **direct**: the daemon's control socket (``DaemonClient.say(play=False)``): request → first PCM
  frame at the client, and the daemon's own ``ttfa_s`` from the ``done`` event;
- **http**: ``POST /v1/audio/speech`` (stream, ``--format``): request → first body byte, and the
  whole response.

and prints p50/p90/p99 of each, and ``http_first_byte - direct_first_frame`` (what the gateway
adds, unpaired: engine noise included), and per request ``gateway_added``: the first byte's time
minus that request's own wait for its first audio (the gateway's ``Server-Timing``): what HTTP,
JSON, auth, the readiness ping, PyAV's first packet and uvicorn add.

    scripts/web_latency.py                                     # Piper (the embedded voice), CPU
    scripts/web_latency.py --daemon-config /tmp/tiny/f5.toml   # F5 (ishowtts-models tiny DIR writes it)
    scripts/web_latency.py --daemon-config gpu.toml --n 200    # the full-size F5 engine on a GPU

``--daemon-config``: a TOML file for the daemon (engine, [f5], [[voices]]); its ``[zmq]``,
``[daemon] state_dir``/``cache_dir`` (unless set) and ``[audio]`` are replaced for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import tomlkit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ishowttsd.client.aio import DaemonClient, wait_ready  # noqa: E402

LINES = [
    "Thanks for the follow, welcome to the stream!",
    "That was an amazing play, let's go!",
    "Hello chat, how is everyone doing today?",
    "Don't forget to hydrate and stretch.",
    "Can you do the voice again please?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(xs, 50) * 1000, 2),
        "p90_ms": round(pct(xs, 90) * 1000, 2),
        "p99_ms": round(pct(xs, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(xs) * 1000, 2),
    }


def write_configs(d: Path, base: dict[str, Any]) -> tuple[Path, Path, dict[str, Any]]:
    doc = dict(base)
    daemon = dict(doc.get("daemon", {}))
    daemon.setdefault("state_dir", str(d / "state"))
    daemon.setdefault("cache_dir", str(d / "cache"))
    daemon["log_level"] = "warning"
    doc["daemon"] = daemon
    doc["zmq"] = {
        "control": f"ipc://{d}/control.sock",
        "ingest": f"ipc://{d}/ingest.sock",
        "pcm": f"ipc://{d}/pcm.sock",
    }
    doc["audio"] = {"sinks": ["pcm"], "pace": "off"}  # nothing plays: the API job is private anyway
    doc["web"] = {
        "listen": f"127.0.0.1:{free_port()}",
        "token_file": str(d / "web" / "token"),
        "overlay_key_file": str(d / "web" / "overlay.key"),
        "rate_per_min": 0,
    }
    cfg = d / "ishowtts.toml"
    cfg.write_text(tomlkit.dumps(doc))
    return cfg, cfg, doc


async def measure(control: str, url: str, token: str, n: int, fmt: str) -> dict[str, Any]:
    direct_first: list[float] = []
    engine_ttfa: list[float] = []
    http_first: list[float] = []
    http_total: list[float] = []
    gateway_added: list[float] = []
    gateway_prep: list[float] = []
    auth = {"Authorization": f"Bearer {token}"}
    async with DaemonClient(control, timeout=120) as daemon, httpx.AsyncClient(timeout=120) as http:
        if not await wait_ready(daemon, 600):
            raise SystemExit("the daemon did not become ready")
        for i in range(-3, n):  # three warm-up rounds, not counted
            line = LINES[i % len(LINES)]
            t0 = time.perf_counter()
            async with daemon.say(line, play=False) as speech:
                await speech.accepted()
                await anext(speech)
                t_first = time.perf_counter() - t0
                async for _ in speech:
                    pass
            body = {"model": "tts-1", "input": line, "voice": "alloy", "response_format": fmt}
            t1 = time.perf_counter()
            first = None
            async with http.stream("POST", url + "/v1/audio/speech", json=body, headers=auth) as r:
                if r.status_code != 200:
                    raise SystemExit(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
                timing = _server_timing(r.headers.get("server-timing", ""))
                async for chunk in r.aiter_raw():
                    if first is None and chunk:
                        first = time.perf_counter() - t1
            total = time.perf_counter() - t1
            if i < 0 or first is None:
                continue
            direct_first.append(t_first)
            assert speech.result is not None
            engine_ttfa.append(float(speech.result.get("ttfa_s", 0.0)))
            http_first.append(first)
            http_total.append(total)
            # The same request's wait for its first audio, as the gateway measured it: the rest of
            # the first byte's time is the gateway's own (HTTP, JSON, auth, ping, PyAV, uvicorn).
            gateway_added.append(first - timing["first_audio"])
            gateway_prep.append(timing["prep"])
    overhead = [h - d for h, d in zip(http_first, direct_first, strict=True)]
    return {
        "engine_ttfa": summary(engine_ttfa),
        "direct_first_frame": summary(direct_first),
        "http_first_byte": summary(http_first),
        "http_total": summary(http_total),
        "http_minus_direct": summary(overhead),
        "gateway_added": summary(gateway_added),
        "gateway_prep": summary(gateway_prep),
    }


def _server_timing(value: str) -> dict[str, float]:
    """``prep;dur=1.2, first_audio;dur=30.5`` -> seconds by name."""
    out = {}
    for part in value.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur) / 1000
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--daemon-config", type=Path, help="TOML for the daemon (default: Piper, the embedded voice)"
    )
    p.add_argument("--n", type=int, default=50, help="measured requests of each kind (default 50)")
    p.add_argument("--format", default="pcm", help="response_format (default pcm)")
    p.add_argument("--json", type=Path, help="also append the result as a JSON line to this file")
    args = p.parse_args()
    base: dict[str, Any] = {"engine": {"kind": "piper"}, "piper": {"deterministic": True}}
    if args.daemon_config:
        base = tomlkit.parse(args.daemon_config.read_text()).unwrap()
    d = Path(tempfile.mkdtemp(prefix="wl-", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cfg, _, doc = write_configs(d, base)
        # This checkout first, then whatever the caller's PYTHONPATH holds (wheels carried to a GPU box).
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
        for module in ("ishowttsd.daemon", "ishowttsd.web.cli"):
            log = open(d / f"{module}.log", "wb")  # noqa: SIM115 (closed with the process)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", module, "--config", str(cfg)], stdout=log, stderr=log, env=env
                )
            )
        url = f"http://{doc['web']['listen']}"
        token_file = d / "web" / "token"
        deadline = time.monotonic() + 120
        while not token_file.exists() or not _listening(url):
            if time.monotonic() > deadline or any(pr.poll() is not None for pr in procs):
                raise SystemExit(f"startup failed; logs in {d}")
            time.sleep(0.2)
        result = asyncio.run(
            measure(doc["zmq"]["control"], url, token_file.read_text().strip(), args.n, args.format)
        )
        result.update(
            engine=doc.get("engine", {}).get("kind", "auto"),
            format=args.format,
            n=args.n,
            host=platform.node(),
            cpus=os.cpu_count(),
            load_1min=round(os.getloadavg()[0], 2),
            when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")
        return 0
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            try:
                pr.wait(15)
            except subprocess.TimeoutExpired:
                pr.kill()
        shutil.rmtree(d, ignore_errors=True)


def _listening(url: str) -> bool:
    try:
        httpx.get(url + "/healthz", timeout=1.0)
        return True
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
