"""The dashboard: its pages, the control API and one live WebSocket, under the API token.

Routes translate HTTP into the control requests any ZeroMQ client sends (docs/PROTOCOL.md); no
decision is made here. ``/api/*`` needs ``Authorization: Bearer TOKEN``; the pages themselves are
static files with no data in them (the page asks for the token and keeps it in the browser's
session storage), and ``/api/live`` takes the token as its first message (a browser cannot set
headers on a WebSocket, and a token in a URL ends up in logs).

``/api/live`` pushes ``{"type": "state", "status", "queue", "history", "rtf"}`` whenever the
daemon publishes a job event (debounced), and every :data:`TICK_S` otherwise; and
``{"type": "progress", "job", "heard_s"}`` as the speaking job's audio leaves the daemon (the
paced PCM PUB: what has been heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ishowttsd import log
from ishowttsd.client.aio import DaemonClient, DaemonError, DaemonUnreachable
from ishowttsd.client.feed import Feed, FeedEvent, Link, PcmFrame
from ishowttsd.web.errors import error, unauthorized

_log = log.get(__name__)

STATIC = Path(str(resources.files("ishowttsd.web") / "static" / "dashboard"))
TICK_S = 1.0
"""Seconds between state pushes when nothing happens (waiting times move on)."""
DEBOUNCE_S = 0.08
"""An event's state push waits this long for the events that come with it (a ban removes many)."""
HISTORY_LINES = 30
RTF_POINTS = 40
LOGIN_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 10.0
REFRESH_EVENTS = frozenset(
    {"queued", "started", "done", "cancelled", "dropped", "error", "paused", "resumed", "moderation",
     "ready", "voices_reloaded", "replayed", "held"}
)  # fmt: skip
CONTROL: dict[str, tuple[str, dict[str, Any]]] = {
    "skip": ("stop", {}),
    "stop": ("cancel", {}),
    "clear": ("clear", {}),
    "pause": ("pause", {}),
    "resume": ("resume", {}),
}
"""``POST /api/control/NAME`` → the control op: skip the line being spoken; stop it and empty the
queue; clear the queue (the line being spoken goes on); pause; resume."""

TokenCheck = Callable[[str | None], bool]
"""True for ``Authorization`` header values (or a bare token) that carry the API token."""


def api_error(status: int, message: str, code: str | None = None) -> JSONResponse:
    """The gateway's one error shape (OpenAI's, :mod:`ishowttsd.web.errors`), for these routes too."""
    return error(status, message, code)


def daemon_error(e: DaemonError) -> JSONResponse:
    if isinstance(e, DaemonUnreachable):
        return api_error(
            503, "The speech daemon is not answering; is ishowttsd running?", "daemon_unreachable"
        )
    if e.code == "not_ready":
        return api_error(503, "The speech daemon is still warming up; try again in a moment.", e.code)
    return api_error(400, e.reason, e.code)


@dataclass
class Live:
    """What every dashboard shares: the RTF of the last lines (from ``done`` events)."""

    rtf: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RTF_POINTS))

    def note(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "done" and isinstance(ev.get("rtf"), (int, float)):
            self.rtf.append({"job": ev.get("job"), "rtf": ev["rtf"], "audio_s": ev.get("audio_s"),
                             "t": time.time()})  # fmt: skip


def authorized(check: TokenCheck) -> Callable[[Callable[[Request], Awaitable[Response]]], Any]:
    def wrap(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            if not check(request.headers.get("authorization")):
                return unauthorized()
            try:
                return await fn(request)
            except DaemonError as e:
                return daemon_error(e)

        return handler

    return wrap


async def snapshot(client: DaemonClient, live: Live, history: bool = True) -> dict[str, Any]:
    status, queue = await asyncio.gather(client.status(), client.request("queue"))
    try:
        held: list[Any] = (await client.request("held")).get("lines", [])
    except DaemonError:  # approval is optional: the rest of the page still works
        held = []
    out: dict[str, Any] = {"type": "state", "status": status, "queue": queue, "held": held,
                           "rtf": list(live.rtf)}  # fmt: skip
    if history:
        args: dict[str, Any] = {"limit": HISTORY_LINES}
        out["history"] = (await client.request("history", **args))["lines"]
    return out


def routes(client: DaemonClient, feed: Feed | None, check: TokenCheck, live: Live) -> list[BaseRoute]:
    """The dashboard's pages and ``/api`` control routes, to be mounted at the gateway's root."""
    auth = authorized(check)

    @auth
    async def control(request: Request) -> Response:
        name = request.path_params["action"]
        if name not in CONTROL:
            return api_error(
                404, f"Unknown control {name!r}; use one of: {', '.join(CONTROL)}.", "unknown_control"
            )
        op, fields = CONTROL[name]
        reply = await client.request(op, **fields)
        return JSONResponse({"ok": True, "action": name, "jobs": reply.get("jobs", [])})

    @auth
    async def status(request: Request) -> Response:
        return JSONResponse(await client.status())

    @auth
    async def queue(request: Request) -> Response:
        return JSONResponse(await client.request("queue"))

    @auth
    async def history(request: Request) -> Response:
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 200:
            return api_error(400, "'limit' must be a whole number from 1 to 200.", "bad_request")
        args: dict[str, Any] = {"limit": int(raw)}
        return JSONResponse(await client.request("history", **args))

    @auth
    async def remove(request: Request) -> Response:
        job = request.path_params["job"]
        reply = await client.request("cancel", id=job)
        if not reply.get("jobs"):
            return api_error(404, f"No queued or speaking line with id {job!r}.", "unknown_job")
        return JSONResponse({"ok": True, "jobs": reply["jobs"]})

    @auth
    async def moderate(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return api_error(400, 'The body must be JSON: {"user": NAME[, "duration_s": N]}.', "bad_json")
        action = request.path_params["action"]
        if action not in ("ban", "timeout"):
            return api_error(404, f"Unknown moderation {action!r}; use ban or timeout.", "unknown_action")
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not user.strip() or len(user) > 128:
            return api_error(400, 'Say which user: {"user": NAME}.', "bad_request")
        fields: dict[str, Any] = {"action": action, "user": user.strip()}
        if action == "timeout":
            d = body.get("duration_s", 600)
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 14 * 86400:
                return api_error(
                    400, "'duration_s' must be seconds, more than 0 and at most 14 days.", "bad_request"
                )
            fields["duration_s"] = d
        await client.request("moderate", **fields)
        return JSONResponse({"ok": True, "action": action, "user": user.strip()})

    @auth
    async def held(request: Request) -> Response:
        return JSONResponse(await client.request("held"))

    @auth
    async def decide(request: Request) -> Response:
        """Approve or reject a line held for a moderator (``[chat] approval``)."""
        op, job = request.path_params["decision"], request.path_params["job"]
        if op not in ("approve", "reject"):
            return api_error(404, f"Unknown decision {op!r}; use approve or reject.", "unknown_action")
        reply = await client.request(op, id=job)
        return JSONResponse({"ok": True, "decision": op, "job": reply.get("job", job)})

    async def socket(ws: WebSocket) -> None:
        await ws.accept()
        try:
            first = await asyncio.wait_for(ws.receive_text(), LOGIN_TIMEOUT_S)
            token = json.loads(first).get("token")
        except (asyncio.TimeoutError, ValueError, AttributeError, WebSocketDisconnect, KeyError):
            token = None
        if not isinstance(token, str) or not check(f"Bearer {token}"):
            with contextlib.suppress(Exception):
                await ws.send_text(json.dumps({"type": "error", "code": "invalid_api_key",
                                               "message": "Wrong token."}))  # fmt: skip
                await ws.close(code=4401)
            return
        await _serve_live(ws, client, feed, live)

    def page(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})

        return serve

    return [
        Route("/", page("index.html"), methods=["GET"]),
        Route("/studio", page("studio.html"), methods=["GET"]),
        Mount("/static/dashboard", app=StaticFiles(directory=STATIC), name="dashboard-static"),
        Route("/api/control/{action}", control, methods=["POST"]),
        Route("/api/status", status, methods=["GET"]),
        Route("/api/queue", queue, methods=["GET"]),
        Route("/api/queue/{job}", remove, methods=["DELETE"]),
        Route("/api/history", history, methods=["GET"]),
        Route("/api/moderate/{action}", moderate, methods=["POST"]),
        Route("/api/held", held, methods=["GET"]),
        Route("/api/held/{job}/{decision}", decide, methods=["POST"]),
        WebSocketRoute("/api/live", socket),
    ]


async def _serve_live(ws: WebSocket, client: DaemonClient, feed: Feed | None, live: Live) -> None:
    wake = asyncio.Event()
    progress: dict[str, float] = {}
    sent_progress = [0.0]

    async def push_state() -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), TICK_S)
            await asyncio.sleep(DEBOUNCE_S)
            wake.clear()
            try:
                state = await snapshot(client, live)
            except DaemonError as e:
                state = {"type": "down", "message": str(e.reason)}
            await asyncio.wait_for(ws.send_text(json.dumps(state)), SEND_TIMEOUT_S)

    async def follow() -> None:
        if feed is None:
            await asyncio.Event().wait()
            return
        with feed.subscribe(512) as sub:
            async for item in sub:
                if isinstance(item, FeedEvent):
                    if item.name in REFRESH_EVENTS:
                        wake.set()
                elif isinstance(item, PcmFrame) and not item.final and item.rate:
                    heard = progress.get(item.job, 0.0) + item.samples / item.rate
                    progress.clear()
                    progress[item.job] = heard
                    now = time.monotonic()
                    if now - sent_progress[0] >= 0.25:
                        sent_progress[0] = now
                        msg = {"type": "progress", "job": item.job, "heard_s": round(heard, 2)}
                        await asyncio.wait_for(ws.send_text(json.dumps(msg)), SEND_TIMEOUT_S)
                elif isinstance(item, Link):
                    wake.set()

    async def until_closed() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return

    wake.set()
    tasks = [asyncio.create_task(t()) for t in (push_state, follow, until_closed)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await ws.close()


async def follow_rtf(feed: Feed, live: Live) -> None:
    """Background task: remember the RTF of finished lines for the health chart."""
    with feed.subscribe(1024) as sub:
        async for item in sub:
            if isinstance(item, FeedEvent) and item.name == "done":
                live.note(item.data)
