"""Streaming audio encoding for HTTP responses, with PyAV (FFmpeg's codecs and muxers).

An :class:`Encoder` takes the daemon's PCM frames as they arrive (s16le mono at the engine's
rate, 22,050 Hz for Piper, 24,000 Hz for F5) and returns, per frame, the bytes of the response
format that are ready: every format leaves at 24 kHz mono (OpenAI's rate; FFmpeg's resampler
does the conversion), packets are flushed as they are muxed (``flush_packets``), and Ogg pages
are cut every 20 ms, so the first bytes go out with the first chunk of speech.

``speed`` (OpenAI's 0.25–4.0) changes the tempo, not the pitch, with FFmpeg's ``atempo``
filter (chained for factors below 0.5, its lower bound).

Streamed WAV has no known length: its RIFF and data sizes are 0xFFFFFFFF, as FFmpeg writes
them to a pipe (and as OpenAI's streamed WAV does); soundfile and FFmpeg read such files.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import av
import av.filter
import numpy as np

OUT_RATE = 24000
"""Hertz of every encoded response (``pcm`` is documented as 24 kHz s16le mono)."""


@dataclass(frozen=True)
class Format:
    container: str
    codec: str
    media_type: str
    options: tuple[tuple[str, str], ...] = ()
    bit_rate: int | None = None


FORMATS: dict[str, Format] = {
    "mp3": Format("mp3", "libmp3lame", "audio/mpeg", bit_rate=64000),
    "opus": Format("ogg", "libopus", "audio/ogg", (("page_duration", "20000"),), bit_rate=32000),
    "aac": Format("adts", "aac", "audio/aac", bit_rate=64000),
    "flac": Format("flac", "flac", "audio/flac"),
    "wav": Format("wav", "pcm_s16le", "audio/wav"),
    "pcm": Format("s16le", "pcm_s16le", "audio/pcm"),
}
"""OpenAI's ``response_format`` values → how PyAV makes them."""


class _Collect:
    """The file-like object the muxer writes to: bytes wait here until the caller takes them."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, b: Any) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class Encoder:
    """PCM in (any rate), one response format out, incrementally. Not thread-safe."""

    def __init__(self, response_format: str, speed: float = 1.0) -> None:
        self.format = FORMATS[response_format]
        self.speed = speed
        self._out = _Collect()
        f = self.format
        self._container: Any = av.open(
            self._out,
            "w",
            format=f.container,
            buffer_size=4096,
            container_options={"flush_packets": "1", **dict(f.options)},
        )
        stream = cast(Any, self._container.add_stream(f.codec, rate=OUT_RATE, layout="mono"))
        if f.bit_rate is not None:
            stream.bit_rate = f.bit_rate
        self._stream: Any = stream
        self._graph: Any = None
        self._rate = 0
        self._pts = 0
        self._closed = False

    @property
    def media_type(self) -> str:
        return self.format.media_type

    def feed(self, pcm: bytes, rate: int) -> bytes:
        """Encode one block of s16le mono samples at ``rate`` Hz; the bytes ready so far."""
        if not pcm:
            return b""
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, rate)
        self._pts += samples.shape[1]
        if self.speed != 1.0:
            self._tempo(frame, rate)
        else:
            self._encode(frame)
        return self._out.take()

    def finish(self) -> bytes:
        """Flush the encoder and close the container; the last bytes (the trailer, if any)."""
        if self._closed:
            return b""
        self._closed = True
        if self._graph is not None:
            self._graph.push(None)
            self._drain_graph()
        self._encode(None)
        self._container.close()
        return self._out.take()

    def close(self) -> None:
        """Drop the stream without finishing it (the client went away)."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:  # a half-written container has nothing left worth reporting
                pass

    def _encode(self, frame: Any) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def _tempo(self, frame: Any, rate: int) -> None:
        if self._graph is None:
            self._rate = rate
            g = av.filter.Graph()
            node = g.add_abuffer(format="s16", sample_rate=rate, layout="mono", time_base=Fraction(1, rate))
            for factor in _atempo_chain(self.speed):
                nxt = g.add("atempo", f"{factor:.6f}")
                node.link_to(nxt)
                node = nxt
            sink = g.add("abuffersink")
            node.link_to(sink)
            g.configure()
            self._graph = g
        elif rate != self._rate:
            raise ValueError(f"sample rate changed mid-stream ({self._rate} -> {rate} Hz)")
        self._graph.push(frame)
        self._drain_graph()

    def _drain_graph(self) -> None:
        while True:
            try:
                out = self._graph.pull()
            except (BlockingIOError, EOFError, av.error.BlockingIOError, av.error.EOFError):
                return
            out.pts = None  # the encoder's resampler retimes; the filter's clock is not ours
            self._encode(out)


def _atempo_chain(speed: float) -> list[float]:
    """``atempo`` factors whose product is ``speed``, each within the filter's [0.5, 100]."""
    factors = []
    while speed < 0.5:
        factors.append(0.5)
        speed /= 0.5
    factors.append(speed)
    return factors


__all__ = ["FORMATS", "OUT_RATE", "Encoder", "Format"]
