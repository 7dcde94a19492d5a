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
from collections.abc import Callable
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
from ishowttsd.client.aio import DaemonClient, DaemonError, DaemonUnreachable, within
from ishowttsd.client.feed import Feed, FeedEvent, Link, PcmFrame
from ishowttsd.web.errors import Refused, error
from ishowttsd.web.guard import Endpoint, TokenCheck, guarded, read_json

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


def daemon_error(e: DaemonError) -> JSONResponse:
    """A daemon's refusal or absence in the gateway's error shape (:mod:`ishowttsd.web.errors`)."""
    if isinstance(e, DaemonUnreachable):
        return error(503, "The speech daemon is not answering; is ishowttsd running?", "daemon_unreachable")
    if e.code == "not_ready":
        return error(503, "The speech daemon is still warming up; try again in a moment.", e.code)
    return error(400, e.reason, e.code)


def authorized(check: TokenCheck) -> Callable[[Endpoint], Endpoint]:
    """The guard of the dashboard's (and the studio's) ``/api`` routes: the token, and a daemon
    error answered by :func:`daemon_error`."""
    return guarded(check, {DaemonError: daemon_error})


@dataclass
class Live:
    """What every dashboard shares: the RTF of the last lines (from ``done`` events)."""

    rtf: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RTF_POINTS))

    def note(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "done" and isinstance(ev.get("rtf"), (int, float)):
            self.rtf.append({"job": ev.get("job"), "rtf": ev["rtf"], "audio_s": ev.get("audio_s"),
                             "t": time.time()})  # fmt: skip


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


class Dashboard:
    """The dashboard's endpoints, one method each: each asks the daemon one thing (the control
    request a ZeroMQ client would send) and answers its reply. Their checks raise
    :class:`~ishowttsd.web.errors.Refused`; the guard in :func:`routes` answers it, the token and
    the daemon's errors."""

    def __init__(self, client: DaemonClient, feed: Feed | None, check: TokenCheck, live: Live) -> None:
        self.client = client
        self.feed = feed
        self.check = check
        self.live = live

    async def control(self, request: Request) -> Response:
        name = request.path_params["action"]
        if name not in CONTROL:
            names = ", ".join(CONTROL)
            raise Refused(404, f"Unknown control {name!r}; use one of: {names}.", "unknown_control")
        op, fields = CONTROL[name]
        reply = await self.client.request(op, **fields)
        return JSONResponse({"ok": True, "action": name, "jobs": reply.get("jobs", [])})

    async def status(self, request: Request) -> Response:
        return JSONResponse(await self.client.status())

    async def queue(self, request: Request) -> Response:
        return JSONResponse(await self.client.request("queue"))

    async def history(self, request: Request) -> Response:
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 200:
            raise Refused(400, "'limit' must be a whole number from 1 to 200.", "bad_request")
        args: dict[str, Any] = {"limit": int(raw)}
        return JSONResponse(await self.client.request("history", **args))

    async def remove(self, request: Request) -> Response:
        job = request.path_params["job"]
        reply = await self.client.request("cancel", id=job)
        if not reply.get("jobs"):
            raise Refused(404, f"No queued or speaking line with id {job!r}.", "unknown_job")
        return JSONResponse({"ok": True, "jobs": reply["jobs"]})

    async def moderate(self, request: Request) -> Response:
        hint = 'The body must be JSON: {"user": NAME[, "duration_s": N]}.'
        body = await read_json(request, hint, "bad_json")
        fields = moderation(request.path_params["action"], body)
        await self.client.request("moderate", **fields)
        return JSONResponse({"ok": True, "action": fields["action"], "user": fields["user"]})

    async def held(self, request: Request) -> Response:
        return JSONResponse(await self.client.request("held"))

    async def decide(self, request: Request) -> Response:
        """Approve or reject a line held for a moderator (``[chat] approval``)."""
        op, job = request.path_params["decision"], request.path_params["job"]
        if op not in ("approve", "reject"):
            raise Refused(404, f"Unknown decision {op!r}; use approve or reject.", "unknown_action")
        reply = await self.client.request(op, id=job)
        return JSONResponse({"ok": True, "decision": op, "job": reply.get("job", job)})

    async def live_socket(self, ws: WebSocket) -> None:
        """``/api/live``: the token as the first message, then :func:`_serve_live`."""
        await ws.accept()
        if not await self._login(ws):
            with contextlib.suppress(Exception):
                await ws.send_text(json.dumps({"type": "error", "code": "invalid_api_key",
                                               "message": "Wrong token."}))  # fmt: skip
                await ws.close(code=4401)
            return
        await _serve_live(ws, self.client, self.feed, self.live)

    async def _login(self, ws: WebSocket) -> bool:
        try:
            first = await within(ws.receive_text(), LOGIN_TIMEOUT_S)
            token = json.loads(first).get("token")
        except (asyncio.TimeoutError, ValueError, AttributeError, WebSocketDisconnect, KeyError):
            token = None
        return isinstance(token, str) and self.check(f"Bearer {token}")


def moderation(action: str, body: Any) -> dict[str, Any]:
    """The ``moderate`` request's fields for ``POST /api/moderate/ACTION`` with this JSON body;
    :class:`~ishowttsd.web.errors.Refused` says what is wrong."""
    if action not in ("ban", "timeout"):
        raise Refused(404, f"Unknown moderation {action!r}; use ban or timeout.", "unknown_action")
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str) or not user.strip() or len(user) > 128:
        raise Refused(400, 'Say which user: {"user": NAME}.', "bad_request")
    fields: dict[str, Any] = {"action": action, "user": user.strip()}
    if action == "timeout":
        d = body.get("duration_s", 600)
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 14 * 86400:
            why = "'duration_s' must be seconds, more than 0 and at most 14 days."
            raise Refused(400, why, "bad_request")
        fields["duration_s"] = d
    return fields


def page(name: str) -> Endpoint:
    """A static page, never cached (it has no data in it: the data comes from ``/api``)."""

    async def serve(request: Request) -> Response:
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})

    return serve


def routes(client: DaemonClient, feed: Feed | None, check: TokenCheck, live: Live) -> list[BaseRoute]:
    """The dashboard's pages and ``/api`` control routes, to be mounted at the gateway's root."""
    d = Dashboard(client, feed, check, live)
    auth = authorized(check)
    return [
        Route("/", page("index.html"), methods=["GET"]),
        Route("/studio", page("studio.html"), methods=["GET"]),
        Mount("/static/dashboard", app=StaticFiles(directory=STATIC), name="dashboard-static"),
        Route("/api/control/{action}", auth(d.control), methods=["POST"]),
        Route("/api/status", auth(d.status), methods=["GET"]),
        Route("/api/queue", auth(d.queue), methods=["GET"]),
        Route("/api/queue/{job}", auth(d.remove), methods=["DELETE"]),
        Route("/api/history", auth(d.history), methods=["GET"]),
        Route("/api/moderate/{action}", auth(d.moderate), methods=["POST"]),
        Route("/api/held", auth(d.held), methods=["GET"]),
        Route("/api/held/{job}/{decision}", auth(d.decide), methods=["POST"]),
        WebSocketRoute("/api/live", d.live_socket),
    ]


async def _serve_live(ws: WebSocket, client: DaemonClient, feed: Feed | None, live: Live) -> None:
    wake = asyncio.Event()
    progress: dict[str, float] = {}
    sent_progress = [0.0]

    async def push_state() -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await within(wake.wait(), TICK_S)
            await asyncio.sleep(DEBOUNCE_S)
            wake.clear()
            try:
                state = await snapshot(client, live)
            except DaemonError as e:
                state = {"type": "down", "message": str(e.reason)}
            await within(ws.send_text(json.dumps(state)), SEND_TIMEOUT_S)

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
                        await within(ws.send_text(json.dumps(msg)), SEND_TIMEOUT_S)
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
