"""Where the daemon's sockets, state and caches live, found the same way by every tool; and the
ZeroMQ endpoints from the config file, resolved and checked so that one that validates works.

What an endpoint can be, and why the others are refused when the configuration is read
(``--check-config`` and start both exit 2 naming the file and the key) rather than at bind:

- ``ipc:///abs/path.sock``: the default. A relative path (``ipc://c.sock``) is relative to the
  config file's folder, like every other path in it (libzmq would bind it relative to the working
  directory, which is ``/`` under systemd).
- The path must fit a Unix socket address: at most :data:`IPC_PATH_MAX` bytes (``sun_path`` less
  its terminating NUL); libzmq fails the bind of a longer one.
- ``ipc://@name`` (Linux abstract sockets) has no file and so no permissions: any local user can
  connect. It is treated as a network endpoint (CURVE required; see :mod:`ishowttsd.security`).
- ``inproc://`` lives inside the daemon's process: no client could ever reach it.
- Two sockets of the daemon on the same endpoint: the second bind fails (tcp) or steals the
  first one's path (ipc).
"""

from __future__ import annotations

import os
from pathlib import Path


def runtime_dir(env: dict[str, str] | None = None) -> Path:
    """systemd's ``$RUNTIME_DIRECTORY``, else ``$XDG_RUNTIME_DIR/ishowtts``, else ``/tmp/ishowtts-$UID``."""
    env = dict(os.environ) if env is None else env
    if env.get("RUNTIME_DIRECTORY"):
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "ishowtts"
    return Path(f"/tmp/ishowtts-{os.getuid()}")


def state_dir(env: dict[str, str] | None = None) -> Path:
    """systemd's ``$STATE_DIRECTORY``, else ``$XDG_STATE_HOME/ishowtts``, else ``~/.local/state/ishowtts``."""
    env = dict(os.environ) if env is None else env
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ishowtts"


def cache_dir(env: dict[str, str] | None = None) -> Path:
    """systemd's ``$CACHE_DIRECTORY``, else ``$XDG_CACHE_HOME/ishowtts``, else ``~/.cache/ishowtts``."""
    env = dict(os.environ) if env is None else env
    if env.get("CACHE_DIRECTORY"):
        return Path(env["CACHE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ishowtts"


def default_endpoint(name: str, env: dict[str, str] | None = None) -> str:
    """The default ipc endpoint of socket ``name`` (``control``, ``ingest``, ``pcm``)."""
    return f"ipc://{runtime_dir(env) / (name + '.sock')}"


SYSTEM_RUNTIME_DIR = Path("/run/ishowtts")
"""Where the system service (``RuntimeDirectory=ishowtts``) puts its sockets."""


def _client_endpoint(name: str, var: str, env: dict[str, str] | None) -> str:
    """A client's endpoint: ``$VAR``, else the runtime-dir default; but when that socket does
    not exist and the system service's does, the system one (a login shell has its own
    ``$XDG_RUNTIME_DIR``, not the service's ``$RUNTIME_DIRECTORY``)."""
    env = dict(os.environ) if env is None else env
    if env.get(var):
        return env[var]
    own = runtime_dir(env) / f"{name}.sock"
    system = SYSTEM_RUNTIME_DIR / f"{name}.sock"
    if not own.exists() and system.exists():
        return f"ipc://{system}"
    return f"ipc://{own}"


def control_endpoint(env: dict[str, str] | None = None) -> str:
    """The endpoint a client uses to reach the daemon: ``$ISHOWTTS_CONTROL`` overrides the default."""
    return _client_endpoint("control", "ISHOWTTS_CONTROL", env)


def ingest_endpoint(env: dict[str, str] | None = None) -> str:
    """The endpoint a chat bot connects its PUB to: ``$ISHOWTTS_INGEST`` overrides the default."""
    return _client_endpoint("ingest", "ISHOWTTS_INGEST", env)


def pcm_endpoint(env: dict[str, str] | None = None) -> str:
    """The endpoint to subscribe to for PCM and events: ``$ISHOWTTS_PCM`` overrides the default."""
    return _client_endpoint("pcm", "ISHOWTTS_PCM", env)


# -- endpoints from the config file ------------------------------------------------------------
IPC_PATH_MAX = 107
"""Bytes of an ipc socket path: ``sizeof(sockaddr_un.sun_path)`` (108 on Linux) less the NUL."""
WILDCARD_HOSTS = ("*", "0.0.0.0", "::", "[::]")


class EndpointError(ValueError):
    """What is wrong with one endpoint (the caller adds the file and key)."""


def is_abstract(endpoint: str) -> bool:
    """An abstract-namespace ipc endpoint (``ipc://@name``): no file, no permissions."""
    return endpoint.startswith("ipc://@")


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of a (non-abstract) ipc endpoint, else None."""
    if not endpoint.startswith("ipc://") or is_abstract(endpoint):
        return None
    return Path(endpoint[len("ipc://") :])


def resolve(endpoint: str, base: Path | None) -> str:
    """``endpoint`` checked, with a relative ipc path made absolute against ``base`` (the config
    file's folder). Raises :class:`EndpointError`."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or not scheme or not rest:
        raise EndpointError(
            f"expected a ZeroMQ endpoint (ipc:///run/x.sock, tcp://host:port), got {endpoint!r}"
        )
    if scheme == "inproc":
        raise EndpointError(
            f"{endpoint!r} exists only inside the daemon's own process: no client could reach it; "
            "use an ipc:// path (or tcp:// with CURVE keys)"
        )
    if scheme != "ipc":
        return endpoint
    if rest.startswith("@"):
        name = rest[1:]
        if not name:
            raise EndpointError(f"{endpoint!r} names no abstract socket")
        _check_length(endpoint, rest)
        return endpoint
    if rest == "*" or rest.endswith("/*"):
        raise EndpointError(
            f"{endpoint!r} is a wildcard: clients could not know the path; name the socket file"
        )
    path = Path(rest).expanduser()
    if not path.is_absolute():
        if base is None:
            raise EndpointError(
                f"{endpoint!r} is a relative path, which needs a config file to be relative to"
            )
        path = base / path
    out = f"ipc://{path}"
    _check_length(endpoint, str(path))
    return out


def _check_length(endpoint: str, path: str) -> None:
    n = len(path.encode())
    if n > IPC_PATH_MAX:
        raise EndpointError(
            f"{endpoint!r}: the socket path is {n} bytes; a Unix socket address holds at most "
            f"{IPC_PATH_MAX}: use a shorter path (e.g. under /run/ishowtts)"
        )


def _tcp_key(endpoint: str) -> tuple[str, str, str] | None:
    scheme, _, rest = endpoint.partition("://")
    if scheme not in ("tcp", "ws", "wss"):
        return None
    host, _, port = rest.rpartition(":")
    port = port.split("/", 1)[0]
    if not host or not port or port == "*":
        return None
    return scheme, host, port


def same_place(a: str, b: str) -> bool:
    """Whether binding both would collide: the same string, or the same tcp port where one host
    is a wildcard."""
    if a == b:
        return True
    ka, kb = _tcp_key(a), _tcp_key(b)
    if ka is None or kb is None or ka[2] != kb[2]:
        return False
    return ka[1] == kb[1] or ka[1] in WILDCARD_HOSTS or kb[1] in WILDCARD_HOSTS


def find_clash(endpoints: dict[str, str]) -> tuple[str, str] | None:
    """The first pair of keys whose endpoints collide (``endpoints`` maps key -> endpoint)."""
    items = list(endpoints.items())
    for i, (ka, a) in enumerate(items):
        for kb, b in items[i + 1 :]:
            if same_place(a, b):
                return ka, kb
    return None


__all__ = ["IPC_PATH_MAX", "EndpointError", "find_clash", "ipc_path", "is_abstract", "resolve", "same_place"]
