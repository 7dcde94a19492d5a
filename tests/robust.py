"""Shared pieces of the robustness tests (fuzz, load, faults, security): measuring a live daemon.

Nothing here imitates the product: these read /proc, speak ZMTP on a raw socket, and record
figures for docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import zmq

LONG = os.environ.get("ISHOWTTS_LONG") == "1"
"""Long modes (≥ 10,000 fuzz cases per socket, the full 10 s load) run with ISHOWTTS_LONG=1."""

FIGURES = Path(os.environ.get("ISHOWTTS_FIGURES", "/tmp/ishowtts-figures"))
"""Where each robustness test appends its measured figures (JSON lines) for docs/RELIABILITY.md."""


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def hwm_rss_kb(pid: int) -> int:
    """Peak resident set size of ``pid`` in KiB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def record(test: str, **figures: Any) -> None:
    """Append one test's measured figures (one JSON line) for the reliability table."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    row = {"test": test, "ts": round(time.time(), 1), "long": LONG, **figures}
    with open(FIGURES / "figures.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


# -- raw ZMTP 3.0: announce a frame far larger than anything we send ------------------------------


def zmtp_greeting() -> bytes:
    """ZMTP 3.0 greeting with the NULL mechanism (RFC 23): 64 bytes."""
    return (
        b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
    )


def zmtp_ready(socket_type: bytes) -> bytes:
    name = b"Socket-Type"
    body = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(socket_type)) + socket_type
    return bytes([0x04, len(body)]) + body


def announce_huge_frame(
    ipc_path: str, size: int, socket_type: bytes = b"DEALER", timeout_s: float = 5.0
) -> str:
    """Connect to a ZeroMQ ipc endpoint, complete the handshake, then send only the header of a
    ``size``-byte message frame plus a few bytes of it. Returns how the peer reacted:
    ``"closed"`` (it dropped the connection) or ``"open"`` (it kept waiting for the body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(ipc_path)
        s.sendall(zmtp_greeting())
        greeting = _recv_exact(s, 64)
        assert greeting[0] == 0xFF and greeting[9] == 0x7F, greeting
        s.sendall(zmtp_ready(socket_type))
        flags = _recv_exact(s, 1)[0]  # the peer's READY command
        n = _recv_exact(s, 1)[0] if not flags & 0x02 else struct.unpack(">Q", _recv_exact(s, 8))[0]
        _recv_exact(s, n)
        s.sendall(b"\x02" + struct.pack(">Q", size) + b"A" * 4096)  # long frame, last frame
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if s.recv(4096) == b"":
                    return "closed"
            except TimeoutError:
                break
            except ConnectionResetError:
                return "closed"
        return "open"
    finally:
        s.close()


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = s.recv(n - len(buf))
        if not part:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += part
    return buf


def ipc_path(endpoint: str) -> str:
    assert endpoint.startswith("ipc://"), endpoint
    return endpoint[len("ipc://") :]


def drain(sock: zmq.Socket[Any], timeout_s: float = 0.2) -> list[list[bytes]]:
    out = []
    while sock.poll(int(timeout_s * 1000)):
        out.append(sock.recv_multipart())
    return out


# -- load: a chat bot in a process of its own (spawned, so it does not share our GIL) -------------------

_WORDS = "pog lol gg nice play clutch what was that hello from brazil first time here love the stream "
_WORDS += "can you say hi to my mom this game is hard let's go no way chat is wild big brain omega"
WORDS = _WORDS.split()


def chat_line(bot: int, k: int, rng: Any) -> dict[str, Any]:
    """A raid-like mix: many viewers, some spam and repeats, links, emotes, a few paid lines."""
    user = f"viewer{rng.randrange(400)}"
    r = rng.random()
    if r < 0.10:
        text = "LOL LOL LOL LOL LOL"  # spam, repeated by many
    elif r < 0.15:
        text = "check out https://example.com/free-stuff now"
    elif r < 0.20:
        text = "Kappa Kappa PogChamp " + " ".join(rng.choice(WORDS) for _ in range(3))
    else:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 14)))
    kind = "paid" if r > 0.995 else ("mod" if r > 0.99 else "chat")
    return {
        "text": text,
        "user": user,
        "id": f"b{bot}-{k}",
        "kind": kind,
        "platform": "load",
        "channel": "loadtest",
        "ts": time.time(),
    }


def bot_process(endpoint: str, bot: int, rate: float, seconds: float, start_at: float, out: Any) -> None:
    """Publish ``rate`` chat lines per second for ``seconds``, starting at wall time ``start_at``;
    put (sent, seconds taken) on ``out``."""
    import random

    rng = random.Random(bot)
    ctx: zmq.Context[Any] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 2000)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.connect(endpoint)
    total = int(rate * seconds)
    lines = [json.dumps(chat_line(bot, k, rng)).encode() for k in range(total)]
    time.sleep(max(0.0, start_at - time.time()))  # all bots start together
    t0 = time.monotonic()
    for k, body in enumerate(lines):
        due = t0 + k / rate
        delay = due - time.monotonic()
        if delay > 0.002:
            time.sleep(delay)  # the bot's rate
        pub.send_multipart([b"chat", body])
    taken = time.monotonic() - t0
    pub.close()
    ctx.term()
    out.put((bot, total, taken))


def wait_disconnected(monitor: zmq.Socket[Any], timeout_s: float = 10.0) -> bool:
    """True once a socket monitor reports EVENT_DISCONNECTED (the peer hung up on us)."""
    from zmq.utils.monitor import recv_monitor_message

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if monitor.poll(100) and recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
            return True
    return False
