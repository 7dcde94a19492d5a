"""systemd's sd_notify protocol, written out (it is one datagram) rather than taken from ``sdnotify``.

The ``sdnotify`` package encodes with latin-1 and swallows every error, so a STATUS line
that quotes a chat user's emoji name silently never arrives. Here every message is sent as
UTF-8 (what systemd expects), control characters that would split a line are replaced, and a
failed send is logged once rather than hidden.
"""

from __future__ import annotations

import os
import socket
import threading

from ishowttsd import log

_log = log.get(__name__)

MAX_STATUS_CHARS = 400
SEND_TIMEOUT_S = 1.0


def _clean(value: str) -> str:
    """One line of valid UTF-8: newlines would start a new assignment; lone surrogates can't encode."""
    value = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
    value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:MAX_STATUS_CHARS]


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; does nothing when the variable is unset."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        if addr:
            # A leading '@' names a socket in the abstract namespace.
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        self.watchdog_usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        pid = env.get("WATCHDOG_PID")
        if pid and pid.isdigit() and int(pid) != os.getpid():
            # The watchdog is meant for another process (e.g. a wrapper script).
            self.watchdog_usec = 0

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines in one datagram, e.g. ``send(READY=1, STATUS="warm")``."""
        if self._addr is None:
            return False
        lines = [f"{k}={_clean(str(v))}" for k, v in fields.items()]
        payload = "\n".join(lines).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    # A datagram send blocks while the receiver's queue is full (only 10 deep by
                    # default, net.unix.max_dgram_qlen): a busy PID 1 must not freeze the main loop.
                    self._sock.settimeout(SEND_TIMEOUT_S)
                self._sock.sendto(payload, self._addr)
                return True
            except OSError as e:
                if not self._warned:
                    _log.warning("sd_notify failed", socket=self._addr, error=str(e))
                    self._warned = True
                return False

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def extend_timeout(self, seconds: float, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"EXTEND_TIMEOUT_USEC": int(seconds * 1_000_000)}
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def watchdog_trigger(self, status: str) -> bool:
        return self.send(WATCHDOG="trigger", STATUS=status)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
