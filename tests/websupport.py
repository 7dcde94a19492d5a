"""Test support for the web gateway: run the real ``ishowtts-web`` as a subprocess next to a real
daemon (tests/support.py), on a free loopback port, with its own settings file and secrets."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tomlkit

from tests.support import Daemon, deep_merge
from tests.waits import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    overlay_key: str
    log: Path
    config: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def gateway_settings(daemon: Daemon, web: Mapping[str, Any] | None = None) -> dict[str, Any]:
    d = daemon.dir
    base = {
        "daemon": {"state_dir": str(d / "state"), "log_level": "info"},
        "zmq": dict(daemon.settings["zmq"]),
        "web": {
            "listen": f"127.0.0.1:{free_port()}",
            "token_file": str(d / "web" / "token"),
            "overlay_key_file": str(d / "web" / "overlay.key"),
        },
    }
    return deep_merge(base, {"web": dict(web or {})})


@contextlib.contextmanager
def running_gateway(
    daemon: Daemon, web: Mapping[str, Any] | None = None, wait_s: float = 30.0
) -> Iterator[Gateway]:
    settings = gateway_settings(daemon, web)
    config = daemon.dir / f"web-{settings['web']['listen'].rsplit(':', 1)[1]}.toml"
    config.write_text(tomlkit.dumps(settings))
    log = config.with_suffix(".log")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ishowttsd.web.cli", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    w = settings["web"]
    url = f"http://{w['listen']}"
    gw = Gateway(proc, url, "", "", log, config)
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"ishowtts-web exited {proc.returncode}:\n{gw.log_text()[-3000:]}")
            try:
                httpx.get(url + "/healthz", timeout=1.0)
            except httpx.TransportError:
                return False
            return True

        wait_until(listening, wait_s, "ishowtts-web to listen", lambda: gw.log_text()[-3000:], 0.1)
        gw.token = Path(w["token_file"]).read_text().strip()
        gw.overlay_key = Path(w["overlay_key_file"]).read_text().strip()
        yield gw
    finally:
        gw.stop()


_A = ["red", "green", "blue", "yellow", "purple", "orange", "silver", "golden"]
_B = ["cats", "dogs", "owls", "foxes", "bears", "frogs", "ducks", "wolves"]
_C = ["dance", "sing", "jump", "swim", "read", "cook", "paint", "climb"]
_D = ["today", "tonight", "slowly", "quickly", "quietly", "loudly", "happily", "often"]


def chat_lines(n: int) -> list[str]:
    """``n`` different chat lines, different enough not to be taken for spam copies."""
    out = []
    for i in range(n):
        a, b, c, d = _A[i % 8], _B[(i // 8) % 8], _C[(i // 64) % 8], _D[(i * 3) % 8]
        out.append(f"the {a} {b} {c} {d}")
    return out
