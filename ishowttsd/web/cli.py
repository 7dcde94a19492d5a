"""``ishowtts-web``: the web gateway process (overlay, OpenAI-compatible API), on uvicorn.

It talks to the daemon only over its public ZeroMQ sockets (the ``[zmq]`` control and pcm
endpoints of the same settings file), so it starts, stops and restarts on its own; while the
daemon is away its routes answer 503 and the overlays wait for it.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from ishowttsd import config, log, paths, security
from ishowttsd.config import Settings

EXIT_OK = 0
EXIT_CONFIG = 2

_log = log.get(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ishowtts-web",
        description="The ishowttsd web gateway: the OBS overlay and the OpenAI-compatible speech API.",
        epilog=f"exit status: {EXIT_OK} stopped; {EXIT_CONFIG} bad command line or configuration. "
        "See docs/WEB.md.",
    )
    p.add_argument(
        "--config", help="settings file (default: $ISHOWTTS_CONFIG, else /etc/ishowtts/ishowtts.toml)"
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="override [web] listen")
    p.add_argument(
        "--print-urls", action="store_true", help="print the overlay and API URLs with their keys, and exit"
    )
    return p


def urls(settings: Settings, token: str, overlay_key: str) -> list[str]:
    """The lines ``--print-urls`` prints."""
    host, port = settings.web.host_port()
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()  # a wildcard is no address to type into OBS
    if ":" in host:
        host = f"[{host}]"
    base = f"http://{host}:{port}"
    return [
        f"overlay (OBS browser source): {base}/overlay?key={overlay_key}",
        f"OpenAI-compatible API:        {base}/v1  (Authorization: Bearer {token})",
        f"dashboard and voice studio:   {base}/  (log in with the API token)",
        f"control API:                  {base}/api  (docs/WEB.md; Authorization: Bearer {token})",
        f"health:                       {base}/healthz",
    ]


def _endpoints(settings: Settings) -> tuple[str, str]:
    """The daemon's control and pcm endpoints, as a client reaches them."""
    control, pcm = settings.zmq.control, settings.zmq.pcm
    default = config.ZmqSettings()
    if settings.file is None or control == default.control:
        control = paths.control_endpoint()
    if settings.file is None or pcm == default.pcm:
        pcm = paths.pcm_endpoint()
    return control, pcm


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = config.load(config.find_config(args.config))
        if args.listen:
            from ishowttsd.confread import Table
            from ishowttsd.web.settings import parse_web

            web = parse_web(Table({"listen": args.listen}, "--listen", None), settings.daemon.state_dir)
            settings = _with_listen(settings, web.listen)
        log.configure(settings.daemon.log_level, settings.daemon.log_format)
        from ishowttsd.web.auth import load_keys

        w = settings.web
        assert w.token_file is not None and w.overlay_key_file is not None
        keys = load_keys(w.token_file, w.overlay_key_file, settings.file, create=not args.print_urls)
        curve = None
        if w.server_key is not None and w.client_key is not None:
            try:
                curve = security.load_client_keys(str(w.client_key), w.server_key)
            except (OSError, ValueError) as e:
                raise config.ConfigError(
                    settings.file, "web.client_key", f"cannot read the CURVE keys: {e}"
                ) from None
    except config.ConfigError as e:
        print(f"ishowtts-web: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.print_urls:
        print("\n".join(urls(settings, keys.token, keys.overlay_key)))
        return EXIT_OK

    import uvicorn

    from ishowttsd.client.aio import DaemonClient
    from ishowttsd.client.feed import Feed
    from ishowttsd.web.app import Gateway, build_app

    control, pcm = _endpoints(settings)
    gw = Gateway(
        settings=settings,
        keys=keys,
        daemon=DaemonClient(control, curve=curve, timeout=w.daemon_timeout_s, max_buffered_s=w.max_unread_s),
        feed=Feed(pcm, keys=curve),
    )
    host, port = w.host_port()
    _log.info("starting", listen=w.listen, control=control, pcm=pcm)
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(gw),
            host=host,
            port=port,
            ws="websockets",
            lifespan="on",
            log_config=None,  # our logging (configured above) takes uvicorn's records too
            proxy_headers=False,  # client addresses (rate limit) are the peers': no header may forge them
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    )
    server.run()
    return EXIT_OK


def _with_listen(settings: Settings, listen: str) -> Settings:
    import dataclasses

    return dataclasses.replace(settings, web=dataclasses.replace(settings.web, listen=listen))


if __name__ == "__main__":
    sys.exit(main())
