"""The ``[web]`` section (``ishowtts-web``): typed, frozen, and free of web imports (``config.py``
imports it, and the daemon never loads Starlette)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ishowttsd.confread import Table

DEFAULT_LISTEN = "127.0.0.1:8765"


@dataclass(frozen=True)
class WebSettings:
    listen: str = DEFAULT_LISTEN
    """``HOST:PORT`` to serve HTTP on; loopback by default (LAN only when the user changes it)."""
    token_file: Path | None = None
    """The admin/API bearer token; None: ``<[daemon] state_dir>/web/token``. Created (mode 0600)
    with a random secret when missing."""
    overlay_key_file: Path | None = None
    """The overlay URLs' read-only key; None: ``<[daemon] state_dir>/web/overlay.key``. Created
    (mode 0640) with a random secret when missing."""
    max_body_bytes: int = 65536
    """Largest request body (bytes); larger ones get 413 before they are read."""
    rate_per_min: int = 600
    """Requests per minute one client address may make (token bucket; 0: no limit)."""
    rate_burst: int = 60
    """Requests a client may make at once before the per-minute rate applies."""
    max_speech_requests: int = 8
    """Speech requests served at once; more get 429. With ``max_unread_s`` it bounds the memory
    that clients which do not read can hold."""
    max_unread_s: float = 120.0
    """Seconds of audio one speech response may hold for a client that is not reading; past it
    the job is cancelled and the response cut."""
    daemon_timeout_s: float = 30.0
    """Seconds to wait for any one answer from the daemon (and between a job's audio frames)."""
    server_key: str | None = None
    """CURVE, for a tcp:// control endpoint: the daemon's public key (file or Z85 text)."""
    client_key: Path | None = None
    """CURVE: this gateway's secret key file (``ishowtts-keys client``)."""

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def parse_web(t: Table, state_dir: Path) -> WebSettings:
    d = WebSettings()
    listen = t.string("listen", d.listen)
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise t.error("listen", f"expected HOST:PORT (e.g. {DEFAULT_LISTEN}), got {listen!r}")
    client_key = t.path("client_key", None)
    server_key = t.opt_str("server_key")
    if (client_key is None) != (server_key is None):
        raise t.error(
            "server_key" if server_key is None else "client_key", "set both server_key and client_key"
        )
    s = WebSettings(
        listen=listen,
        token_file=t.path("token_file", None) or state_dir / "web" / "token",
        overlay_key_file=t.path("overlay_key_file", None) or state_dir / "web" / "overlay.key",
        max_body_bytes=t.integer("max_body_bytes", d.max_body_bytes, min=1024, max=1 << 30),
        rate_per_min=t.integer("rate_per_min", d.rate_per_min, min=0, max=1_000_000),
        rate_burst=t.integer("rate_burst", d.rate_burst, min=1, max=1_000_000),
        max_speech_requests=t.integer("max_speech_requests", d.max_speech_requests, min=1, max=10000),
        max_unread_s=t.number("max_unread_s", d.max_unread_s, min=1, max=86400),
        daemon_timeout_s=t.number("daemon_timeout_s", d.daemon_timeout_s, min=0.1, max=3600),
        server_key=server_key,
        client_key=client_key,
    )
    t.finish()
    return s


__all__ = ["DEFAULT_LISTEN", "WebSettings", "parse_web"]
