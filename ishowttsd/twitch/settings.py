"""The ``[twitch]`` section: typed, frozen, and torch-free (``config.py`` imports it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ishowttsd.confread import ConfigError, Table

DEFAULT_SERVER = "irc.chat.twitch.tv:6697"
"""Twitch's IRC-over-TLS endpoint."""

_CHANNEL_RE = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,49}$")
"""Twitch logins are ``[a-z0-9_]{1,25}``; other IRC networks get a little more room (``.``, ``-``)."""


@dataclass(frozen=True)
class TwitchSettings:
    channel: str | None = None
    """Channel to read (login name, without ``#``); ``--channel`` overrides."""
    server: str = DEFAULT_SERVER
    """``HOST:PORT`` of the IRC server."""
    tls: bool = True
    ca_file: Path | None = None
    """PEM bundle to verify the server with; None uses the system's trust store."""
    credentials: Path | None = None
    """TOML file with ``login`` and ``token`` (bot account); None joins anonymously (read-only)."""
    ingest: str | None = None
    """Endpoint the PUB connects to; None: ``$ISHOWTTS_INGEST``, else the runtime-dir default."""
    hwm: int = 1000
    """Messages the PUB holds for a slow daemon before it drops (counted) instead of blocking."""
    hold_s: float = 5.0
    """Seconds a line waits for the daemon's subscription (at start, or while it restarts) before
    it is dropped (counted); 0 drops at once."""
    reconnect_min_s: float = 1.0
    """First reconnect delay; doubles per failed attempt, with jitter."""
    reconnect_max_s: float = 60.0
    connect_timeout_s: float = 15.0
    """Seconds for TCP connect + TLS handshake + registration (``001``)."""
    ping_interval_s: float = 240.0
    """After this long without any line from the server, we PING it (Twitch PINGs every ~5 min)."""
    ping_timeout_s: float = 30.0
    """No line within this long after our PING: the connection is dead, reconnect."""
    stable_s: float = 30.0
    """A connection that stayed joined this long resets the backoff to ``reconnect_min_s``."""


def normalise_channel(value: str) -> str:
    """``#SomeChannel`` -> ``somechannel``; raises ValueError with the rule when it is not a channel name."""
    name = value.strip().lstrip("#").lower()
    if not _CHANNEL_RE.match(name):
        raise ValueError(
            f"{value!r} is not a channel name (letters, digits, '_', then also '.' or '-'; 1-50 characters)"
        )
    return name


def split_server(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port); raises ValueError naming the expected form."""
    host, sep, port_s = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. {DEFAULT_SERVER}), got {value!r}")
    return host, int(port_s)


def parse_twitch(t: Table) -> TwitchSettings:
    d = TwitchSettings()
    channel = t.opt_str("channel")
    if channel is not None:
        try:
            channel = normalise_channel(channel)
        except ValueError as e:
            raise t.error("channel", str(e)) from None
    server = t.string("server", d.server)
    try:
        split_server(server)
    except ValueError as e:
        raise t.error("server", str(e)) from None
    ingest = t.opt_str("ingest")
    if ingest is not None and "://" not in ingest:
        raise t.error(
            "ingest", f"expected a ZeroMQ endpoint (ipc:///run/x.sock, tcp://host:port), got {ingest!r}"
        )
    s = TwitchSettings(
        channel=channel,
        server=server,
        tls=t.flag("tls", d.tls),
        ca_file=t.path("ca_file", None),
        credentials=t.path("credentials", None),
        ingest=ingest,
        hwm=t.integer("hwm", d.hwm, min=1, max=1_000_000),
        hold_s=t.number("hold_s", d.hold_s, min=0, max=600),
        reconnect_min_s=t.number("reconnect_min_s", d.reconnect_min_s, min=0.01, max=3600),
        reconnect_max_s=t.number("reconnect_max_s", d.reconnect_max_s, min=0.01, max=86400),
        connect_timeout_s=t.number("connect_timeout_s", d.connect_timeout_s, min=0.1, max=600),
        ping_interval_s=t.number("ping_interval_s", d.ping_interval_s, min=1, max=3600),
        ping_timeout_s=t.number("ping_timeout_s", d.ping_timeout_s, min=1, max=600),
        stable_s=t.number("stable_s", d.stable_s, min=0, max=86400),
    )
    if s.reconnect_max_s < s.reconnect_min_s:
        raise t.error(
            "reconnect_max_s", f"must be >= reconnect_min_s ({s.reconnect_min_s}), got {s.reconnect_max_s}"
        )
    t.finish()
    return s


__all__ = [
    "DEFAULT_SERVER",
    "ConfigError",
    "TwitchSettings",
    "normalise_channel",
    "parse_twitch",
    "split_server",
]
