"""Where audio goes: the board's sound output (ALSA) and/or a ZeroMQ PUB of PCM frames."""

from __future__ import annotations

from typing import Protocol

from ishowttsd.engine.base import AudioChunk
from ishowttsd.job import Job


class SinkError(RuntimeError):
    """Audio could not be delivered for a job; the job reports it, the daemon goes on."""

    def __init__(self, message: str, code: str = "audio_error") -> None:
        super().__init__(message)
        self.code = code


class Sink(Protocol):
    name: str

    def write(self, job: Job, chunk: AudioChunk) -> None:
        """Take one chunk of ``job``'s audio (must not block on playback)."""

    def end(self, job: Job) -> None:
        """The job has no more audio: block until it has been delivered (played), or its
        cancel token is set; raise :class:`SinkError` if delivery failed."""

    def close(self) -> None: ...
