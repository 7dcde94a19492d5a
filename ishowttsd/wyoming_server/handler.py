"""One Wyoming connection: ``describe`` → ``info``, ``synthesize`` and streaming synthesis.

Home Assistant talks to TTS services through the Wyoming protocol (JSONL header + payload over
TCP, the ``wyoming`` package's framing). This handler translates its events into the daemon's own
"synthesise for the requester only" ``say`` (``play: false``): the audio comes back to us, is never
played on the box's speaker or overlay, and shares the GPU's rounds with chat.

Streaming input (``synthesize-start`` / ``synthesize-chunk``… / ``synthesize-stop``, wyoming ≥ 1.7):
text is cut into sentences as it arrives (``sentence_stream``, the splitter wyoming-piper uses) and
each finished sentence is synthesised at once, so the first audio leaves before the client has sent
its last text. One background task per connection owns the audio stream, so reading the client's
next event never waits for synthesis, and a disconnect cancels exactly that task (and with it the
daemon's job).

Errors become Wyoming ``error`` events with the daemon's stable code; the connection stays open
(wyoming-piper re-raises after sending one, which drops the client: we don't).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sentence_stream import SentenceBoundaryDetector
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from ishowttsd import log

_log = log.get(__name__)

SAMPLE_WIDTH = 2
"""Bytes per sample: the daemon sends signed 16-bit little-endian PCM."""


class SynthesisError(Exception):
    """The daemon refused or failed a job; ``code`` is its stable error/drop code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Pcm:
    """One piece of a job's audio."""

    rate: int
    """Hertz."""
    channels: int
    data: bytes
    """s16le samples."""


class Speaker(Protocol):
    """What the handler needs from the daemon (``link.DaemonSpeaker`` over ZeroMQ)."""

    def speak(self, text: str, voice: str | None) -> AsyncIterator[Pcm]:
        """The job's audio as it is synthesised. Raises SynthesisError when the daemon refuses or
        fails it; closing the iterator early cancels the job in the daemon."""
        ...


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = 20_000
    """Longest text one request (or one streamed session) may carry: about 20 minutes of speech.
    Beyond it the request gets ``error`` ``text_too_long`` instead of tying up the box."""


_END = None


class TtsHandler(AsyncEventHandler):
    """Handles one client connection; the server makes one per connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        speaker: Speaker,
        describe: Callable[[], Awaitable[Info]],
        limits: Limits,
    ) -> None:
        super().__init__(reader, writer)
        self._speaker = speaker
        self._describe = describe
        self._limits = limits
        self._task: asyncio.Task[None] | None = None
        # Streaming state: sentences queued for the audio task, the splitter, the session's voice.
        self._sentences: asyncio.Queue[str | None] | None = None
        self._splitter: SentenceBoundaryDetector | None = None
        self._voice: str | None = None
        self._chars = 0

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event((await self._describe()).event())
            return True
        if SynthesizeStart.is_type(event.type):
            await self._start_stream(SynthesizeStart.from_event(event))
            return True
        if SynthesizeChunk.is_type(event.type):
            await self._stream_text(SynthesizeChunk.from_event(event).text)
            return True
        if SynthesizeStop.is_type(event.type):
            await self._stop_stream()
            return True
        if Synthesize.is_type(event.type):
            if self._sentences is not None:
                # Streaming clients also send the whole text as one `synthesize`, for servers that
                # cannot stream (the protocol's compatibility rule): the stream already carries it.
                return True
            await self._synthesize_once(Synthesize.from_event(event))
            return True
        _log.debug("wyoming event ignored", type=event.type)
        return True

    async def disconnect(self) -> None:
        # The client went away: stop its audio task, which closes the daemon job's stream and so
        # cancels the job there (nobody is left to hear it).
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    # -- one-shot --------------------------------------------------------------------------------

    async def _synthesize_once(self, request: Synthesize) -> None:
        if self._task is not None and not self._task.done():
            await self._error("busy", "a synthesis is still running on this connection")
            return
        text = request.text or ""
        if not text.strip():
            await self._error("empty_text", "nothing to say: the text is empty")
            return
        if len(text) > self._limits.max_text_chars:
            await self._error(
                "text_too_long",
                f"the text has {len(text)} characters; the limit is {self._limits.max_text_chars}",
            )
            return
        voice = _voice_name(request)
        # Sentence by sentence, as in a stream: a long announcement starts speaking after its first
        # sentence, and no single job passes the daemon's text limit.
        splitter = SentenceBoundaryDetector()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        for sentence in [*splitter.add_chunk(text), splitter.finish()]:
            if sentence.strip():
                queue.put_nowait(sentence)
        queue.put_nowait(_END)
        self._task = asyncio.create_task(self._audio(queue, voice, streaming=False))

    # -- streaming -------------------------------------------------------------------------------

    async def _start_stream(self, start: SynthesizeStart) -> None:
        if self._sentences is not None:
            await self._error("bad_request", "synthesize-start while a stream is open")
            return
        self._voice = start.voice.name if start.voice is not None else None
        self._splitter = SentenceBoundaryDetector()
        self._sentences = asyncio.Queue()
        self._chars = 0
        self._task = asyncio.create_task(self._audio(self._sentences, self._voice, streaming=True))

    async def _stream_text(self, text: str) -> None:
        if self._sentences is None or self._splitter is None:
            await self._error("bad_request", "synthesize-chunk without synthesize-start")
            return
        self._chars += len(text)
        if self._chars > self._limits.max_text_chars:
            # Stop feeding the stream; what was already sent is still spoken and the client is told.
            await self._error(
                "text_too_long",
                f"the streamed text passed {self._limits.max_text_chars} characters; the rest is ignored",
            )
            return
        for sentence in self._splitter.add_chunk(text):
            self._sentences.put_nowait(sentence)

    async def _stop_stream(self) -> None:
        if self._sentences is None or self._splitter is None:
            await self._error("bad_request", "synthesize-stop without synthesize-start")
            return
        rest = self._splitter.finish()
        if rest.strip() and self._chars <= self._limits.max_text_chars:
            self._sentences.put_nowait(rest)
        self._sentences.put_nowait(_END)
        task = self._task
        self._sentences = None
        self._splitter = None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.write_event(SynthesizeStopped().event())

    # -- the audio task --------------------------------------------------------------------------

    async def _audio(self, texts: asyncio.Queue[str | None], voice: str | None, *, streaming: bool) -> None:
        """Speak each text in order as one Wyoming audio stream (audio-start … audio-stop)."""
        fmt: Pcm | None = None
        while (text := await texts.get()) is not _END:
            if not text.strip():
                continue
            try:
                async for pcm in self._speaker.speak(text, voice):
                    if fmt is None:
                        fmt = pcm
                        await self.write_event(
                            AudioStart(rate=pcm.rate, width=SAMPLE_WIDTH, channels=pcm.channels).event()
                        )
                    if pcm.data:
                        await self.write_event(
                            AudioChunk(
                                rate=pcm.rate, width=SAMPLE_WIDTH, channels=pcm.channels, audio=pcm.data
                            ).event()
                        )
            except SynthesisError as e:
                await self._error(e.code, e.reason)
                if not streaming:
                    break
        if fmt is not None:
            await self.write_event(AudioStop().event())

    # -- helpers ---------------------------------------------------------------------------------

    async def _error(self, code: str, reason: str) -> None:
        _log.info("wyoming request refused", code=code, reason=reason)
        await self.write_event(Error(text=reason, code=code).event())


def _voice_name(request: Synthesize) -> str | None:
    return request.voice.name if request.voice is not None and request.voice.name else None
