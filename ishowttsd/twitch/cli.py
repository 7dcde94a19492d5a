"""``ishowtts-twitch``: read one Twitch channel's chat into the daemon.

Where the ingest endpoint comes from (first found): ``--ingest``, ``[twitch] ingest``,
``$ISHOWTTS_INGEST``, the runtime-dir default -- the same way ``ishowtts-say`` finds control.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from ishowttsd import config, log, paths, security
from ishowttsd.notify import Notifier
from ishowttsd.twitch.client import EXIT_CONFIG, EXIT_LOGIN_REFUSED, EXIT_OK, Bridge, Interrupted
from ishowttsd.twitch.credentials import Credentials, load_credentials
from ishowttsd.twitch.publisher import Publisher
from ishowttsd.twitch.settings import DEFAULT_SERVER, TwitchSettings, normalise_channel, split_server

_log = log.get(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ishowtts-twitch",
        description="Read a Twitch channel's chat (IRC over TLS) and publish it to ishowttsd.",
        epilog=(
            f"exit status: {EXIT_OK} stopped by a signal; {EXIT_CONFIG} bad command line, configuration or "
            f"credentials file; {EXIT_LOGIN_REFUSED} the server refused the bot's login. See docs/TWITCH.md."
        ),
    )
    p.add_argument("--channel", metavar="NAME", help="channel to read (default: [twitch] channel)")
    p.add_argument("--server", metavar="HOST:PORT", help=f"IRC server (default: {DEFAULT_SERVER})")
    p.add_argument(
        "--ca-file", metavar="PATH", type=Path, help="PEM bundle to verify the server's TLS certificate"
    )
    p.add_argument(
        "--no-tls", action="store_true", help="plain TCP (tests, other IRC networks; never for Twitch)"
    )
    p.add_argument(
        "--ingest",
        metavar="ENDPOINT",
        help="daemon's ingest endpoint (default: [twitch] ingest, $ISHOWTTS_INGEST, the runtime dir)",
    )
    p.add_argument("--credentials", metavar="PATH", type=Path, help="bot login file (default: anonymous)")
    p.add_argument(
        "--server-key",
        metavar="FILE|Z85",
        default=os.environ.get("ISHOWTTS_SERVER_KEY"),
        help="CURVE, for a tcp:// ingest: the daemon's public key (default $ISHOWTTS_SERVER_KEY)",
    )
    p.add_argument(
        "--client-key",
        metavar="FILE",
        default=os.environ.get("ISHOWTTS_CLIENT_KEY"),
        help="CURVE: this bot's secret key file from `ishowtts-keys client` (default $ISHOWTTS_CLIENT_KEY)",
    )
    p.add_argument(
        "--config", metavar="PATH", help="ishowtts TOML (default: $ISHOWTTS_CONFIG, /etc/ishowtts/...)"
    )
    p.add_argument(
        "--show-rewards",
        action="store_true",
        help="log the id of each channel-point reward redeemed with text (for [[chat.rewards]])",
    )
    return p


def resolve(args: argparse.Namespace) -> tuple[TwitchSettings, str, str, config.Settings]:
    """Settings from the TOML with the flags applied; raises ConfigError naming the flag or key."""
    settings = config.load(config.find_config(args.config))
    tw = settings.twitch
    file = settings.file
    channel = args.channel if args.channel is not None else tw.channel
    if channel is None:
        raise config.ConfigError(
            file, "twitch.channel", "no channel: pass --channel NAME or set [twitch] channel"
        )
    try:
        channel = normalise_channel(channel)
    except ValueError as e:
        raise config.ConfigError(
            None, "--channel" if args.channel is not None else "twitch.channel", str(e)
        ) from None
    changes: dict[str, object] = {}
    if args.server is not None:
        try:
            split_server(args.server)
        except ValueError as e:
            raise config.ConfigError(None, "--server", str(e)) from None
        changes["server"] = args.server
    if args.ca_file is not None:
        changes["ca_file"] = args.ca_file
    if args.no_tls:
        changes["tls"] = False
    if args.credentials is not None:
        changes["credentials"] = args.credentials
    if args.ingest is not None:
        if "://" not in args.ingest:
            raise config.ConfigError(None, "--ingest", f"expected a ZeroMQ endpoint, got {args.ingest!r}")
        changes["ingest"] = args.ingest
    tw = dataclasses.replace(tw, channel=channel, **changes)  # type: ignore[arg-type]
    if tw.ca_file is not None and not tw.ca_file.is_file():
        key = "--ca-file" if args.ca_file is not None else "twitch.ca_file"
        raise config.ConfigError(
            None if args.ca_file is not None else file, key, f"{tw.ca_file} is not a file"
        )
    endpoint = tw.ingest or paths.ingest_endpoint()
    return tw, channel, endpoint, settings


def _curve(args: argparse.Namespace) -> security.CurveKeys | None:
    if not (args.server_key or args.client_key):
        return None
    if not (args.server_key and args.client_key):
        missing = "--client-key" if args.server_key else "--server-key"
        raise config.ConfigError(None, missing, "CURVE needs both --server-key and --client-key")
    try:
        return security.load_client_keys(args.client_key, args.server_key)
    except (OSError, ValueError) as e:
        raise config.ConfigError(
            None, "--client-key/--server-key", f"cannot read the CURVE keys: {e}"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        tw, channel, endpoint, settings = resolve(args)
        log.configure(settings.daemon.log_level, settings.daemon.log_format)
        creds = load_credentials(tw.credentials) if tw.credentials is not None else Credentials()
        curve = _curve(args)
    except config.ConfigError as e:
        log.configure()
        _log.error("configuration error", error=str(e))
        print(f"ishowtts-twitch: {e}", file=sys.stderr)
        return EXIT_CONFIG

    stop = threading.Event()
    bridge: Bridge | None = None
    signals: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # No logging here: the handler runs between two bytecodes of the main thread, which may be
        # inside the logger's write lock; logging would deadlock (seen: SIGTERM ignored for good).
        if stop.is_set():
            raise SystemExit(1)  # a second signal: stop now
        signals.append(signal.Signals(signum).name)
        stop.set()
        if bridge is not None and bridge.interruptible:
            raise Interrupted()  # out of a connect or TLS handshake that may block for seconds

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    notifier = Notifier()
    if curve is None and not security.is_local(endpoint):
        _log.warning("a network ingest without CURVE keys: the daemon refuses it", ingest=endpoint)
    publisher = Publisher(endpoint, hwm=tw.hwm, curve=curve, hold_s=tw.hold_s)
    bridge = Bridge(
        tw, channel, creds, publisher, stop=stop, notifier=notifier, show_rewards=args.show_rewards
    )
    _log.info(
        "starting",
        channel=channel,
        server=tw.server,
        tls=tw.tls,
        ingest=endpoint,
        login=creds.login or "anonymous",
    )
    # READY once the configuration is good: a streamer's box must boot while Twitch is unreachable.
    notifier.ready(f"connecting to {tw.server} for #{channel}")
    try:
        code = bridge.run()
    finally:
        notifier.stopping()
        _log.info(
            "stopped",
            signal=signals[0] if signals else None,
            published=dict(publisher.published),
            dropped=dict(publisher.dropped),
            held=publisher.held_total,
            **{k.replace(".", "_"): v for k, v in bridge.counters.items()},
        )
        publisher.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
