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
import torch

from ishowttsd import log
from ishowttsd.engine.base import StartupError
from ishowttsd.engine.f5.refcheck import SILENCE_DBFS, RefAudioError, check_sound, decode_bytes, frame_rms_db

_log = log.get(__name__)

TAIL_PAD_S = 0.05
CUT_WINDOW_S = 2.0
"""A reference longer than ``max_ref_s`` is cut within this many seconds before the limit (a
quarter of the limit when that is shorter): never much shorter than the limit the streamer set."""


@dataclass(frozen=True)
class Reference:
    """A voice's prepared reference."""

    key: str
    """Content hash (file bytes + preparation settings)."""
    mel: torch.Tensor
    """(1, frames, n_mels) in the model's dtype and device."""
    seconds: float
    trimmed: bool


def prepare_wave(
    x: npt.NDArray[np.float32], rate: int, max_s: float, target_rms: float
) -> tuple[npt.NDArray[np.float32], bool]:
    """Trim edge silence, cut to ``max_s`` at the quietest 10 ms of the last :data:`CUT_WINDOW_S`
    before it (a pause between words, so the kept part ends cleanly and is nearly ``max_s``
    long), scale to ``target_rms``, pad 50 ms. Returns the wave and whether it was cut."""
    frame = max(1, rate // 100)
    db = frame_rms_db(x, frame)
    loud = np.nonzero(db > SILENCE_DBFS)[0]
    if len(loud):
        x = x[loud[0] * frame : (loud[-1] + 1) * frame]
    trimmed = False
    limit = int(max_s * rate)
    if len(x) > limit:
        db = frame_rms_db(x[:limit], frame)
        lo = max(0, len(db) - max(1, int(min(CUT_WINDOW_S, max_s / 4) * 100)))
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
        return decode_bytes(path)
    except RefAudioError as e:
        raise StartupError(f"{key}: {e}") from e


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
        try:
            check_sound(x, self._rate, path)
        except RefAudioError as e:
            raise StartupError(f"{key}: {e}") from e
        wave, trimmed = prepare_wave(x, self._rate, max_s, target_rms)
        if trimmed:
            _log.warning(
                "reference audio cut at [f5] max_ref_s; ref_text must match the kept part",
                key=key,
                path=str(path),
                max_ref_s=max_s,
                audio_s=round(len(x) / self._rate, 2),
                kept_s=round(len(wave) / self._rate - TAIL_PAD_S, 2),
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
