"""Who may talk to the daemon: ipc sockets by file permission, network sockets only with CURVE.

- ipc endpoints (the default) live in the runtime directory and are created group-only (0770,
  umask 007 at bind): membership of the daemon's group is the credential.
- An abstract ipc endpoint (``ipc://@name``, Linux) has no file, so no permissions: any local
  user could connect. It counts as a network endpoint here.
- Any other endpoint (``tcp://``, ``ws://``, ``ipc://@...``) is refused at start unless
  ``[security] keys_dir`` holds the server's CURVE key pair; such a socket is then a CURVE
  server, and a ZAP handler (``zmq.auth`` in a thread of its own) admits only clients whose public key is in
  ``<keys_dir>/authorized_clients/``. A client without an authorised key completes no handshake:
  it gets no service, not even an error.

Key files are ``zmq.auth`` certificates, made by ``ishowtts-keys``: ``server.key`` (public),
``server.key_secret`` (secret, readable by the daemon only), ``authorized_clients/*.key``.
SIGHUP re-reads the authorised keys.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from ishowttsd import log
from ishowttsd.confread import ConfigError, Table
from ishowttsd.paths import is_abstract

_log = log.get(__name__)

SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized_clients"
ZAP_DOMAIN = "ishowtts"


@dataclass(frozen=True)
class SecuritySettings:
    keys_dir: Path | None = None
    """CURVE keys: ``server.key``, ``server.key_secret`` and ``authorized_clients/*.key``
    (``ishowtts-keys init``). None: no CURVE, so every endpoint must be ipc://."""


@dataclass(frozen=True)
class CurveKeys:
    """A key pair (Z85 bytes) and, for a client, the server's public key."""

    public: bytes
    secret: bytes
    server: bytes | None = None


def parse_security(t: Table) -> SecuritySettings:
    keys_dir = t.path("keys_dir", None)
    t.finish()
    if keys_dir is not None:
        check_keys_dir(keys_dir, t.file)
    return SecuritySettings(keys_dir=keys_dir)


def is_local(endpoint: str) -> bool:
    """Protected by file permissions: an ipc socket file (not an abstract one)."""
    return endpoint.startswith("ipc://") and not is_abstract(endpoint)


def check_endpoints(endpoints: dict[str, str], security: SecuritySettings, file: Path | None) -> None:
    """Refuse a network endpoint without CURVE keys; ``endpoints`` maps config key -> endpoint."""
    if security.keys_dir is not None:
        return
    for key, ep in endpoints.items():
        if is_abstract(ep):
            raise ConfigError(
                file,
                key,
                f"{ep!r} is an abstract socket: it has no file permissions, so any local user could "
                "connect to it. Use an ipc:// socket file (e.g. ipc:///run/ishowtts/control.sock), or "
                "set [security] keys_dir for CURVE authentication (`ishowtts-keys init`)",
            )
        if not is_local(ep):
            raise ConfigError(
                file,
                key,
                f"{ep!r} is reachable over the network, which needs CURVE authentication: set "
                "[security] keys_dir (make it with `ishowtts-keys init`), or use an ipc:// endpoint",
            )


def check_keys_dir(keys_dir: Path, file: Path | None) -> None:
    """The key directory must hold a usable server key pair whose secret only its owner can read."""
    key = "security.keys_dir"
    if not keys_dir.is_dir():
        raise ConfigError(file, key, f"{keys_dir} is not a directory (make it with `ishowtts-keys init`)")
    secret = keys_dir / f"{SERVER_NAME}.key_secret"
    if not secret.is_file():
        raise ConfigError(file, key, f"{secret} is missing (`ishowtts-keys init --dir {keys_dir}` makes it)")
    mode = secret.stat().st_mode
    if mode & stat.S_IROTH or mode & stat.S_IWOTH:
        raise ConfigError(file, key, f"{secret} is readable or writable by others: chmod 600 (or 640) it")
    if keys_dir.stat().st_mode & stat.S_IWOTH:
        raise ConfigError(file, key, f"{keys_dir} is writable by others: anyone could authorise a key")
    try:
        _, secret_key = zmq.auth.load_certificate(secret)
    except (OSError, ValueError) as e:
        raise ConfigError(file, key, f"{secret} is not a ZeroMQ secret certificate: {e}") from None
    if not secret_key:
        raise ConfigError(file, key, f"{secret} holds no secret key")
    authorized = keys_dir / AUTHORIZED_DIR
    if authorized.exists() and authorized.stat().st_mode & stat.S_IWOTH:
        raise ConfigError(file, key, f"{authorized} is writable by others: anyone could authorise a key")


def load_server_keys(keys_dir: Path) -> CurveKeys:
    public, secret = zmq.auth.load_certificate(keys_dir / f"{SERVER_NAME}.key_secret")
    assert secret is not None
    return CurveKeys(public=public, secret=secret)


def load_public_key(value: str) -> bytes:
    """A public key given as a certificate file path or as its 40-character Z85 text."""
    if len(value) == 40 and not os.path.exists(value):
        return value.encode("ascii")
    public, _ = zmq.auth.load_certificate(value)
    return public


def load_client_keys(client_cert: str, server_key: str) -> CurveKeys:
    """For clients: their own secret certificate file and the server's public key (file or Z85)."""
    public, secret = zmq.auth.load_certificate(client_cert)
    if not secret:
        raise ValueError(f"{client_cert} holds no secret key (give the .key_secret file)")
    return CurveKeys(public=public, secret=secret, server=load_public_key(server_key))


def apply_client(sock: zmq.Socket[Any], keys: CurveKeys) -> None:
    """Make ``sock`` a CURVE client of the daemon (before connect)."""
    assert keys.server is not None
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server


class _Keyring:
    """The ZAP callback: a client key is admitted iff it is in the set last read from disk."""

    DENY_LOG_EVERY_S = 60.0
    """A refused client retries every ~100 ms: log each key at most once a minute."""

    def __init__(self) -> None:
        self.allowed: frozenset[bytes] = frozenset()
        self._denied_at: dict[bytes, float] = {}

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        now = time.monotonic()
        if now - self._denied_at.get(key, -1e9) >= self.DENY_LOG_EVERY_S:
            if len(self._denied_at) > 1000:
                self._denied_at.clear()
            self._denied_at[key] = now
            shown = key.decode("ascii", "replace")
            _log.warning("CURVE client refused: key not authorised", client_key=shown)
        return False


class Curve:
    """The daemon side: server keys plus the ZAP handler that checks client keys."""

    def __init__(self, keys_dir: Path, ctx: zmq.Context[Any]) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self.keys_dir = keys_dir
        self.keys = load_server_keys(keys_dir)
        self._keyring = _Keyring()
        self.reload()
        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("ishowttsd.zap"))
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self._keyring)

    @property
    def authorized_dir(self) -> Path:
        return self.keys_dir / AUTHORIZED_DIR

    def reload(self) -> None:
        """(Re)read the authorised client keys (SIGHUP); a missing directory authorises no one, and
        a removed key file is revoked for new connections."""
        allowed: dict[str, bytes] = {}
        d = self.authorized_dir
        for f in sorted(d.glob("*.key")) if d.is_dir() else []:
            try:
                public, _ = zmq.auth.load_certificate(f)
            except (OSError, ValueError) as e:
                _log.error("unreadable client key skipped", file=str(f), error=str(e))
                continue
            allowed[f.stem] = public
        self._keyring.allowed = frozenset(allowed.values())
        _log.info("CURVE clients authorised", count=len(allowed), clients=sorted(allowed)[:50])

    def protect(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        """Make ``sock`` a CURVE server for ``endpoint`` if it is not local (before bind/connect)."""
        if is_local(endpoint):
            return
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN.encode()

    def close(self) -> None:
        self._auth.stop()


def start(settings: SecuritySettings, ctx: zmq.Context[Any]) -> Curve | None:
    return Curve(settings.keys_dir, ctx) if settings.keys_dir is not None else None


__all__ = [
    "Curve",
    "CurveKeys",
    "SecuritySettings",
    "apply_client",
    "check_endpoints",
    "load_client_keys",
    "parse_security",
    "start",
]
