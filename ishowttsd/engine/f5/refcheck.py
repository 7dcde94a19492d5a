"""Whether a voice's reference recording can be used, checked without torch (``--check-config``).

The engine's own preparation (:mod:`ishowttsd.engine.f5.refaudio`) applies the same rules after
resampling; checking here, when the configuration is read, makes a broken voice a configuration
error (exit 2, file and key named) instead of a start that fails after the model loaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

SILENCE_DBFS = -42.0
"""Edge-trim threshold, f5-tts's value: quieter 10 ms frames count as silence."""
MIN_REF_S = 0.5
"""Least sound (first to last loud frame) a usable reference holds."""


class RefAudioError(ValueError):
    """Why a reference recording cannot be used (the message names the file)."""


def frame_rms_db(x: npt.NDArray[np.float32], frame: int) -> npt.NDArray[np.float64]:
    """Level of each whole ``frame``-sample frame in dBFS."""
    n = len(x) // frame
    if n == 0:
        return np.zeros(0)
    f = x[: n * frame].reshape(n, frame).astype(np.float64)
    db: npt.NDArray[np.float64] = 20 * np.log10(np.sqrt((f**2).mean(axis=1)) + 1e-12)
    return db


def decode_bytes(path: Path) -> tuple[npt.NDArray[np.float32], int, bytes]:
    """Mono float32 samples, rate and the raw bytes of ``path``. Raises :class:`RefAudioError`."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RefAudioError(f"{path} cannot be read: {e.strerror or e}") from e
    if not raw:
        raise RefAudioError(f"{path} is empty (0 bytes)")
    try:
        data, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise RefAudioError(f"{path} is not audio soundfile can decode (wav/flac/ogg): {e}") from e
    if data.shape[0] == 0:
        raise RefAudioError(f"{path} has no samples")
    return data.mean(axis=1).astype(np.float32), int(rate), raw


def check_sound(x: npt.NDArray[np.float32], rate: int, path: Path) -> float:
    """Seconds from the first to the last frame above :data:`SILENCE_DBFS`; raises if silent or
    shorter than :data:`MIN_REF_S`."""
    frame = max(1, rate // 100)
    loud = np.nonzero(frame_rms_db(x, frame) > SILENCE_DBFS)[0]
    if len(loud) == 0:
        raise RefAudioError(f"{path} is silent (nothing above {SILENCE_DBFS:.0f} dBFS)")
    seconds = float((loud[-1] - loud[0] + 1) * frame / rate)
    if seconds < MIN_REF_S:
        raise RefAudioError(f"{path} has under {MIN_REF_S} s of sound; F5 needs a few seconds")
    return seconds


def check(path: Path) -> float:
    """Decode ``path`` and check it: the seconds of sound it holds. Raises :class:`RefAudioError`."""
    x, rate, _ = decode_bytes(path)
    return check_sound(x, rate, path)
