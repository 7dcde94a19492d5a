"""Where the daemon's sockets, state and caches live, found the same way by every tool."""

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
