"""A stand-alone gateway serving only the overlay routes (for the overlay's browser tests and the
latency benchmark): ``python -m tests.overlay_gateway --pcm ENDPOINT --port N --key KEY``."""

from __future__ import annotations

import argparse
import contextlib
import hmac
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from ishowttsd.client.feed import Feed
from ishowttsd.web import overlay


def app(pcm: str, key: str) -> Starlette:
    feed = Feed(pcm)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with feed:
            yield

    def check(k: str | None) -> bool:
        return hmac.compare_digest((k or "").encode(), key.encode())

    return Starlette(routes=overlay.routes(feed, check), lifespan=lifespan)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pcm", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()
    uvicorn.run(app(a.pcm, a.key), host="127.0.0.1", port=a.port, ws="websockets-sansio", log_level="warning")


if __name__ == "__main__":
    main()
