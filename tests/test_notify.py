"""sd_notify over a real AF_UNIX datagram socket (the systemd side is a bound socket in a temp dir)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ishowttsd import notify
from ishowttsd.notify import Notifier


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    s.bind(path)
    s.settimeout(2.0)
    yield s, path
    s.close()


def test_emoji_status_arrives_intact(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path})
    status = "speaking: 🦄xXx_Ünïcørn_xXx🦄: hi chat 👋 こんにちは"
    assert n.send(READY=1, STATUS=status) is True
    data = sock.recv(65536)
    assert data == f"READY=1\nSTATUS={status}".encode()
    n.close()


def test_newlines_cannot_inject_assignments(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path})
    n.status("evil\nWATCHDOG=trigger\r\x00x")
    lines = sock.recv(65536).decode().split("\n")
    assert lines == ["STATUS=evil WATCHDOG=trigger  x"]
    # A lone surrogate (from a badly decoded chat frame) can't be encoded: replaced, still sent.
    n.status("a\udcffb")
    assert sock.recv(65536) == b"STATUS=a?b"


def test_long_status_is_truncated(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    Notifier({"NOTIFY_SOCKET": path}).status("é" * 1000)
    assert sock.recv(65536).decode() == "STATUS=" + "é" * notify.MAX_STATUS_CHARS


def test_abstract_socket_address() -> None:
    name = f"ishowtts-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2.0)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).send(STOPPING=1) is True
        assert s.recv(100) == b"STOPPING=1"
    finally:
        s.close()


def test_unset_socket_is_a_no_op() -> None:
    n = Notifier({})
    assert n.enabled is False
    assert n.ready("x") is False


def test_watchdog_usec_for_another_pid_is_ignored() -> None:
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_usec == 4_000_000
    mine = Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_usec == 4_000_000
    other = Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_usec == 0


def test_full_receiver_queue_does_not_block(receiver: tuple[socket.socket, str]) -> None:
    """A PID 1 that is not reading must not freeze the daemon's main loop (it did: sendto blocked)."""
    _, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path})
    qlen = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    t0 = time.monotonic()
    results = [n.watchdog() for _ in range(qlen + 2)]
    elapsed = time.monotonic() - t0
    assert results[0] is True
    assert results[-1] is False
    assert elapsed < 2 * notify.SEND_TIMEOUT_S + 1.0


def test_missing_socket_reports_false(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-home.sock")})
    assert n.send(READY=1) is False
    assert n.send(READY=1) is False
