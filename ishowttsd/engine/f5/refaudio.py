"""Reference audio of a cloned voice: decoded once, normalised, trimmed, and its mel cached.

Decoded with soundfile (torchaudio.load needs FFmpeg libraries we do not ship), mixed to mono,
resampled to the model rate, edge silence trimmed, cut to ``max_ref_s`` (with a warning: the
reference text must then match what is left), scaled to ``target_rms`` and padded with 50 ms of
silence like f5-tts's own preprocessing. The mel is cached by a hash of the file's bytes and the
settings that shape it, so SIGHUP reloads recompute only voices whose audio changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
import torch

from ishowttsd import log
from ishowttsd.engine.base import StartupError

_log = log.get(__name__)

SILENCE_DBFS = -42.0
"""Edge-trim threshold, f5-tts's value."""
TAIL_PAD_S = 0.05
MIN_REF_S = 0.5


@dataclass(frozen=True)
class Reference:
    """A voice's prepared reference."""

    key: str
    """Content hash (file bytes + preparation settings)."""
    mel: torch.Tensor
    """(1, frames, n_mels) in the model's dtype and device."""
    seconds: float
    trimmed: bool


def _frame_rms_db(x: npt.NDArray[np.float32], frame: int) -> npt.NDArray[np.float64]:
    n = len(x) // frame
    if n == 0:
        return np.zeros(0)
    f = x[: n * frame].reshape(n, frame).astype(np.float64)
    db: npt.NDArray[np.float64] = 20 * np.log10(np.sqrt((f**2).mean(axis=1)) + 1e-12)
    return db


def prepare_wave(
    x: npt.NDArray[np.float32], rate: int, max_s: float, target_rms: float
) -> tuple[npt.NDArray[np.float32], bool]:
    """Trim edge silence, cut to ``max_s`` at the quietest 10 ms past ``max_s / 2``, scale to
    ``target_rms``, pad 50 ms. Returns the wave and whether it was cut."""
    frame = max(1, rate // 100)
    db = _frame_rms_db(x, frame)
    loud = np.nonzero(db > SILENCE_DBFS)[0]
    if len(loud):
        x = x[loud[0] * frame : (loud[-1] + 1) * frame]
    trimmed = False
    limit = int(max_s * rate)
    if len(x) > limit:
        db = _frame_rms_db(x[:limit], frame)
        lo = len(db) // 2
        cut = (lo + int(np.argmin(db[lo:]))) * frame if len(db) > lo else limit
        x = x[: max(cut, frame)]
        trimmed = True
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0
    if rms > 1e-6:
        x = x * (target_rms / rms)
    x = np.concatenate([x, np.zeros(int(TAIL_PAD_S * rate), dtype=np.float32)]).astype(np.float32)
    return x, trimmed


def decode(path: Path, key: str) -> tuple[npt.NDArray[np.float32], int, bytes]:
    """Mono float32 samples, rate and the raw file bytes. ``key`` names the config entry."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise StartupError(f"{key}: {path} cannot be read: {e}") from e
    try:
        import io

        data, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise StartupError(f"{key}: {path} is not audio soundfile can decode (wav/flac/ogg): {e}") from e
    if data.shape[0] == 0:
        raise StartupError(f"{key}: {path} has no samples")
    return data.mean(axis=1).astype(np.float32), int(rate), raw


class ReferenceCache:
    """Prepared references by content hash; never by object id or path alone."""

    def __init__(self, mel_spec: Any, rate: int, device: torch.device, dtype: torch.dtype) -> None:
        self._mel_spec = mel_spec
        self._rate = rate
        self._device = device
        self._dtype = dtype
        self._cache: dict[str, Reference] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, path: Path, key: str, max_s: float, target_rms: float) -> Reference:
        x, rate, raw = decode(path, key)
        h = hashlib.sha256(raw)
        h.update(f"|{self._rate}|{max_s}|{target_rms}".encode())
        digest = h.hexdigest()
        hit = self._cache.get(digest)
        if hit is not None:
            return hit
        if rate != self._rate:
            import torchaudio.functional as AF

            x = AF.resample(torch.from_numpy(x), rate, self._rate).numpy()
        loud = np.nonzero(_frame_rms_db(x, max(1, self._rate // 100)) > SILENCE_DBFS)[0]
        if len(loud) == 0:
            raise StartupError(f"{key}: {path} is silent (nothing above {SILENCE_DBFS:.0f} dBFS)")
        if (loud[-1] - loud[0] + 1) / 100 < MIN_REF_S:
            raise StartupError(f"{key}: {path} has under {MIN_REF_S} s of sound; F5 needs a few seconds")
        wave, trimmed = prepare_wave(x, self._rate, max_s, target_rms)
        if trimmed:
            _log.warning(
                "reference audio cut; ref_text must match the kept part",
                key=key,
                path=str(path),
                max_ref_s=max_s,
                kept_s=round(len(wave) / self._rate, 2),
            )
        with torch.no_grad():
            w = torch.from_numpy(wave).to(self._device).unsqueeze(0)
            mel = self._mel_spec(w).permute(0, 2, 1).to(self._dtype)  # (1, frames, n_mels)
        ref = Reference(key=digest, mel=mel, seconds=len(wave) / self._rate, trimmed=trimmed)
        self._cache[digest] = ref
        return ref

    def retain(self, keys: set[str]) -> None:
        """Drop references no voice uses any more."""
        for k in list(self._cache):
            if k not in keys:
                del self._cache[k]
