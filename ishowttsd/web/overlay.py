"""The OBS overlay: ``GET /overlay?key=KEY`` (a static page), its assets, and its WebSocket.

The gateway only moves bytes here: each overlay WebSocket gets its own bounded
:class:`~ishowttsd.client.feed.Subscription` of the daemon's PCM PUB and forwards, in the daemon's
order,

- every audio frame as one binary message: a 4-byte little-endian header length, the daemon's
  header JSON (padded with spaces to an even length, so the samples that follow are 2-byte
  aligned), then the s16le samples as the daemon sent them;
- the job events an overlay needs (``started``, ``done``, ``cancelled``, ``error`` with a job,
  ``paused``, ``resumed``) as JSON text ``{"type": "event", "event": {...}}``, with only the fields
  a caption needs;
- ``{"type": "link", "up": bool}`` when the daemon goes away or comes back, and a first
  ``{"type": "hello", "rate": Hz | null, "daemon": bool}``.

A page that stops reading costs the gateway at most its subscription's bound (frames beyond it
are dropped for that page and counted) plus the socket's write buffer; a send blocked for
``SEND_TIMEOUT_S`` closes that WebSocket (a live page reconnects by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ishowttsd import log
from ishowttsd.client.aio import DaemonClient, within
from ishowttsd.client.feed import Feed, FeedEvent, FeedItem, Link, PcmFrame

_log = log.get(__name__)

STATIC = Path(str(resources.files("ishowttsd.web") / "static" / "overlay"))
"""The page's files (package data: no build step, nothing from a CDN)."""

QUEUE_ITEMS = 256
"""Per-overlay backlog in feed items (paced frames are 50 ms: ~12 s of audio, ~0.6 MB at 24 kHz)."""

SEND_TIMEOUT_S = 10.0
"""A WebSocket whose send has been blocked this long is closed (its page is not reading)."""

CLOSE_TIMEOUT_S = 2.0

EVENTS = frozenset({"started", "done", "cancelled", "error", "paused", "resumed"})
FIELDS = ("event", "job", "text", "user", "source", "kind", "platform", "channel", "reason")
"""What of a daemon event an overlay page gets: enough for a caption, nothing more."""

KeyCheck = Callable[[str | None], bool]
"""True when the overlay key (from the URL's ``key``) is right; compared in constant time."""


def frame_message(frame: PcmFrame) -> bytes:
    """The binary WebSocket message for one PCM frame."""
    header = frame.header if len(frame.header) % 2 == 0 else frame.header + b" "
    return struct.pack("<I", len(header)) + header + frame.payload


def event_message(ev: FeedEvent) -> str | None:
    if ev.name not in EVENTS or (ev.name == "error" and ev.job is None):
        return None
    slim = {k: ev.data[k] for k in FIELDS if k in ev.data}
    return json.dumps({"type": "event", "event": slim})


def _unauthorized() -> Response:
    return JSONResponse({"error": "unauthorized"}, status_code=401)


RateHint = Callable[[], Awaitable[int | None]]
"""The daemon's sample rate before any audio has been seen (its default voice's), or None."""


async def default_voice_rate(client: DaemonClient) -> int | None:
    """The daemon's default voice's sample rate (Hertz), asked over its control socket."""
    voices = await client.voices()
    rates = [v.sample_rate for v in voices if v.default] + [v.sample_rate for v in voices]
    return next((r for r in rates if r > 0), None)


def routes(
    feed: Feed, check_key: KeyCheck, rate_hint: RateHint | None = None, queue_items: int = QUEUE_ITEMS
) -> list[BaseRoute]:
    """The overlay's routes, to be mounted at the gateway's root. ``rate_hint``: asked when a page
    connects before any audio has passed, so the page makes its AudioContext at the daemon's rate
    then, not when the first line arrives (which would delay that line's start)."""
    page_html = (STATIC / "overlay.html").read_text(encoding="utf-8")

    async def page(request: Request) -> Response:
        if not check_key(request.query_params.get("key")):
            return _unauthorized()
        return HTMLResponse(
            page_html,
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    async def socket(ws: WebSocket) -> None:
        if not check_key(ws.query_params.get("key")):
            await ws.close(code=1008)  # before accept: the handshake is refused (HTTP 403)
            return
        await ws.accept()
        with feed.subscribe(queue_items) as sub:
            rate = feed.rate
            if rate is None and rate_hint is not None:
                with contextlib.suppress(Exception):  # a daemon away or warming up: the first frame tells
                    rate = await within(rate_hint(), 1.0)
            hello = {"type": "hello", "rate": rate, "daemon": feed.connected}
            await ws.send_text(json.dumps(hello))
            sender = asyncio.create_task(_forward(ws, sub.get))
            reader = asyncio.create_task(_until_closed(ws))
            try:
                await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (sender, reader):
                    t.cancel()
                for t in (sender, reader):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
            stuck = sender.done() and not sender.cancelled() and isinstance(sender.exception(), TimeoutError)
            _log.info("overlay left", dropped=sub.drops, send_timed_out=stuck)
        # The subscription is gone; a page that does not read may not even take the close frame.
        with contextlib.suppress(Exception):
            await within(ws.close(), CLOSE_TIMEOUT_S)

    return [
        Route("/overlay", page, methods=["GET"]),
        WebSocketRoute("/overlay/ws", socket),
        Mount("/overlay/static", app=StaticFiles(directory=STATIC), name="overlay-static"),
    ]


async def _forward(ws: WebSocket, get: Callable[[], Any]) -> None:
    while True:
        item: FeedItem = await get()
        if isinstance(item, PcmFrame):
            await within(ws.send_bytes(frame_message(item)), SEND_TIMEOUT_S)
        elif isinstance(item, FeedEvent):
            text = event_message(item)
            if text is not None:
                await within(ws.send_text(text), SEND_TIMEOUT_S)
        elif isinstance(item, Link):
            await within(ws.send_text(json.dumps({"type": "link", "up": item.up})), SEND_TIMEOUT_S)


async def _until_closed(ws: WebSocket) -> None:
    """Read (and ignore) what the page sends, until it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
