"""Test support: run the real daemon as a subprocess on ipc sockets in a temp dir, and talk to it.

Nothing here stands in for the product: the daemon, its engine and ZeroMQ run for real.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomlkit
import zmq

try:  # imported both as ``support`` (beside the tests) and as ``tests.support``
    from waits import wait_until
except ImportError:  # pragma: no cover
    from tests.waits import wait_until

REPO = Path(__file__).resolve().parent.parent


def alsa_file_env(d: Path, target: Path | str) -> dict[str, str]:
    """Point ALSA's default device at a raw file (the file plugin over the null device), so what
    the daemon plays can be read back; the file is recreated each time a stream opens."""
    rc = d / "asoundrc"
    rc.write_text(
        f"""
pcm.!default {{ type plug; slave {{ pcm "tap"; format S16_LE; rate 22050; channels 1 }} }}
pcm.tap {{ type file; slave.pcm "null"; file "{target}"; format "raw" }}
pcm.null {{ type null }}
"""
    )
    return {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{rc}"}


def portaudio_available() -> bool:
    """sounddevice imports only where the PortAudio library is installed (apt libportaudio2)."""
    try:
        import sounddevice  # noqa: F401
    except OSError:
        return False
    return True


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def short_tmpdir() -> Path:
    """ipc paths must stay under ~100 bytes, so sockets live in a short /tmp dir."""
    return Path(tempfile.mkdtemp(prefix="itt-", dir="/tmp"))


def base_settings(d: Path) -> dict[str, Any]:
    return {
        "daemon": {
            "log_level": "info",
            "state_dir": str(d / "state"),
            "cache_dir": str(d / "cache"),
            "drain_timeout_s": 5.0,
        },
        "zmq": {
            "control": f"ipc://{d}/control.sock",
            "ingest": f"ipc://{d}/ingest.sock",
            "pcm": f"ipc://{d}/pcm.sock",
        },
        "engine": {"kind": "piper"},
        "piper": {"deterministic": True},
        # Unpaced: most tests want the audio as fast as it is made; the paced PUB (the product's
        # default for pcm alone) is tested where it matters (test_pcm_pacing, test_overlay_*).
        "audio": {"sinks": ["pcm"], "pace": "off"},
    }


PROBE = "join-probe-"
"""The message id of the probes that show a SUB has joined the daemon's PUB (no chat line has it)."""


def wait_joined(pub: zmq.Socket[Any], timeout_s: float = 30.0) -> None:
    """Wait until a subscriber's subscription has reached this XPUB (again, after a restart).

    A PUB drops what it sends before the subscription arrives (ZeroMQ's slow joiner); an XPUB
    receives the subscription itself (``\\x01`` + topic; ``\\x00`` when a subscriber went away),
    so after this, what it sends is delivered."""

    def subscribed() -> bool:
        return bool(pub.poll(100)) and pub.recv()[:1] == b"\x01"

    wait_until(subscribed, timeout_s, "a subscriber to join this PUB", poll_s=0)


@dataclass
class Events:
    """A SUB on the daemon's PUB socket, collecting events and PCM frames as they arrive."""

    sock: zmq.Socket[Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    pcm: dict[str, list[tuple[dict[str, Any], bytes]]] = field(default_factory=dict)
    probes: int = 0
    """Join probes heard (:meth:`Daemon.wait_subscribed`); kept out of :attr:`events`."""

    def pump(self, timeout_s: float = 0.05) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if not self.sock.poll(max(0, int(left * 1000))):
                return
            while True:
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if frames[0] == b"event":
                    ev = json.loads(frames[1])
                    if ev.get("event") == "moderation" and str(ev.get("id", "")).startswith(PROBE):
                        self.probes += 1
                    else:
                        self.events.append(ev)
                elif frames[0].startswith(b"pcm"):
                    hdr = json.loads(frames[1])
                    self.pcm.setdefault(hdr["job"], []).append((hdr, frames[2]))

    def wait_for(self, pred: Any, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for ev in self.events[seen:]:
                if pred(ev):
                    return ev
            seen = len(self.events)
            self.pump(0.1)
        raise AssertionError(f"no matching event within {timeout_s}s; last events: {self.events[-5:]}")

    def audio(self, job: str) -> np.ndarray:
        frames = sorted(self.pcm.get(job, []), key=lambda hf: hf[0]["seq"])
        return np.frombuffer(b"".join(p for _, p in frames), dtype="<i2")

    def close(self) -> None:
        self.sock.close(0)


class Daemon:
    """A running ``ishowttsd`` process with its config, sockets and log."""

    def __init__(self, d: Path, settings: dict[str, Any], env: Mapping[str, str] | None = None) -> None:
        self.dir = d
        self.settings = settings
        self.config = d / "ishowtts.toml"
        self.config.write_text(tomlkit.dumps(settings))
        self.control = settings["zmq"]["control"]
        self.ingest = settings["zmq"]["ingest"]
        self.pcm_endpoint = settings["zmq"]["pcm"]
        self.log = d / "daemon.log"
        self.ctx: zmq.Context[Any] = zmq.Context()
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._socks: list[zmq.Socket[Any]] = []

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ishowttsd.daemon", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self.dir,
            )

    # -- sockets ------------------------------------------------------------------------------------
    def subscribe(self, topic: bytes = b"", joined: bool = True) -> Events:
        """A SUB on the PUB; with ``joined``, it hears everything the daemon publishes from now on."""
        s = self.ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.setsockopt(zmq.SUBSCRIBE, topic)
        s.connect(self.pcm_endpoint)
        self._socks.append(s)
        ev = Events(s)
        if joined:
            self.wait_subscribed(ev, topic)
        return ev

    def wait_subscribed(self, ev: Events, topic: bytes = b"", timeout_s: float = 30.0) -> None:
        """Wait until ``ev``'s subscription has reached the daemon's PUB (after a connect or a restart).

        A SUB hears nothing published before its subscription arrives (ZeroMQ's slow joiner). The
        daemon publishes a ``moderation`` event for a moderator's delete, even of a message id that
        no chat line has: send such probes until this SUB hears one. It touches no job; the probes
        are kept out of ``ev.events``."""
        extra = not b"event".startswith(topic)  # a pcm-only SUB hears the probe on "event" meanwhile
        if extra:
            ev.sock.setsockopt(zmq.SUBSCRIBE, b"event")
        ctl = self.dealer()
        heard = ev.probes
        sent = 0

        def probe_heard() -> bool:
            nonlocal sent
            ctl.send(json.dumps({"op": "moderate", "action": "delete", "id": f"{PROBE}{sent}"}).encode())
            sent += 1
            until = time.monotonic() + 0.1
            while ev.probes == heard and time.monotonic() < until:
                ev.pump(0.005)
            while ctl.poll(0):
                ctl.recv_multipart()
            return ev.probes > heard

        wait_until(
            probe_heard, timeout_s, "a SUB to join the daemon's PUB", lambda: self.log_text()[-3000:], 0
        )
        if extra:
            ev.sock.setsockopt(zmq.UNSUBSCRIBE, b"event")

    def dealer(self) -> zmq.Socket[Any]:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.control)
        self._socks.append(s)
        return s

    def bot(self, joined: bool = True) -> zmq.Socket[Any]:
        """A chat bot's PUB, connected to our ingest SUB; with ``joined``, once the daemon's
        subscription has reached it (it is an XPUB, which sees that: :func:`wait_joined`)."""
        s = self.ctx.socket(zmq.XPUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.XPUB_VERBOSE, 1)  # a restarted daemon's subscription is seen again
        s.connect(self.ingest)
        self._socks.append(s)
        if joined:
            wait_joined(s)
        return s

    def request(
        self, obj: Mapping[str, Any] | bytes, timeout_s: float = 10.0, sock: zmq.Socket[Any] | None = None
    ) -> dict[str, Any]:
        """Send one request on a fresh DEALER and return the first reply."""
        s = sock or self.dealer()
        s.send(obj if isinstance(obj, bytes) else json.dumps(obj).encode())
        if not s.poll(int(timeout_s * 1000)):
            raise AssertionError(f"no reply to {obj!r} within {timeout_s}s; log:\n{self.log_text()[-3000:]}")
        reply: dict[str, Any] = json.loads(s.recv_multipart()[0])
        return reply

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        s = self.dealer()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}; log:\n{self.log_text()[-3000:]}")
            s.send(b'{"op": "ping"}')
            return bool(s.poll(500)) and bool(json.loads(s.recv_multipart()[0]).get("ready"))

        wait_until(
            ready, timeout_s, "the daemon to be ready", lambda: f"log:\n{self.log_text()[-3000:]}", 0.1
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, needle: str, timeout_s: float = 10.0, count: int = 1) -> None:
        """Wait until the daemon's log holds ``needle`` (at least ``count`` times)."""
        wait_until(
            lambda: self.log_text().count(needle) >= count,
            timeout_s,
            f"{needle!r} in the daemon log" + (f" {count} times" if count > 1 else ""),
            lambda: self.log_text()[-3000:],
        )

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def close(self) -> None:
        self.stop()
        for s in self._socks:
            s.close(0)
        self.ctx.term()


@contextlib.contextmanager
def running_daemon(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    ready: bool = True,
    d: Path | None = None,
) -> Iterator[Daemon]:
    d = d or short_tmpdir()
    settings = deep_merge(base_settings(d), overrides or {})
    daemon = Daemon(d, settings, env)
    daemon.start()
    try:
        if ready:
            daemon.wait_ready()
        yield daemon
    finally:
        daemon.close()
        shutil.rmtree(d, ignore_errors=True)


def collect_until_terminal(sock: zmq.Socket[Any], timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Read replies on a DEALER until a terminal event (done/cancelled/dropped/error)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not sock.poll(100):
            continue
        frames = sock.recv_multipart()
        ev = json.loads(frames[0])
        out.append(ev)
        if ev.get("event") in ("done", "cancelled", "dropped", "error"):
            return out
    raise AssertionError(f"no terminal event within {timeout_s}s: {out}")
