"""One loudness for every engine and voice: each sentence brought to a target, and a peak limiter.

Piper's voices and F5-TTS's cloned voices come out at very different levels (a cloned voice is as
loud as its reference recording: the tiny test checkpoint's -29 LUFS against Piper's -19). A viewer
should not have to ride the volume between voices, and a stream mix is set once. So every chunk of
speech is brought to one target (``[audio] target_lufs``), then a master gain and an optional gain
per voice are added (``master_gain_db``, ``[audio.voice_gain_db]``).

Loudness is ITU-R BS.1770 integrated loudness, measured by ``pyloudnorm`` (400 ms blocks, gated).
Both engines stream one chunk per sentence, each complete before it is played, so each chunk of at
least :data:`MEASURE_MIN_S` is measured as it passes and given the gain that brings it to the
target: no look-ahead, no added latency, no change inside a sentence. A shorter chunk ("lol") gets
its voice's gain: the power mean of that voice's measured sentences (the last
:data:`VOICE_MEMORY_S` seconds of them). A voice never measured yet is not normalised.

The limiter keeps peaks under ``peak_dbfs`` after the gain: gain reduction per 5 ms block (the
block's peak) with an instant attack and a release of :data:`RELEASE_DB_PER_S`, then a hard clip at
the ceiling as the last resort. Its state carries from chunk to chunk of a job, so a chunk
boundary is not a click.

Order in the daemon: engine -> :meth:`Leveller.apply` (in the worker, per chunk) -> sinks (ALSA,
PCM PUB, the requester's audio): every listener hears the same levelled audio.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from ishowttsd import log
from ishowttsd.confread import Table
from ishowttsd.engine.base import AudioChunk

_log = log.get(__name__)

MEASURE_MIN_S = 0.5
"""A chunk at least this long is measured and brought to the target on its own (a sentence, as
both engines stream them); a shorter one ("lol") gets its voice's gain."""
MAX_BOOST_DB = 24.0
"""Never raise a chunk by more than this (a whisper or a breath is not made a shout)."""
VOICE_MEMORY_S = 120.0
"""Seconds of a voice's speech its loudness estimate remembers."""
BLOCK_S = 0.005
RELEASE_DB_PER_S = 40.0
SILENCE_LUFS = -70.0
"""Below this, BS.1770's absolute gate leaves nothing to measure: no gain is derived from it."""


@dataclass(frozen=True)
class LoudnessSettings:
    """The loudness keys of ``[audio]``."""

    normalize: bool = True
    """Bring every voice to :attr:`target_lufs` (false: only the master and per-voice gains)."""
    target_lufs: float = -18.0
    """Integrated loudness (LUFS, ITU-R BS.1770) every voice is brought to."""
    master_gain_db: float = 0.0
    """Added to every voice, after normalisation (negative: quieter)."""
    voice_gain_db: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """Voice id -> dB added to that voice, after normalisation and the master gain."""
    peak_dbfs: float = -1.0
    """Ceiling of the peak limiter (dB full scale)."""


def parse_loudness(t: Table) -> LoudnessSettings:
    """Read the loudness keys of an ``[audio]`` table (the caller calls ``t.finish()``)."""
    d = LoudnessSettings()
    gains: dict[str, float] = {}
    raw = t.raw("voice_gain_db", None)
    if raw is not None:
        if not isinstance(raw, Mapping):
            raise t.error("voice_gain_db", f"expected a table of voice = dB, got {raw!r}")
        for voice, db in raw.items():
            if isinstance(db, bool) or not isinstance(db, (int, float)) or not -40 <= db <= 20:
                raise t.error(f"voice_gain_db.{voice}", f"expected a number of dB from -40 to 20, got {db!r}")
            gains[str(voice)] = float(db)
    return LoudnessSettings(
        normalize=t.flag("normalize_loudness", d.normalize),
        target_lufs=t.number("target_lufs", d.target_lufs, min=-40, max=-5),
        master_gain_db=t.number("master_gain_db", d.master_gain_db, min=-40, max=20),
        voice_gain_db=MappingProxyType(gains),
        peak_dbfs=t.number("peak_dbfs", d.peak_dbfs, min=-20, max=0),
    )


def integrated_lufs(pcm: npt.NDArray[np.int16] | npt.NDArray[np.floating[Any]], rate: int) -> float:
    """BS.1770 integrated loudness of mono audio (int16 or float in [-1, 1]); -inf when too short
    (under one 400 ms block) or silent."""
    import pyloudnorm

    x = pcm.astype(np.float64) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float64)
    if len(x) < int(0.4 * rate) + 1:
        return -math.inf
    with np.errstate(divide="ignore"):
        return float(pyloudnorm.Meter(rate).integrated_loudness(x))


def _db(x: float) -> float:
    return 10 ** (x / 20)


@dataclass
class _JobState:
    gain: float
    """Linear gain: normalisation, master, per voice."""
    limit: float = 1.0
    """The limiter's current gain (1: not limiting)."""
    learn: list[npt.NDArray[np.int16]] | None = None
    """Chunks kept to measure an unmeasured voice (None: measured already)."""
    rate: int = 0


class Leveller:
    """Gains and the limiter, on the worker thread (:meth:`apply` per chunk, :meth:`end` per job);
    :meth:`status` from the I/O thread."""

    def __init__(self, settings: LoudnessSettings) -> None:
        self.settings = settings
        self._voices: dict[str, _VoiceLevel] = {}
        self._jobs: dict[str, float] = {}
        """Job id -> the limiter's gain at the end of its last chunk."""
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Warm-up: load the meter now. Its first import (pyloudnorm → scipy) takes seconds, and on
        the first chunk of the first line it held the worker long enough to trip the watchdog's
        stall check and to delay that line's first audio."""
        integrated_lufs(np.zeros(24_000, dtype=np.int16), 24_000)

    def reload(self, settings: LoudnessSettings) -> None:
        """SIGHUP: new target and gains for the next chunks; what was measured is kept."""
        self.settings = settings

    def voice_lufs(self, voice: str) -> float | None:
        """The measured loudness of ``voice``'s sentences so far (power mean, LUFS), if any."""
        with self._lock:
            v = self._voices.get(voice)
        return v.lufs if v is not None else None

    def gain_db(self, voice: str, lufs: float | None = None) -> float:
        """The gain (dB) for a chunk of ``voice`` whose own loudness is ``lufs`` (None: too short to
        measure, so the voice's measured loudness stands in; unknown: no normalisation)."""
        s = self.settings
        norm = 0.0
        if s.normalize:
            level = lufs if lufs is not None else self.voice_lufs(voice)
            if level is not None:
                norm = min(MAX_BOOST_DB, s.target_lufs - level)
        return norm + s.master_gain_db + s.voice_gain_db.get(voice, 0.0)

    def apply(self, job_id: str, voice: str, chunk: AudioChunk) -> AudioChunk:
        """``chunk`` at its gain, peaks limited (a new chunk; the same one when nothing changes)."""
        if len(chunk.pcm) == 0:
            return chunk
        lufs: float | None = None
        if self.settings.normalize and len(chunk.pcm) >= MEASURE_MIN_S * chunk.rate:
            lufs = integrated_lufs(chunk.pcm, chunk.rate)
            if lufs > SILENCE_LUFS:
                with self._lock:
                    self._voices.setdefault(voice, _VoiceLevel()).add(lufs, chunk.seconds)
            else:
                lufs = None
        gain = _db(self.gain_db(voice, lufs))
        start = self._jobs.get(job_id, 1.0)
        ceiling = _db(self.settings.peak_dbfs)
        if gain == 1.0 and start >= 1.0 and int(np.abs(chunk.pcm.astype(np.int32)).max()) <= ceiling * 32767:
            return chunk  # nothing to change: the engine's samples, bit for bit
        x = chunk.pcm.astype(np.float32) * np.float32(gain / 32768.0)
        x, self._jobs[job_id] = limit(x, chunk.rate, ceiling, start)
        pcm = np.round(x * 32767.0).astype(np.int16)
        return AudioChunk(pcm, chunk.rate, chunk.timings, chunk.text, chunk.batch, chunk.ready_s)

    def end(self, job_id: str) -> None:
        """The job's audio is over: forget its limiter state."""
        self._jobs.pop(job_id, None)

    def wrap(self, job_id: str, voice: str, stream: Iterable[AudioChunk]) -> Iterator[AudioChunk]:
        """``stream`` levelled (for callers outside the worker's loop: tools, tests)."""
        try:
            for chunk in stream:
                yield self.apply(job_id, voice, chunk)
        finally:
            self.end(job_id)

    def status(self) -> dict[str, Any]:
        """For ``status``: the target, and each voice's measured loudness (before gain) and gain."""
        with self._lock:
            measured = {v: level.lufs for v, level in self._voices.items()}
        return {
            "target_lufs": self.settings.target_lufs if self.settings.normalize else None,
            "voices": {
                v: {"lufs": round(x, 2), "gain_db": round(self.gain_db(v), 2)} for v, x in measured.items()
            },
        }


@dataclass
class _VoiceLevel:
    """A voice's sentence loudness so far: a power mean weighted by seconds (the last ~minute counts)."""

    power: float = 0.0
    seconds: float = 0.0

    def add(self, lufs: float, seconds: float) -> None:
        p = 10 ** (lufs / 10)
        if self.seconds <= 0:
            self.power = p
        else:  # a running mean until VOICE_MEMORY_S seconds are in, then a moving one
            self.power += (p - self.power) * min(1.0, seconds / min(self.seconds + seconds, VOICE_MEMORY_S))
        self.seconds = min(self.seconds + seconds, VOICE_MEMORY_S)

    @property
    def lufs(self) -> float:
        return 10 * math.log10(self.power) if self.power > 0 else -math.inf


def limit(
    x: npt.NDArray[np.float32], rate: int, ceiling: float, start: float = 1.0
) -> tuple[npt.NDArray[np.float32], float]:
    """Peaks of ``x`` (float, full scale 1.0) kept under ``ceiling``: returns the audio and the
    limiter gain at its end (carry it into the next chunk)."""
    n = max(1, int(rate * BLOCK_S))
    blocks = math.ceil(len(x) / n)
    padded = np.zeros(blocks * n, dtype=np.float32)
    padded[: len(x)] = np.abs(x)
    peaks = padded.reshape(blocks, n).max(axis=1)
    if start >= 1.0 and float(peaks.max(initial=0.0)) <= ceiling:
        return x, 1.0
    need = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-9))
    step = _db(RELEASE_DB_PER_S * BLOCK_S)
    gains = np.empty(blocks, dtype=np.float32)
    g = start
    for i in range(blocks):  # instant attack, exponential release: 200 iterations a second of audio
        g = min(float(need[i]), g * step, 1.0)
        gains[i] = g
    # An attack takes the block's gain at once; a release ramps to it across the block.
    prev = np.concatenate(([start], gains[:-1])).astype(np.float32)
    prev = np.where(gains < prev, gains, prev)
    ramp = (np.arange(n, dtype=np.float32) + 1) / n
    env = (prev[:, None] + (gains - prev)[:, None] * ramp[None, :]).reshape(-1)[: len(x)]
    y = np.clip(x * env, -ceiling, ceiling)
    return y.astype(np.float32), float(gains[-1])
