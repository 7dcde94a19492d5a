"""Two ASGI middlewares that bound what one client can cost: body size and request rate.

Pure ASGI (not ``BaseHTTPMiddleware``), so streamed responses pass through untouched.

- :class:`BodyLimit`: a ``Content-Length`` over the bound gets 413 before anything is read; a
  chunked body is read up to the bound first and refused with 413 as soon as it passes it.
- :class:`RateLimit`: a token bucket per client address (``rate_per_min``, ``burst``); over it,
  429 with ``Retry-After``. ``/healthz`` is exempt (load balancers poll it).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ishowttsd.web.errors import error_body

EXEMPT = ("/healthz",)


async def _send_error(
    send: Send, status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(error_body(status, message, code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})
        """Paths that take larger bodies (the voice studio's uploads), and their bound."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bound = self.per_path.get(scope.get("path", ""), self.max_bytes)
        message = f"request body larger than {bound} bytes"
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > bound:
                await _send_error(send, 413, message, "body_too_large", {"Connection": "close"})
                return
        # Read the body (at most the bound) before the app sees any of it, so an over-long
        # chunked body is refused with a clean 413 too, never half-handled.
        parts: list[Message] = []
        seen = 0
        while True:
            msg = await receive()
            parts.append(msg)
            if msg["type"] != "http.request":
                break
            seen += len(msg.get("body", b""))
            if seen > bound:
                await _send_error(send, 413, message, "body_too_large", {"Connection": "close"})
                return
            if not msg.get("more_body", False):
                break

        async def replay() -> Message:
            return parts.pop(0) if parts else await receive()

        await self.app(scope, replay, send)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimit:
    MAX_CLIENTS = 10000
    """Buckets kept; past that, full (idle) ones are forgotten."""

    def __init__(
        self, app: ASGIApp, rate_per_min: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.app = app
        self.rate = rate_per_min / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _take(self, client: str) -> float:
        """0 when the request may go; else the seconds until it could."""
        now = self.clock()
        b = self._buckets.get(client)
        if b is None:
            if len(self._buckets) >= self.MAX_CLIENTS:
                self._prune(now)
            b = self._buckets[client] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate

    def _prune(self, now: float) -> None:
        for k in [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]:
            del self._buckets[k]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.rate <= 0 or scope["type"] not in ("http", "websocket") or scope.get("path") in EXEMPT:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self._take(client[0] if client else "?")
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # "try again later"
            return
        await _send_error(
            send, 429, "too many requests from this address; slow down", "rate_limited",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )  # fmt: skip


__all__ = ["BodyLimit", "RateLimit"]
