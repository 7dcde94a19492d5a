"""The client side of the daemon's control socket, as ``ishowtts-say`` uses it.

One DEALER with a socket monitor beside it: the monitor tells when an established connection
closes (the daemon died or restarted: replies to our jobs will never come), which a DEALER
alone hides behind its silent reconnects.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from ishowttsd import protocol, security

MAX_POLL_MS = 3_600_000
"""Never ask zmq to poll longer than an hour at once (a huge ``--timeout`` overflows its int)."""


class Client:
    def __init__(self, endpoint: str, json_out: bool, curve: security.CurveKeys | None = None) -> None:
        self.endpoint = endpoint
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            security.apply_client(self.sock, curve)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.sock.connect(endpoint)
        self.json_out = json_out
        self.connected = False
        self.disconnected = False
        """An established connection closed: the daemon went away (or restarted)."""
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)
        self._poller.register(self.monitor, zmq.POLLIN)

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.send(protocol.encode(obj))

    def recv(self, timeout_s: float) -> tuple[dict[str, Any], bytes] | None:
        """The next event and, for ``pcm`` events, its samples; None when ``timeout_s`` passes
        or the connection closes (see :attr:`disconnected`)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            left = deadline - time.monotonic()
            ready = dict(self._poller.poll(min(MAX_POLL_MS, max(0, int(left * 1000)))))
            if self.monitor in ready:
                self._read_monitor()
                if self.disconnected:
                    return None
            if self.sock in ready:
                frames = self.sock.recv_multipart()
                ev: dict[str, Any] = json.loads(frames[0])
                if ev.get("event") == "pcm":
                    return ev, (frames[1] if len(frames) > 1 else b"")
                if self.json_out:
                    print(json.dumps(ev, ensure_ascii=False), flush=True)
                return ev, b""
            if left <= 0:
                return None

    def _read_monitor(self) -> None:
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
            elif event == zmq.EVENT_DISCONNECTED and self.connected:
                self.disconnected = True

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)
        self.ctx.term()


def unreachable(endpoint: str, waited_s: float) -> str:
    """Why nothing answered, for a person who may just have forgotten ``$ISHOWTTS_CONTROL``."""
    return f"the daemon at {endpoint} did not answer within {waited_s:g} s ({_endpoint_hint(endpoint)})"


def _endpoint_hint(endpoint: str) -> str:
    if endpoint.startswith("ipc://"):
        path = Path(endpoint[len("ipc://") :])
        if not path.exists():
            return (
                f"no socket file {path} exists: no daemon is running there; start it, or point "
                "$ISHOWTTS_CONTROL or --endpoint at its control socket"
            )
        if not path.is_socket():
            return f"{path} exists but is not a socket"
        return (
            f"the socket file {path} exists, but nothing answered: the daemon is stuck, or it stopped "
            "without removing the file"
        )
    if endpoint.startswith("tcp://"):
        return (
            "check the address, that the daemon listens there, and the CURVE keys: a wrong key gets no answer"
        )
    return "check the endpoint"
