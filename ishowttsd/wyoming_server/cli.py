"""``ishowtts-wyoming``: the daemon's voices for Home Assistant, over the Wyoming protocol.

A separate process (like the Twitch bridge and the web gateway): it serves Wyoming on a TCP or
unix URI and talks to the daemon only through its public control socket, asking for speech that
is synthesised for the caller alone (``say`` with ``play: false``).

Where the daemon's control endpoint comes from (first found): ``--control``, ``$ISHOWTTS_CONTROL``,
``[zmq] control`` of the config file, the runtime-dir default — as ``ishowtts-say`` finds it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlparse

from wyoming.server import AsyncServer

from ishowttsd import config, log, paths
from ishowttsd.notify import Notifier
from ishowttsd.wyoming_server.handler import Limits, TtsHandler
from ishowttsd.wyoming_server.link import DaemonSpeaker

_log = log.get(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_START = 3
DEFAULT_URI = "tcp://127.0.0.1:10200"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ishowtts-wyoming",
        description="Serve ishowttsd's voices over the Wyoming protocol (Home Assistant).",
        epilog=(
            f"exit status: {EXIT_OK} stopped by a signal; {EXIT_CONFIG} bad command line or configuration; "
            f"{EXIT_START} the URI could not be served (e.g. the port is in use). See docs/WYOMING.md."
        ),
    )
    p.add_argument(
        "--uri",
        default=DEFAULT_URI,
        help=f"where to serve: tcp://HOST:PORT or unix:///path (default {DEFAULT_URI}; 10200 is "
        "wyoming-piper's port, which Home Assistant suggests)",
    )
    p.add_argument(
        "--zeroconf",
        nargs="?",
        const="",
        metavar="NAME",
        help="announce the service over mDNS so Home Assistant discovers it (tcp URIs only; "
        "NAME defaults to the host's MAC address, as wyoming-piper does)",
    )
    p.add_argument("--control", metavar="ENDPOINT", help="the daemon's control endpoint")
    p.add_argument(
        "--max-chars",
        type=int,
        default=Limits().max_text_chars,
        help="longest text one request may carry (default %(default)s); longer gets error text_too_long",
    )
    p.add_argument(
        "--config", metavar="PATH", help="ishowtts TOML (default: $ISHOWTTS_CONFIG, /etc/ishowtts/...)"
    )
    return p


def _control_endpoint(args: argparse.Namespace, settings: config.Settings | None) -> str:
    if args.control:
        return str(args.control)
    if os.environ.get("ISHOWTTS_CONTROL") or settings is None:
        return paths.control_endpoint()
    return settings.zmq.control


def _check_uri(uri: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme == "tcp" and (parsed.hostname is None or parsed.port is None):
        raise config.ConfigError(None, "--uri", f"{uri!r}: a tcp URI needs a host and a port")
    if parsed.scheme not in ("tcp", "unix"):
        raise config.ConfigError(None, "--uri", f"{uri!r}: expected tcp://HOST:PORT or unix:///path")


async def _serve(args: argparse.Namespace, endpoint: str) -> int:
    speaker = DaemonSpeaker(endpoint)
    limits = Limits(max_text_chars=args.max_chars)
    server = AsyncServer.from_uri(args.uri)
    factory = functools.partial(TtsHandler, speaker=speaker, describe=speaker.describe, limits=limits)
    notifier = Notifier()
    try:
        await server.start(factory)
    except OSError as e:
        _log.error("cannot serve", uri=args.uri, error=str(e))
        print(f"ishowtts-wyoming: cannot serve {args.uri}: {e}", file=sys.stderr)
        await speaker.close()
        return EXIT_START
    if args.zeroconf is not None:
        await _announce(args.uri, args.zeroconf)
    _log.info("serving", uri=args.uri, control=endpoint)
    notifier.ready(f"serving Wyoming on {args.uri}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        await server.stop()
        await speaker.close()
        _log.info("stopped")
    return EXIT_OK


async def _announce(uri: str, name: str) -> None:
    """mDNS announcement (`_wyoming._tcp`) with the wyoming package's own helper."""
    from wyoming.zeroconf import HomeAssistantZeroconf

    parsed = urlparse(uri)
    if parsed.scheme != "tcp" or parsed.port is None:
        _log.warning("zeroconf needs a tcp URI; not announcing", uri=uri)
        return
    host = parsed.hostname if parsed.hostname not in ("0.0.0.0", "::", None) else None
    zc = HomeAssistantZeroconf(port=parsed.port, name=name or None, host=host)
    await zc.register_server()
    _log.info("announced over zeroconf", name=zc.name, host=zc.host, port=parsed.port)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        path = config.find_config(args.config)
        settings = config.load(path) if path is not None else None
        if settings is not None:
            log.configure(settings.daemon.log_level, settings.daemon.log_format)
        else:
            log.configure()
        _check_uri(args.uri)
        if args.max_chars < 1:
            raise config.ConfigError(None, "--max-chars", "must be at least 1")
        endpoint = _control_endpoint(args, settings)
    except config.ConfigError as e:
        log.configure()
        _log.error("configuration error", error=str(e))
        print(f"ishowtts-wyoming: {e}", file=sys.stderr)
        return EXIT_CONFIG
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args, endpoint))
    return EXIT_OK


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
