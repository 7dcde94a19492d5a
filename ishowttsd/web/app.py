"""The gateway's ASGI application: one Starlette app, its routes from *route providers*.

A route provider is a function ``Gateway -> list of routes``; :func:`route_providers` lists them,
and that list is the one place a new part of the gateway (the overlay, the OpenAI-compatible API,
the dashboard) is mounted. Routes only translate HTTP into the control requests a ZeroMQ client
sends (through :class:`~ishowttsd.client.aio.DaemonClient`) or into the PUB feed
(:class:`~ishowttsd.client.feed.Feed`): no business logic lives here.

Around every route: :class:`~ishowttsd.web.limits.RateLimit` (per client address), then
:class:`~ishowttsd.web.limits.BodyLimit` (413). No CORS middleware: browsers keep other sites'
pages from reading any answer (the overlay and the dashboard are served from this origin).
``GET /healthz`` needs no key; everything else checks the token or the overlay key itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from ishowttsd.voices.store import VoiceStore
from ishowttsd.web import dashboard, openai_api, overlay, studio
from ishowttsd.web.errors import error
from ishowttsd.web.gateway import Gateway
from ishowttsd.web.limits import BodyLimit, RateLimit

HEALTH_TIMEOUT_S = 1.0


RouteProvider = Callable[[Gateway], Sequence[BaseRoute]]


def _overlay(gw: Gateway) -> Sequence[BaseRoute]:
    return overlay.routes(gw.feed, gw.keys.overlay_ok, lambda: overlay.default_voice_rate(gw.daemon))


def _dashboard(gw: Gateway) -> Sequence[BaseRoute]:
    live = dashboard.Live()
    gw.background.append(lambda: dashboard.follow_rtf(gw.feed, live))
    return dashboard.routes(gw.daemon, gw.feed, gw.keys.bearer_ok, live)


def _studio(gw: Gateway) -> Sequence[BaseRoute]:
    store = VoiceStore.in_state_dir(gw.settings.daemon.state_dir)
    store.clean()
    for path in studio.UPLOAD_PATHS:
        gw.large_bodies[path] = studio.UPLOAD_BODY_BOUND
    return studio.routes(studio.Studio(gw.daemon, store, gw.settings.voices), gw.keys.bearer_ok)


def _openai(gw: Gateway) -> Sequence[BaseRoute]:
    return openai_api.routes(gw)


def route_providers() -> list[RouteProvider]:
    """Every part of the gateway, mounted at its root (each route names its own path)."""
    return [_openai, _overlay, _dashboard, _studio]


async def healthz(request: Request) -> Response:
    """200 when the daemon answers and is warm, else 503 with why (for load balancers; no key)."""
    gw: Gateway = request.app.state.gateway
    try:
        pong = await gw.daemon.ping(HEALTH_TIMEOUT_S)
    except Exception:  # unreachable, or the client is closed: either way not healthy
        return JSONResponse({"status": "unavailable", "daemon": "unreachable"}, status_code=503)
    if not pong.get("ready"):
        return JSONResponse({"status": "unavailable", "daemon": "warming_up"}, status_code=503)
    return JSONResponse({"status": "ok", "daemon": "ready"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail or "error", None)


def build_app(gw: Gateway, providers: Sequence[RouteProvider] | None = None) -> ASGIApp:
    """The ASGI app: ``/healthz`` plus every provider's routes, inside the rate and body limits."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.daemon.connect()
        await gw.feed.start()
        tasks = [asyncio.create_task(start()) for start in gw.background]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await gw.feed.close()
            await gw.daemon.close()

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    for provide in route_providers() if providers is None else providers:
        routes.extend(provide(gw))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.gateway = gw
    web = gw.settings.web
    return RateLimit(BodyLimit(app, web.max_body_bytes, gw.large_bodies), web.rate_per_min, web.rate_burst)


__all__ = ["Gateway", "RouteProvider", "build_app", "healthz", "route_providers"]
