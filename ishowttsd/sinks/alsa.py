"""Local playback through ALSA (PortAudio via sounddevice), on a thread of its own.

One output stream stays open while audio keeps coming, so consecutive jobs play back to back
with no gap; it is closed after ``idle_close_s`` of silence so the device is free for others.
Writes are blocking and paced by the device, in short blocks, so ``stop`` cuts speech within
one block. A missing or failing device fails the job that was playing (``audio_error``) and
is opened again for the next job: it never stops the daemon or the other sinks.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ishowttsd import log
from ishowttsd.config import AudioSettings
from ishowttsd.engine.base import AudioChunk
from ishowttsd.job import Job
from ishowttsd.sinks import SinkError

_log = log.get(__name__)

BLOCK_S = 0.05


@dataclass
class _JobState:
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    aborted: bool = False
    samples: int = 0


@dataclass(frozen=True)
class _Item:
    job: str
    pcm: npt.NDArray[np.int16] | None  # None marks the end of the job
    rate: int


class AlsaSink:
    name = "alsa"

    def __init__(self, settings: AudioSettings, idle_close_s: float = 3.0) -> None:
        self._settings = settings
        self._idle_close_s = idle_close_s
        self._q: queue.Queue[_Item | None] = queue.Queue()
        self._jobs: dict[str, _JobState] = {}
        self._lock = threading.Lock()
        self._stream: Any = None
        self._stream_rate = 0
        self.samples_played = 0
        self._thread = threading.Thread(target=self._run, name="alsa-sink", daemon=True)
        self._thread.start()

    # -- worker side ---------------------------------------------------------------------------
    def _state(self, job_id: str) -> _JobState:
        with self._lock:
            return self._jobs.setdefault(job_id, _JobState())

    def write(self, job: Job, chunk: AudioChunk) -> None:
        st = self._state(job.id)
        if st.error is None and not st.aborted:
            self._q.put(_Item(job.id, chunk.pcm, chunk.rate))

    def end(self, job: Job) -> None:
        st = self._state(job.id)
        self._q.put(_Item(job.id, None, 0))
        try:
            while not st.done.wait(0.05):
                if job.cancel.cancelled and not st.aborted:
                    st.aborted = True  # the playing thread drops the rest of this job's audio
            if st.error is not None:
                raise SinkError(f"audio device: {st.error}")
        finally:
            with self._lock:
                self._jobs.pop(job.id, None)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=5)

    # -- playing thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=self._idle_close_s)
            except queue.Empty:
                self._close_stream()
                continue
            if item is None:
                self._close_stream()
                return
            st = self._state(item.job)
            if item.pcm is None:
                st.done.set()
                continue
            if st.error is not None or st.aborted:
                continue
            try:
                self._play(item, st)
            except Exception as e:  # any PortAudio/OS failure fails this job only
                st.error = f"{type(e).__name__}: {e}"
                _log.warning("audio playback failed", job=item.job, error=st.error)
                self._close_stream(abort=True)

    def _open(self, rate: int) -> None:
        if self._stream is not None and self._stream_rate == rate:
            return
        self._close_stream()
        import sounddevice as sd  # imported here: a missing PortAudio must not stop the daemon

        stream = sd.OutputStream(
            samplerate=rate,
            channels=1,
            dtype="int16",
            device=self._settings.device,
            latency=self._settings.latency,
        )
        stream.start()
        self._stream, self._stream_rate = stream, rate
        _log.info("audio device opened", device=str(self._settings.device or "default"), rate=rate)

    def _play(self, item: _Item, st: _JobState) -> None:
        assert item.pcm is not None
        self._open(item.rate)
        block = max(1, int(item.rate * BLOCK_S))
        pcm = np.ascontiguousarray(item.pcm, dtype=np.int16)
        for i in range(0, len(pcm), block):
            if st.aborted:
                return
            part = pcm[i : i + block]
            self._stream.write(part.reshape(-1, 1))
            st.samples += len(part)
            self.samples_played += len(part)

    def _close_stream(self, abort: bool = False) -> None:
        if self._stream is None:
            return
        stream, self._stream = self._stream, None
        try:
            if abort:
                stream.abort()
            else:
                stream.stop()  # plays out what is buffered
            stream.close()
        except Exception as e:
            _log.warning("audio device close failed", error=str(e))
