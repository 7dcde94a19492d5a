"""Errors in OpenAI's JSON shape, which every OpenAI client parses (``openai.APIStatusError``):

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": "..."}}

Used for the whole gateway, so a client sees one shape whatever route it called. Messages say
what to fix and never echo a secret (a wrong token is not repeated back).
"""

from __future__ import annotations

from starlette.responses import JSONResponse

TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, object]:
    return {
        "error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}
    }


def error(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status, headers=headers)


class Refused(Exception):
    """A request a route turns down: raised by its checks, answered by the route's guard
    (:func:`ishowttsd.web.guard.guarded`) with :meth:`response`, so a check can live in a helper
    instead of returning early from the endpoint."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers

    def response(self) -> JSONResponse:
        return error(self.status, self.message, self.code, self.param, self.headers)


def unauthorized() -> JSONResponse:
    return error(
        401,
        "missing or wrong API token: send 'Authorization: Bearer TOKEN' (see ishowtts-web --print-urls)",
        "invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


__all__ = ["Refused", "error", "error_body", "unauthorized"]
