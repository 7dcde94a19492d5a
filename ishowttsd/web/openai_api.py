"""The OpenAI-compatible speech API: ``POST /v1/audio/speech``, ``GET /v1/models``,
``GET /v1/audio/voices`` (Kokoro-FastAPI's convention), under ``Authorization: Bearer TOKEN``.

A speech request becomes one control ``say`` with ``"play": false`` (synthesised for this caller
only: never played, never on the overlay, not queued behind chat; see docs/PROTOCOL.md). The
response starts when the first chunk of audio exists — so a refusal (unknown voice, queue full)
still gets its proper status code — and is streamed as the daemon makes the rest. A client that
goes away cancels its job. Errors use OpenAI's JSON shape (:mod:`ishowttsd.web.errors`).

Decisions (docs/WEB.md): ``input`` longer than the daemon's ``[queue] max_text_chars`` is refused
with 400 (as OpenAI refuses over 4,096 characters), not split; any ``model`` string is accepted
(one engine serves them all; ``/v1/models`` lists the usual names); OpenAI's built-in voice names
(``alloy``, ``nova``, ...) mean the default voice, unless the daemon has a voice of that name.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ishowttsd import log
from ishowttsd.client.aio import DaemonError, DaemonUnreachable, PcmFrame, Speech, Voice
from ishowttsd.web.audio import FORMATS, Encoder
from ishowttsd.web.errors import Refused, error
from ishowttsd.web.gateway import Gateway
from ishowttsd.web.guard import guarded, read_json

_log = log.get(__name__)

MODELS = ("ishowtts", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""Listed by ``/v1/models``: our own name and the ones OpenAI clients default to."""

OPENAI_VOICES = frozenset(
    (
        "alloy",
        "ash",
        "ballad",
        "cedar",
        "coral",
        "echo",
        "fable",
        "marin",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
    )
)
"""OpenAI's built-in voice names: clients send them by default; they mean our default voice."""

VOICES_TTL_S = 5.0
"""How long the daemon's voice list is reused (voices can be added at run time)."""

PING_TIMEOUT_S = 2.0
READY_TTL_S = 1.0
"""A ``ready`` pong is trusted this long: a busy stream of requests skips a round trip each."""

STATUS = {
    "unknown_voice": (400, "voice"),
    "text_too_long": (400, "input"),
    "empty_text": (400, "input"),
    "bad_text": (400, "input"),
    "bad_request": (400, None),
    "bad_encoding": (400, "input"),
    "queue_full": (429, None),
    "user_limit": (429, None),
    "not_ready": (503, None),
    "unreachable": (503, None),
}
"""Daemon error/drop codes → HTTP status and the request field at fault; others are 500."""


class BadRequest(Refused):
    """A field of the request is wrong: 400 ``invalid_value`` naming it (``param``)."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(400, message, "invalid_value", param)


@dataclass(frozen=True)
class SpeechParams:
    model: str
    input: str
    voice: str | None
    """As the client named it (resolved against the daemon's voices later)."""
    response_format: str
    speed: float


def parse_speech(body: Any, max_chars: int) -> SpeechParams:
    """Validate a ``/v1/audio/speech`` body; :class:`BadRequest` names the field."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 128:
        raise BadRequest(f"'model' is required: a string such as {MODELS[1]!r}", "model")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("'input' is required: the text to speak", "input")
    if len(text) > max_chars:
        raise BadRequest(
            f"'input' has {len(text)} characters; the limit is {max_chars} (send longer text in parts)",
            "input",
        )
    voice = body.get("voice")
    if isinstance(voice, dict):  # OpenAI's custom-voice form: {"id": "..."}
        voice = voice.get("id")
    if voice is not None and (not isinstance(voice, str) or not voice or len(voice) > 128):
        raise BadRequest("'voice' must be a voice name (see GET /v1/audio/voices)", "voice")
    fmt = body.get("response_format", "mp3")
    if fmt not in FORMATS:
        raise BadRequest(
            f"'response_format' must be one of {', '.join(FORMATS)}; got {fmt!r}", "response_format"
        )
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed):
        raise BadRequest("'speed' must be a number from 0.25 to 4.0", "speed")
    if not 0.25 <= speed <= 4.0:
        raise BadRequest(f"'speed' must be from 0.25 to 4.0; got {speed}", "speed")
    stream_format = body.get("stream_format", "audio")
    if stream_format != "audio":
        raise BadRequest(
            "only stream_format 'audio' is supported (the audio is always streamed)", "stream_format"
        )
    return SpeechParams(model, text, voice, str(fmt), float(speed))


class _Voices:
    """The daemon's voices, reused for a few seconds."""

    def __init__(self) -> None:
        self._at = -math.inf
        self._voices: list[Voice] = []

    async def get(self, gw: Gateway, fresh: bool = False) -> list[Voice]:
        if fresh or time.monotonic() - self._at > VOICES_TTL_S:
            self._voices = await gw.daemon.voices()
            self._at = time.monotonic()
        return self._voices


def _daemon_error(e: DaemonError) -> Response:
    status, param = STATUS.get(e.code, (500, None))
    if isinstance(e, DaemonUnreachable):
        return error(503, "the speech daemon is not answering; try again shortly", "daemon_unavailable",
                     headers={"Retry-After": "5"})  # fmt: skip
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    message = e.reason if status != 500 else f"synthesis failed: {e.reason}"
    return error(status, message, e.code, param, headers)


class SpeechApi:
    """The OpenAI-compatible endpoints, one method each, and what they share: the daemon's voices
    (reused for a few seconds), its last ``ready`` pong, the count of speech responses in progress
    (one event loop: no lock needed). Their checks raise :class:`BadRequest` or
    :class:`~ishowttsd.web.errors.Refused`; the guard in :func:`routes` answers them, the token and
    the daemon's errors (:func:`_daemon_error`)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.daemon = gw.daemon
        self._voices = _Voices()
        self._busy = 0
        self._ready_at = -math.inf

    async def speech(self, request: Request) -> Response:
        t0 = time.perf_counter()
        body = await read_json(request, "the body must be JSON", "invalid_json")
        p = parse_speech(body, self.gw.settings.queue.max_text_chars)
        await self._check_ready()
        voice = await self._resolve_voice(p.voice)
        self._take_slot()
        t_prep = time.perf_counter()
        response = SpeechResponse(
            self.daemon.say(p.input, voice=voice, play=False),
            Encoder(p.response_format, p.speed),
            self._release,
        )
        await response.start()
        # What the gateway spent before the audio, and the wait for it (a client can subtract).
        t_first = time.perf_counter()
        response.headers["Server-Timing"] = (
            f"prep;dur={(t_prep - t0) * 1000:.2f}, first_audio;dur={(t_first - t_prep) * 1000:.2f}"
        )
        return response

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model(m) for m in MODELS]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name not in MODELS:
            raise Refused(404, f"no model {name!r}; models: {', '.join(MODELS)}", "model_not_found", "model")
        return JSONResponse(_model(name))

    async def voices(self, request: Request) -> Response:
        vs = await self._voices.get(self.gw, fresh=True)
        default = next((v.id for v in vs if v.default), None)
        return JSONResponse({"voices": [v.id for v in vs], "default": default})

    async def _check_ready(self) -> None:
        """Refuse (503) while the daemon warms up; a ``ready`` pong is trusted for READY_TTL_S."""
        if time.monotonic() - self._ready_at < READY_TTL_S:
            return
        if not (await self.daemon.ping(PING_TIMEOUT_S)).get("ready"):
            raise Refused(503, "the speech engine is warming up; try again shortly", "warming_up",
                          headers={"Retry-After": "5"})  # fmt: skip
        self._ready_at = time.monotonic()

    async def _resolve_voice(self, name: str | None) -> str | None:
        """The daemon's voice of that name; None (the default voice) for none or an OpenAI name."""
        if name is None:
            return None
        voices = await self._voices.get(self.gw)
        ids = {v.id for v in voices}
        if name not in ids:
            voices = await self._voices.get(self.gw, fresh=True)  # a voice added a moment ago
            ids = {v.id for v in voices}
        if name in ids:
            return name
        if name.lower() in OPENAI_VOICES:
            return None
        known = ", ".join(sorted(ids))
        raise BadRequest(
            f"unknown voice {name!r}; voices: {known} (OpenAI's names mean the default voice)", "voice"
        )

    def _take_slot(self) -> None:
        """One of ``[web] max_speech_requests`` responses in progress, or 429."""
        limit = self.gw.settings.web.max_speech_requests
        if self._busy >= limit:
            why = f"{limit} speech requests are in progress; try again shortly"
            raise Refused(429, why, "too_many_requests", headers={"Retry-After": "1"})
        self._busy += 1

    def _release(self) -> None:
        self._busy -= 1


def routes(gw: Gateway) -> Sequence[BaseRoute]:
    """The ``/v1`` routes, to be mounted at the gateway's root."""
    api = SpeechApi(gw)
    auth = guarded(gw.keys.bearer_ok, {DaemonError: _daemon_error})
    return [
        Route("/v1/audio/speech", auth(api.speech), methods=["POST"]),
        Route("/v1/models", auth(api.models), methods=["GET"]),
        Route("/v1/models/{model}", auth(api.model), methods=["GET"]),
        Route("/v1/audio/voices", auth(api.voices), methods=["GET"]),
    ]


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "ishowtts"}


class SpeechResponse(StreamingResponse):
    """A speech job's audio, encoded as each frame arrives. However the response ends (done, a
    failure, the client gone, or never sent), :meth:`cleanup` runs once: the request's slot is
    released, the encoder closed, and an unfinished job cancelled."""

    def __init__(self, job: Speech, encoder: Encoder, release: Callable[[], None]) -> None:
        self.job = job
        self.encoder = encoder
        self.first: PcmFrame | None = None
        self._release: Callable[[], None] | None = release
        super().__init__(
            self._body(),
            media_type=encoder.media_type,
            headers={"Cache-Control": "no-store", "X-Job": job.job},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.cleanup()

    async def start(self) -> None:
        """Send the job and wait for its first audio, so that a refusal still gets its own status
        code (raised: a :class:`DaemonError`). However it fails, :meth:`cleanup` has run."""
        try:
            await self.job.__aenter__()
            await self.job.accepted()
            self.first = await anext(self.job)
        except StopAsyncIteration:  # done with no audio at all (cannot happen with real text)
            await self.cleanup()
            raise Refused(500, "synthesis produced no audio", "no_audio") from None
        except BaseException:
            await self.cleanup()
            raise

    async def cleanup(self) -> None:
        if self._release is None:
            return
        release, self._release = self._release, None
        release()
        self.encoder.close()
        await self.job.__aexit__(None, None, None)

    async def _body(self) -> AsyncIterator[bytes]:
        """A failure mid-stream can no longer change the status: it cuts the connection (the
        client sees a truncated body), and is logged."""
        try:
            if self.first is not None:
                out = self.encoder.feed(self.first.samples, self.first.rate)
                if out:
                    yield out
            async for frame in self.job:
                out = self.encoder.feed(frame.samples, frame.rate)
                if out:
                    yield out
            tail = self.encoder.finish()
            if tail:
                yield tail
        except DaemonError as e:
            _log.warning("speech failed mid-stream", job=self.job.job, code=e.code, reason=e.reason)
            raise


__all__ = ["MODELS", "OPENAI_VOICES", "BadRequest", "SpeechApi", "SpeechParams", "parse_speech", "routes"]
