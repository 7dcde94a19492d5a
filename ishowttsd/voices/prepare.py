"""From uploaded bytes to a reference clip F5-TTS clones well.

Order of operations, and why:

1. **Decode** with PyAV (FFmpeg's demuxers and decoders inside the wheel): wav, mp3, ogg, webm/opus
   (what a browser's MediaRecorder makes), m4a/aac, flac. Resampled by FFmpeg's resampler to mono
   24 kHz float, the model's rate, while decoding, so a long upload never sits in memory at 48 kHz
   stereo; decoding stops past :data:`MAX_DECODED_S`.
2. **Find the speech** by 10 ms frame energy: above a floor (:data:`SILENCE_DBFS`) and within
   :data:`SPEECH_RANGE_DB` of the loudest frame, so room noise under a loud voice is not "speech".
3. **Trim** edge silence (a little margin kept) and **cut** to :data:`MAX_CLIP_S` at the last pause
   (:data:`PAUSE_S` of non-speech) inside the limit: F5 conditions on the clip *and its transcript*,
   so a cut mid-word would leave a transcript that does not match.
4. **Check** what is left: at least :data:`MIN_SPEECH_S` of speech.
5. **Normalise loudness** to :data:`TARGET_LUFS` (ITU-R BS.1770 via pyloudnorm), peaks kept under
   -1 dBFS: previews of every voice play at one level.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ishowttsd.voices.errors import VoiceError

RATE = 24000
"""Hertz: F5-TTS's (and Vocos's) rate."""
MAX_UPLOAD_BYTES = 16 << 20
"""Largest upload accepted (16 MiB: ten minutes of webm/opus, 2.9 min of 48 kHz stereo WAV)."""
MAX_DECODED_S = 600.0
"""Decoding stops (and the upload is refused) past this many seconds of audio."""
MAX_CLIP_S = 12.0
"""Longest reference kept, seconds (F5 budgets reference + generated audio together)."""
MIN_SPEECH_S = 2.0
"""Least speech a reference must hold, seconds."""
PAUSE_S = 0.15
"""A stretch of non-speech at least this long is a pause to cut at."""
EDGE_MARGIN_S = 0.1
"""Silence kept before the first and after the last speech frame."""
SILENCE_DBFS = -50.0
"""Frames quieter than this are never speech."""
SPEECH_RANGE_DB = 35.0
"""Frames more than this below the loudest frame are not speech."""
TARGET_LUFS = -20.0
"""Integrated loudness of every prepared clip."""
PEAK_LIMIT = 10 ** (-1.0 / 20)
FRAME_S = 0.01


@dataclass(frozen=True)
class Prepared:
    """A clip ready to be stored as a voice's reference."""

    samples: npt.NDArray[np.float32]
    """Mono float in [-1, 1] at :data:`RATE`."""
    rate: int
    decoded_s: float
    """Seconds of audio in the upload."""
    speech_s: float
    """Seconds of speech (10 ms frames) in the kept clip."""
    cut: bool
    """Whether the clip was cut to :data:`MAX_CLIP_S` (at a pause)."""
    loudness_lufs: float
    """Integrated loudness of the upload's kept part before normalising."""

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def wav_bytes(self) -> bytes:
        """16-bit PCM WAV (what the engine reads with soundfile)."""
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, self.samples, self.rate, format="WAV", subtype="PCM_16")
        return buf.getvalue()


def decode(data: bytes, rate: int = RATE, max_s: float = MAX_DECODED_S) -> npt.NDArray[np.float32]:
    """Mono float32 samples at ``rate`` from any container/codec FFmpeg reads. Raises VoiceError."""
    import av
    import av.error

    if not data:
        raise VoiceError("not_audio", "The file is empty.")
    limit = int(max_s * rate)
    parts: list[npt.NDArray[np.float32]] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise VoiceError("not_audio", "This is not audio: the file has no sound track.")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    a = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    parts.append(a)
                    total += len(a)
                if total > limit:
                    limit_txt = f"{max_s / 60:.0f} minutes"
                    msg = f"The recording is longer than {limit_txt}; upload a shorter one."
                    raise VoiceError("too_long", msg)
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    except VoiceError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError, EOFError) as e:
        raise VoiceError(
            "not_audio", f"This is not audio we can read (wav, mp3, ogg, webm, m4a, flac): {e}"
        ) from None
    x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if len(x) == 0:
        raise VoiceError("not_audio", "The file holds no audio samples.")
    out_x: npt.NDArray[np.float32] = np.nan_to_num(np.clip(x, -1.0, 1.0)).astype(np.float32)
    return out_x


def frame_db(x: npt.NDArray[np.float32], rate: int = RATE) -> npt.NDArray[np.float64]:
    """Energy of each 10 ms frame, dBFS."""
    n = max(1, int(rate * FRAME_S))
    k = len(x) // n
    if k == 0:
        return np.full(1, -120.0)
    f = x[: k * n].reshape(k, n).astype(np.float64)
    db: npt.NDArray[np.float64] = 10 * np.log10((f**2).mean(axis=1) + 1e-12)
    return db


def speech_mask(db: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    threshold = max(SILENCE_DBFS, float(db.max()) - SPEECH_RANGE_DB)
    mask: npt.NDArray[np.bool_] = db > threshold
    return mask


def cut_point(mask: npt.NDArray[np.bool_], max_frames: int, min_frames: int) -> int:
    """Frame index to cut at: the middle of the last pause that starts after ``min_frames`` and ends
    within ``max_frames``; without one, the end of the last speech frame before ``max_frames``."""
    pause = max(1, int(PAUSE_S / FRAME_S))
    best = -1
    run = 0
    for i in range(min(len(mask), max_frames)):
        if mask[i]:
            run = 0
            continue
        run += 1
        if run >= pause and i - run + 1 >= min_frames:
            best = i - run // 2
    if best > 0:
        return best
    return max_frames


def prepare(data: bytes) -> Prepared:
    """Decode, trim, cut, check and normalise an upload (see the module's docstring)."""
    if len(data) > MAX_UPLOAD_BYTES:
        size = f"{len(data) / 2**20:.1f} MiB"
        raise VoiceError("too_large", f"The file is {size}; the limit is {MAX_UPLOAD_BYTES >> 20} MiB.")
    x = decode(data)
    decoded_s = len(x) / RATE
    db = frame_db(x)
    if float(db.max()) <= SILENCE_DBFS:
        raise VoiceError("silent", "The recording is silent: check the microphone and record again.")
    mask = speech_mask(db)
    idx = np.nonzero(mask)[0]
    margin = int(EDGE_MARGIN_S / FRAME_S)
    first, last = max(0, int(idx[0]) - margin), min(len(mask), int(idx[-1]) + 1 + margin)
    mask = mask[first:last]
    max_frames = int(MAX_CLIP_S / FRAME_S)
    cut = False
    if len(mask) > max_frames:
        end = cut_point(mask, max_frames, int(MIN_SPEECH_S / FRAME_S))
        mask = mask[:end]
        last = first + end
        cut = True
    n = int(RATE * FRAME_S)
    clip = x[first * n : last * n]
    speech_s = float(mask.sum()) * FRAME_S
    if speech_s < MIN_SPEECH_S:
        raise VoiceError(
            "too_short",
            f"Only {speech_s:.1f} s of speech was found; record at least {MIN_SPEECH_S:.0f} s of talking.",
        )
    import pyloudnorm

    loud = float(pyloudnorm.Meter(RATE).integrated_loudness(clip.astype(np.float64)))
    if not np.isfinite(loud):
        raise VoiceError("silent", "The recording is silent: check the microphone and record again.")
    y = clip.astype(np.float64) * 10 ** ((TARGET_LUFS - loud) / 20)
    peak = float(np.abs(y).max())
    if peak > PEAK_LIMIT:
        y *= PEAK_LIMIT / peak
    return Prepared(
        samples=y.astype(np.float32),
        rate=RATE,
        decoded_s=decoded_s,
        speech_s=speech_s,
        cut=cut,
        loudness_lufs=loud,
    )
