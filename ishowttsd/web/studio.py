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
from ishowttsd.web.dashboard import daemon_error
from ishowttsd.web.errors import Refused, error
from ishowttsd.web.guard import TokenCheck, guarded, read_json

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


def voice_error(e: VoiceError) -> JSONResponse:
    return error(404 if e.code == "unknown_voice" else 400, e.message, e.code)


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


class StudioApi:
    """The studio's endpoints, one method each. Their checks raise
    :class:`~ishowttsd.web.errors.Refused` or :class:`~ishowttsd.voices.VoiceError`; the guard in
    :func:`routes` answers both, the token and the daemon's errors."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.client = studio.client

    async def listing(self, request: Request) -> Response:
        return JSONResponse(await self.studio.listing())

    async def transcribe(self, request: Request) -> Response:
        """Prepare an upload and write its transcript, saving nothing (the page's first step)."""
        _fields, upload = await _form(request)
        p = await self.studio.prepared(_recording(upload))
        text = await self.studio.transcribe(p)
        return JSONResponse({"ref_text": text, **_facts(p)})

    async def create(self, request: Request) -> Response:
        fields, upload = await _form(request)
        vid = check_id(fields.get("id", "").strip())
        language = check_language(fields.get("language"))
        if vid in await self.studio.taken() or self.studio.store.get(vid) is not None:
            raise VoiceError("exists", f"A voice named {vid!r} already exists; pick another name.")
        p = await self.studio.prepared(_recording(upload))
        text, transcribed = await self._ref_text(fields, p)
        v = self.studio.store.save(vid, p.wav_bytes(), text, seconds=p.seconds, language=language,
                                   transcribed=transcribed, taken=await self.studio.taken())  # fmt: skip
        reloaded = await _reload(self.client)
        _log.info("voice saved", voice=vid, seconds=round(p.seconds, 2), transcribed=transcribed)
        body = {**v.to_json(), **_facts(p), "usable": vid in reloaded.get("voices", []),
                "voices": reloaded.get("voices")}  # fmt: skip
        return JSONResponse(body, status_code=201)

    async def _ref_text(self, fields: dict[str, str], p: Prepared) -> tuple[str, bool]:
        """The transcript the form gave, else Whisper's; and whether it is Whisper's."""
        text = fields.get("ref_text", "").strip()
        transcribed = not text
        if transcribed:
            text = await self.studio.transcribe(p)
            if not text:
                raise VoiceError("bad_text", "Whisper heard no words in the recording; type what it says.")
        check_text(text)
        return text, transcribed

    async def delete(self, request: Request) -> Response:
        vid = request.path_params["voice"]
        if vid in self.studio.configured:
            raise Refused(400, f"Voice {vid!r} is defined in the configuration file; remove it there.",
                          "config_voice")  # fmt: skip
        self.studio.store.delete(vid)
        reloaded = await _reload(self.client)
        return JSONResponse({"ok": True, "deleted": vid, "voices": reloaded.get("voices")})

    async def preview(self, request: Request) -> Response:
        vid = request.path_params["voice"]
        text = await _preview_text(request)
        if self.studio.store.get(vid) is not None and vid not in {v.id for v in await self.client.voices()}:
            raise Refused(400, f"Voice {vid!r} is saved but not loaded: {NEEDS_F5}", "needs_f5")
        chunks: list[bytes] = []
        rate = 0
        async with self.client.say(text, voice=vid, play=False) as speech:
            await speech.accepted()
            async for frame in speech:
                rate = frame.rate or rate
                chunks.append(frame.samples)
        return Response(_wav(b"".join(chunks), rate or 24000), media_type="audio/wav",
                        headers={"Cache-Control": "no-store"})  # fmt: skip

    async def set_default(self, request: Request) -> Response:
        hint = 'The body must be JSON: {"voice": ID} (null: the configured default).'
        body = await read_json(request, hint, "bad_json")
        voice = body.get("voice") if isinstance(body, dict) else None
        if voice is not None and not isinstance(voice, str):
            raise Refused(400, "'voice' must be a voice id or null.", "bad_request")
        args: dict[str, Any] = {"voice": voice}
        reply = await self.client.request("default_voice", **args)
        return JSONResponse({"ok": True, "default": reply.get("voice")})


async def _form(request: Request) -> tuple[dict[str, str], UploadFile | None]:
    """An upload's form fields and its file (None when the form has none)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        size = f"{int(length) / 2**20:.1f} MiB"
        raise Refused(400, f"The file is too large ({size}); the limit is {MAX_UPLOAD_BYTES >> 20} MiB.",
                      "too_large")  # fmt: skip
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise Refused(400, "Send the recording as multipart/form-data with a 'file' field.", "bad_request")
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=16 * 1024)
    except Exception as e:  # malformed multipart (python-multipart / Starlette raise several types)
        raise Refused(400, f"The upload could not be read as a form: {e}", "bad_request") from None
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    upload = form.get("file")
    return fields, upload if isinstance(upload, UploadFile) else None


def _recording(upload: UploadFile | None) -> UploadFile:
    if upload is None:
        raise Refused(400, "No recording: send it in the 'file' field.", "bad_request")
    return upload


async def _preview_text(request: Request) -> str:
    """The line a preview speaks: the body's ``text``, or :data:`SAMPLE_LINE` (no body, no text)."""
    if not await request.body():
        return SAMPLE_LINE
    body = await read_json(request, 'The body must be JSON: {"text": LINE} (or empty).', "bad_json")
    t = body.get("text") if isinstance(body, dict) else None
    if t is None:
        return SAMPLE_LINE
    if not isinstance(t, str) or not t.strip() or len(t) > MAX_PREVIEW_CHARS:
        raise Refused(400, f"'text' must be 1 to {MAX_PREVIEW_CHARS} characters.", "bad_request")
    return t


def routes(studio: Studio, check: TokenCheck) -> list[BaseRoute]:
    """The studio's ``/api/voices`` routes, to be mounted at the gateway's root."""
    api = StudioApi(studio)
    auth = guarded(check, {DaemonError: daemon_error, VoiceError: voice_error})
    return [
        Route("/api/voices", auth(api.listing), methods=["GET"]),
        Route("/api/voices", auth(api.create), methods=["POST"]),
        Route("/api/voices/transcribe", auth(api.transcribe), methods=["POST"]),
        Route("/api/voices/default", auth(api.set_default), methods=["PUT"]),
        Route("/api/voices/{voice}", auth(api.delete), methods=["DELETE"]),
        Route("/api/voices/{voice}/preview", auth(api.preview), methods=["POST"]),
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
