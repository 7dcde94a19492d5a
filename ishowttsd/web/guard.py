"""What every API route shares: the token check in front of it, and the answers to what it raises.

An endpoint is a small ``async (Request) -> Response`` that does its one thing; its checks raise
instead of returning early (:class:`~ishowttsd.web.errors.Refused`, or a part's own error such as
the daemon's :class:`~ishowttsd.client.aio.DaemonError`). :func:`guarded` wraps it: a request
without the API token gets 401 before the endpoint runs, and what the endpoint raises becomes its
answer in the gateway's one error shape. This is what Starlette's exception handlers do, but per
part of the gateway: the dashboard and the OpenAI API answer a daemon error differently.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ishowttsd.web.errors import Refused, unauthorized

Endpoint = Callable[[Request], Awaitable[Response]]
TokenCheck = Callable[[str | None], bool]
"""True for ``Authorization`` header values that carry the API token."""
Answers = Mapping[type[Exception], Callable[[Any], Response]]
"""An exception class → the response for one of its instances (subclasses are looked up too)."""


def guarded(check: TokenCheck, answers: Answers) -> Callable[[Endpoint], Endpoint]:
    """A decorator: ``endpoint`` behind the token ``check``; :class:`Refused` is answered with its
    own response, an exception of a class in ``answers`` by that answer; anything else propagates
    (a 500)."""
    kinds = tuple(answers)

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded_endpoint(request: Request) -> Response:
            if not check(request.headers.get("authorization")):
                return unauthorized()
            try:
                return await endpoint(request)
            except Refused as e:
                return e.response()
            except kinds as e:
                return next(answers[k] for k in type(e).__mro__ if k in answers)(e)

        return guarded_endpoint

    return wrap


async def read_json(request: Request, message: str, code: str) -> Any:
    """The request's body as JSON; a body that is not JSON is refused (400, ``message``, ``code``)."""
    try:
        return await request.json()
    except ValueError:
        raise Refused(400, message, code) from None


__all__ = ["Answers", "Endpoint", "TokenCheck", "guarded", "read_json"]
