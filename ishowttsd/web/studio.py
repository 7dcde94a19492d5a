"""The voice studio's API: list, prepare, save, preview, delete voices, and choose the default.

The gateway does the work that needs the upload (decode, trim, loudness, Whisper: CPU, in a worker
thread, one upload at a time) and writes the voice into ``<state_dir>/voices/`` (see
:mod:`ishowttsd.voices.store` for who may write there); then it asks the daemon to
``reload_voices``, which hands the voices to the engine between jobs. The daemon never reads an
upload, and nothing reaches its socket but control requests.

With the Piper engine (no F5 weights) a voice is still prepared and saved: it is listed as
waiting for F5, and the page says that cloning needs the F5 weights.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ishowttsd import log
from ishowttsd.client.aio import DaemonClient, DaemonError
from ishowttsd.engine.f5.settings import VoiceSettings
from ishowttsd.voices import VoiceError
from ishowttsd.voices.prepare import MAX_UPLOAD_BYTES, Prepared, prepare
from ishowttsd.voices.store import VoiceStore, check_id, check_language, check_text
from ishowttsd.web.dashboard import TokenCheck, api_error, authorized

_log = log.get(__name__)

RELOAD_TIMEOUT_S = 120.0
"""How long a save or delete waits for the daemon to take the voices (it does so between lines)."""
SAMPLE_LINE = "Hello chat! This is how I sound. Thanks for hanging out with me today."
MAX_PREVIEW_CHARS = 300
FORM_SLACK = 64 * 1024
"""Multipart overhead allowed on top of the file itself."""
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + FORM_SLACK
UPLOAD_PATHS = ("/api/voices", "/api/voices/transcribe")
UPLOAD_BODY_BOUND = 2 * MAX_BODY_BYTES
"""The gateway's body limit on the upload paths: a file up to twice the limit is read and refused
with a 400 that says the limit; a larger body gets the gateway's 413 before it is read."""
NEEDS_F5 = (
    "Cloning needs the F5-TTS weights, which are not installed on this box (it speaks with the built-in "
    "Piper voice). You can still prepare voices now: they are saved and used as soon as the weights are "
    "in place (ishowtts-models fetch, then restart)."
)


def _status_for(e: VoiceError) -> int:
    return 404 if e.code == "unknown_voice" else 400


def voice_error(e: VoiceError) -> JSONResponse:
    return api_error(_status_for(e), e.message, e.code)


def _clip_seconds(v: VoiceSettings) -> float | None:
    import soundfile as sf

    try:
        return round(float(sf.info(str(v.ref_audio)).duration), 2)
    except (RuntimeError, OSError, sf.LibsndfileError):
        return None


class Studio:
    """The voice routes' state: the store, the configured voices, one preparation at a time."""

    def __init__(self, client: DaemonClient, store: VoiceStore, configured: Sequence[VoiceSettings]) -> None:
        self.client = client
        self.store = store
        self.configured = {v.id: v for v in configured}
        self._busy = asyncio.Lock()

    async def listing(self) -> dict[str, Any]:
        status, engine_voices = await asyncio.gather(self.client.status(), self.client.voices())
        engine = str(status.get("engine"))
        stored = {v.id: v for v in self.store.list()}
        out: list[dict[str, Any]] = []
        for v in engine_voices:
            sv, cv = stored.get(v.id), self.configured.get(v.id)
            source = "studio" if sv else "config" if cv or v.engine == "f5" else "builtin"
            out.append({
                "id": v.id, "engine": v.engine, "language": v.language, "default": v.default,
                "source": source, "usable": True,
                "ref_text": sv.ref_text if sv else cv.ref_text if cv else None,
                "clip_s": round(sv.seconds, 2) if sv else _clip_seconds(cv) if cv else None,
                "description": v.description,
            })  # fmt: skip
        loaded = {v.id for v in engine_voices}
        for sv in stored.values():
            if sv.id in loaded:
                continue
            note = "waiting for the F5 weights" if engine != "f5" else "not loaded: see the daemon's log"
            out.append({
                "id": sv.id, "engine": "f5", "language": sv.language, "default": False, "source": "studio",
                "usable": False, "note": note, "ref_text": sv.ref_text, "clip_s": round(sv.seconds, 2),
                "description": "made in the voice studio",
            })  # fmt: skip
        return {
            "engine": engine,
            "cloning": engine == "f5",
            "note": None if engine == "f5" else NEEDS_F5,
            "default": status.get("default_voice"),
            "voices": out,
        }

    async def taken(self) -> set[str]:
        ids = set(self.configured)
        try:
            ids |= {v.id for v in await self.client.voices()}
        except DaemonError:
            pass  # the store and the config still name the ids that are certainly taken
        return ids

    async def prepared(self, upload: UploadFile) -> Prepared:
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        async with self._busy:  # decoding and Whisper take a core each: one upload at a time
            return await run_in_threadpool(prepare, data)

    async def transcribe(self, p: Prepared) -> str:
        from ishowttsd.voices.transcribe import transcribe

        async with self._busy:
            return await run_in_threadpool(transcribe, p.samples, p.rate)


async def _form(request: Request) -> tuple[dict[str, str], UploadFile | None] | JSONResponse:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        size = f"{int(length) / 2**20:.1f} MiB"
        return api_error(400, f"The file is too large ({size}); the limit is {MAX_UPLOAD_BYTES >> 20} MiB.",
                         "too_large")  # fmt: skip
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return api_error(400, "Send the recording as multipart/form-data with a 'file' field.", "bad_request")
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=16 * 1024)
    except Exception as e:  # malformed multipart (python-multipart / Starlette raise several types)
        return api_error(400, f"The upload could not be read as a form: {e}", "bad_request")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    upload = form.get("file")
    return fields, upload if isinstance(upload, UploadFile) else None


def routes(studio: Studio, check: TokenCheck) -> list[BaseRoute]:
    auth = authorized(check)
    client = studio.client

    @auth
    async def listing(request: Request) -> Response:
        return JSONResponse(await studio.listing())

    @auth
    async def transcribe(request: Request) -> Response:
        """Prepare an upload and write its transcript, saving nothing (the page's first step)."""
        got = await _form(request)
        if isinstance(got, JSONResponse):
            return got
        _fields, upload = got
        if upload is None:
            return api_error(400, "No recording: send it in the 'file' field.", "bad_request")
        try:
            p = await studio.prepared(upload)
        except VoiceError as e:
            return voice_error(e)
        text = await studio.transcribe(p)
        return JSONResponse({"ref_text": text, **_facts(p)})

    @auth
    async def create(request: Request) -> Response:
        got = await _form(request)
        if isinstance(got, JSONResponse):
            return got
        fields, upload = got
        try:
            vid = check_id(fields.get("id", "").strip())
            language = check_language(fields.get("language"))
            if vid in await studio.taken() or studio.store.get(vid) is not None:
                raise VoiceError("exists", f"A voice named {vid!r} already exists; pick another name.")
            if upload is None:
                return api_error(400, "No recording: send it in the 'file' field.", "bad_request")
            p = await studio.prepared(upload)
            text = fields.get("ref_text", "").strip()
            transcribed = not text
            if transcribed:
                text = await studio.transcribe(p)
                if not text:
                    raise VoiceError(
                        "bad_text", "Whisper heard no words in the recording; type what it says."
                    )
            check_text(text)
            v = studio.store.save(vid, p.wav_bytes(), text, seconds=p.seconds, language=language,
                                  transcribed=transcribed, taken=await studio.taken())  # fmt: skip
        except VoiceError as e:
            return voice_error(e)
        reloaded = await _reload(client)
        _log.info("voice saved", voice=vid, seconds=round(p.seconds, 2), transcribed=transcribed)
        return JSONResponse(
            {
                **v.to_json(),
                **_facts(p),
                "usable": vid in reloaded.get("voices", []),
                "voices": reloaded.get("voices"),
            },
            status_code=201,
        )

    @auth
    async def delete(request: Request) -> Response:
        vid = request.path_params["voice"]
        if vid in studio.configured:
            return api_error(400, f"Voice {vid!r} is defined in the configuration file; remove it there.",
                             "config_voice")  # fmt: skip
        try:
            studio.store.delete(vid)
        except VoiceError as e:
            return voice_error(e)
        reloaded = await _reload(client)
        return JSONResponse({"ok": True, "deleted": vid, "voices": reloaded.get("voices")})

    @auth
    async def preview(request: Request) -> Response:
        vid = request.path_params["voice"]
        text = SAMPLE_LINE
        if await request.body():
            try:
                body = await request.json()
            except ValueError:
                return api_error(400, 'The body must be JSON: {"text": LINE} (or empty).', "bad_json")
            t = body.get("text") if isinstance(body, dict) else None
            if t is not None:
                if not isinstance(t, str) or not t.strip() or len(t) > MAX_PREVIEW_CHARS:
                    return api_error(
                        400, f"'text' must be 1 to {MAX_PREVIEW_CHARS} characters.", "bad_request"
                    )
                text = t
        if studio.store.get(vid) is not None and vid not in {v.id for v in await client.voices()}:
            return api_error(400, f"Voice {vid!r} is saved but not loaded: {NEEDS_F5}", "needs_f5")
        chunks: list[bytes] = []
        rate = 0
        async with client.say(text, voice=vid, play=False) as speech:
            await speech.accepted()
            async for frame in speech:
                rate = frame.rate or rate
                chunks.append(frame.samples)
        return Response(_wav(b"".join(chunks), rate or 24000), media_type="audio/wav",
                        headers={"Cache-Control": "no-store"})  # fmt: skip

    @auth
    async def default(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return api_error(
                400, 'The body must be JSON: {"voice": ID} (null: the configured default).', "bad_json"
            )
        voice = body.get("voice") if isinstance(body, dict) else None
        if voice is not None and not isinstance(voice, str):
            return api_error(400, "'voice' must be a voice id or null.", "bad_request")
        args: dict[str, Any] = {"voice": voice}
        reply = await client.request("default_voice", **args)
        return JSONResponse({"ok": True, "default": reply.get("voice")})

    return [
        Route("/api/voices", listing, methods=["GET"]),
        Route("/api/voices", create, methods=["POST"]),
        Route("/api/voices/transcribe", transcribe, methods=["POST"]),
        Route("/api/voices/default", default, methods=["PUT"]),
        Route("/api/voices/{voice}", delete, methods=["DELETE"]),
        Route("/api/voices/{voice}/preview", preview, methods=["POST"]),
    ]


async def _reload(client: DaemonClient) -> dict[str, Any]:
    """Ask the daemon to take the voices now. It answers between lines; a daemon that is down or
    busy past the timeout takes them at its next ``reload_voices`` or start (the voice is saved)."""
    try:
        return await client.request("reload_voices", timeout=RELOAD_TIMEOUT_S)
    except DaemonError as e:
        _log.warning("voices saved but not reloaded yet", error=str(e))
        return {"voices": [], "pending": True}


def _facts(p: Prepared) -> dict[str, Any]:
    return {"seconds": round(p.seconds, 2), "speech_s": round(p.speech_s, 2), "cut": p.cut,
            "decoded_s": round(p.decoded_s, 2)}  # fmt: skip


def _wav(pcm: bytes, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.frombuffer(pcm, dtype="<i2"), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
