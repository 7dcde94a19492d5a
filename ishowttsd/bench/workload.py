"""The benchmark's fixed inputs, so that numbers from different runs and machines compare.

The single-line workload is the one the performance issue quotes: a 5.0 s reference at 24 kHz
with its transcript, and one 85-character chat line, with the duration given by f5-tts's own
byte-ratio rule (``infer_batch_process``). The mixed set is 16 chat lines of different lengths
for the concurrency measurements. Torch-free.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 24_000
HOP = 256
REF_SECONDS = 5.0
REF_TEXT = "This is a short reference sentence that the streamer recorded for cloning."
LINE = "Hello chat, thanks so much for the follow, welcome to the stream and enjoy your stay!"
FIRST_CHUNK = "Hello chat, thanks"
"""The engine's short first chunk of ``LINE`` (three words): what time-to-first-audio waits for."""

MIXED_LINES: tuple[str, ...] = (
    "gg",
    "lets go!",
    "W stream",
    "what game is this?",
    "first time here, love the vibes",
    "can you play the song from last week again?",
    "that boss fight was insane, how many tries did it take?",
    LINE,
    "no way that actually worked lol",
    "hi from Brazil!",
    "Quick question: what keyboard are you using, and would you recommend it for a beginner?",
    "thanks for the raid everyone, welcome in raiders, make yourselves at home",
    "is the giveaway still running tonight?",
    "clip it clip it",
    "I have been watching for two years and this is the best run yet, congrats!",
    "brb getting snacks",
)
"""16 chat lines of mixed length (2 to 88 characters) for the 1/4/16-concurrent measurements."""


def reference_audio(
    seconds: float = REF_SECONDS, rate: int = SAMPLE_RATE, seed: int = 1234
) -> npt.NDArray[np.float32]:
    """A deterministic voice-like signal: a gliding harmonic tone under a syllable-rate envelope
    plus a little noise, at RMS 0.1 (F5's reference loudness, so no gain is applied)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    f0 = 140.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * t) ** 2
    x = voiced * env + 0.05 * rng.standard_normal(n)
    x = x / np.sqrt(np.mean(x**2)) * 0.1
    return x.astype(np.float32)


def ref_frames(samples: int) -> int:
    return samples // HOP


def duration_frames(ref_samples: int, ref_text: str, gen_text: str, speed: float = 1.0) -> int:
    """f5-tts's rule (``infer_batch_process``): reference frames plus generated frames in
    proportion to UTF-8 bytes of text; very short texts (< 10 bytes) are spoken at speed 0.3."""
    if len(ref_text[-1].encode("utf-8")) == 1:
        ref_text = ref_text + " "
    local_speed = 0.3 if len(gen_text.encode("utf-8")) < 10 else speed
    r = ref_frames(ref_samples)
    ref_len = len(ref_text.encode("utf-8"))
    gen_len = len(gen_text.encode("utf-8"))
    return r + int(r / ref_len * gen_len / local_speed)


def stock_ref_text(ref_text: str = REF_TEXT) -> str:
    """The reference text as ``infer_batch_process`` uses it (a trailing space after ASCII)."""
    return ref_text + " " if len(ref_text[-1].encode("utf-8")) == 1 else ref_text
