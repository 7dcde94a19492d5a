"""The one small interface every speech engine implements.

The scheduler and the sinks never see a model: they call :meth:`Engine.synthesize` and
get 16-bit mono PCM chunks as soon as each is ready, so the first words play while
the rest of a line is still being made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # plain data, but engine.f5's package imports torch
    from ishowttsd.engine.f5.settings import VoiceSettings

Progress = Callable[[str], None]
"""Called with a short human-readable line during load and warm-up (becomes systemd STATUS=)."""


class EngineError(RuntimeError):
    """A job failed inside the engine; ``code`` goes into the job's ``error`` event."""

    def __init__(self, message: str, code: str = "engine_error") -> None:
        super().__init__(message)
        self.code = code


class UnknownVoice(EngineError):
    def __init__(self, voice: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown voice {voice!r}; known: {', '.join(known) or '(none)'}", "unknown_voice")


class StartupError(RuntimeError):
    """The engine cannot start (missing or mismatched files). The message names the path and the fix."""


@dataclass(frozen=True)
class Voice:
    id: str
    engine: str
    language: str | None = None
    description: str = ""
    sample_rate: int = 0
    """Hertz."""


@dataclass
class AudioChunk:
    """One piece of a job's audio, in order."""

    pcm: npt.NDArray[np.int16]
    """Mono 16-bit samples."""
    rate: int
    """Hertz."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent making this chunk, by stage (``text``, ``model``, ``vocoder``, ``total``)."""
    text: str = ""
    """The text this chunk speaks, as normalised by the engine."""
    batch: int = 1
    """How many jobs' chunks were made together with this one (1: made alone). For a batched
    chunk, ``timings`` are its share of the batch's seconds (the batch's time over ``batch``)."""
    ready_s: float | None = None
    """Batched chunks: seconds from the ``synthesize_many`` call until this chunk was made (None:
    made alone, when the worker times it itself)."""

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.rate if self.rate else 0.0


class CancelToken:
    """Set by the scheduler to stop a job; engines check it between chunks."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


@runtime_checkable
class Engine(Protocol):
    name: str

    def load(self, progress: Progress) -> None:
        """Load models from local files. Raises :class:`StartupError` naming the missing path."""

    def warmup(self, progress: Progress) -> None:
        """Run every shape the daemon will use once, so the first real job is fast."""

    def voices(self) -> Sequence[Voice]: ...

    def default_voice(self) -> str: ...

    def synthesize(self, text: str, voice: str | None, cancel: CancelToken) -> Iterator[AudioChunk]:
        """Yield the audio of ``text`` chunk by chunk; stop early when ``cancel`` is set."""
        ...

    def reload_voices(self, voices: Sequence[VoiceSettings]) -> None:
        """Take these voice definitions (SIGHUP, the ``reload_voices`` op), called between jobs
        on the worker thread. Must not drop the loaded model; a broken voice is logged and its
        previous version (if any) kept."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SynthRequest:
    """One job's share of a :meth:`BatchingEngine.synthesize_many` call."""

    text: str
    voice: str | None
    cancel: CancelToken


@runtime_checkable
class BatchingEngine(Protocol):
    """What an engine adds to synthesise concurrent jobs together (the F5 fast path); engines
    without it (Piper, F5 on its reference sampler) speak one job at a time."""

    def max_batch(self) -> int:
        """Most jobs one call takes; 1 (or less) means the worker does not batch."""
        ...

    def batch_window_s(self) -> float:
        """How long the first job of a batch waits for company (seconds)."""
        ...

    def synthesize_many(self, requests: Sequence[SynthRequest]) -> list[Iterator[AudioChunk]]:
        """One lazy stream per request, in order, each yielding what :meth:`Engine.synthesize`
        would (the same audio within the engine's stated tolerance), with ``batch`` and
        ``ready_s`` set. The streams share the work: pulling from any of them makes the next
        chunk of every job that still wants one, so the speaking job's stream drives the batch
        and the others' chunks wait, made, until their turn. A job whose ``cancel`` is set, or
        whose stream is closed, gets no more chunks. A failure is raised by every stream that
        needs the failed work; a bad request (unknown voice) fails only its own stream."""
        ...


def float_to_int16(x: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    """[-1, 1] floats to int16, clipped (a vocoder can overshoot; wrapping would click)."""
    y = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0) * 32767.0
    return np.round(y).astype(np.int16)
