"""The ``[debug]`` fault knobs as an engine wrapper, built only when ``[debug]`` sets one: the
worker speaks through it like through any engine, and has no test branches of its own.

- ``warmup_delay_s``: extra warm-up seconds after loading (cut short when the daemon stops).
- ``fail_marker``: a job whose text contains it fails inside the engine (``engine_error``).
- ``hang_marker``: the job hangs before its first chunk, like a stuck GPU kernel (until the daemon stops).
- ``chunk_delay_s``: every chunk takes this much longer, counted as synthesis time (a slow GPU).
- ``oom_marker`` / ``host_oom_marker``: the job fails after its first chunk with torch's "CUDA out
  of memory" RuntimeError / a MemoryError, the way an allocator would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

from ishowttsd import log
from ishowttsd.config import DebugSettings
from ishowttsd.engine.base import (
    AudioChunk,
    BatchingEngine,
    CancelToken,
    Engine,
    EngineError,
    Progress,
    SynthRequest,
    Voice,
)
from ishowttsd.engine.f5.settings import VoiceSettings

_log = log.get(__name__)


def wrap(engine: Engine, debug: DebugSettings, stopping: threading.Event) -> Engine:
    """``engine``, or ``engine`` behind the fault knobs when any is set."""
    return FaultyEngine(engine, debug, stopping) if debug != DebugSettings() else engine


class FaultyEngine:
    def __init__(self, engine: Engine, debug: DebugSettings, stopping: threading.Event) -> None:
        self.inner = engine
        self.debug = debug
        self.stopping = stopping
        self.name = engine.name

    # -- the engine, passed through --------------------------------------------------------------------------
    def load(self, progress: Progress) -> None:
        self.inner.load(progress)
        if self.debug.warmup_delay_s > 0:
            progress(f"debug warm-up delay {self.debug.warmup_delay_s:g} s")
            self.stopping.wait(self.debug.warmup_delay_s)

    def warmup(self, progress: Progress) -> None:
        self.inner.warmup(progress)

    def voices(self) -> Sequence[Voice]:
        return self.inner.voices()

    def default_voice(self) -> str:
        return self.inner.default_voice()

    def reload_voices(self, voices: Sequence[VoiceSettings]) -> None:
        self.inner.reload_voices(voices)

    def close(self) -> None:
        self.inner.close()

    def max_batch(self) -> int:
        return self.inner.max_batch() if isinstance(self.inner, BatchingEngine) else 1

    def batch_window_s(self) -> float:
        return self.inner.batch_window_s() if isinstance(self.inner, BatchingEngine) else 0.0

    # -- synthesis, with the faults ------------------------------------------------------------------------
    def synthesize(self, text: str, voice: str | None, cancel: CancelToken) -> Iterator[AudioChunk]:
        if self._fails(text):
            return _failing(self._failure())
        return self._faulty(text, cancel, self.inner.synthesize(text, voice, cancel))

    def synthesize_many(self, requests: Sequence[SynthRequest]) -> list[Iterator[AudioChunk]]:
        assert isinstance(self.inner, BatchingEngine)
        good = [r for r in requests if not self._fails(r.text)]
        if len(good) > 1:
            made = iter(self.inner.synthesize_many(good))
        else:
            made = iter([self.inner.synthesize(r.text, r.voice, r.cancel) for r in good])
        return [
            _failing(self._failure()) if self._fails(r.text) else self._faulty(r.text, r.cancel, next(made))
            for r in requests
        ]

    def _fails(self, text: str) -> bool:
        return bool(self.debug.fail_marker) and self.debug.fail_marker in text

    @staticmethod
    def _failure() -> EngineError:
        return EngineError("injected failure ([debug] fail_marker)", "engine_error")

    def _faulty(self, text: str, cancel: CancelToken, stream: Iterator[AudioChunk]) -> Iterator[AudioChunk]:
        d = self.debug
        try:
            for chunk in stream:
                out = chunk
                if d.hang_marker and d.hang_marker in text:
                    _log.warning("debug hang: the worker stops making progress")
                    while not self.stopping.is_set():
                        time.sleep(0.1)
                if d.chunk_delay_s > 0:
                    t0 = time.perf_counter()
                    cancel.wait(d.chunk_delay_s)
                    if "total" in chunk.timings:  # a batched chunk's time is its timings: count the delay
                        timings = {
                            **chunk.timings,
                            "total": chunk.timings["total"] + time.perf_counter() - t0,
                        }
                        out = replace(chunk, timings=timings)
                yield out
                if d.oom_marker and d.oom_marker in text:
                    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB ([debug] oom_marker)")
                if d.host_oom_marker and d.host_oom_marker in text:
                    raise MemoryError("[debug] host_oom_marker")
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()


def _failing(error: Exception) -> Iterator[AudioChunk]:
    """A stream that raises ``error`` when its job's turn reads it."""
    raise error
    yield
