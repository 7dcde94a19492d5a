"""PCM out over ZeroMQ: ``[b"pcm/<job>", header JSON, s16le payload]`` frames.

The frames go through the :class:`~ishowttsd.outbox.Outbox` to the I/O thread, which publishes
them on the PUB socket (when the ``pcm`` sink is configured) and sends them to the requesting
client (when its ``say`` asked for ``pcm``). Never blocks: a PUB drops at its high-water mark.
"""

from __future__ import annotations

import numpy as np

from ishowttsd.engine.base import AudioChunk
from ishowttsd.outbox import Outbox, PcmOut
from ishowttsd.protocol import pcm_header
from ishowttsd.scheduler import Job

BLOCK_S = 0.25
"""Longest audio in one frame: small enough for low-latency consumers, large enough to be cheap."""


class PcmSink:
    name = "pcm"

    def __init__(self, outbox: Outbox, publish: bool) -> None:
        self._outbox = outbox
        self._publish = publish
        self._seq: dict[str, int] = {}
        self._rate: dict[str, int] = {}

    def _wanted(self, job: Job) -> bool:
        return self._publish or job.want_pcm

    def write(self, job: Job, chunk: AudioChunk) -> None:
        if not self._wanted(job):
            return
        self._rate[job.id] = chunk.rate
        block = max(1, int(chunk.rate * BLOCK_S))
        pcm = np.ascontiguousarray(chunk.pcm, dtype="<i2")
        for i in range(0, len(pcm), block):
            self._send(job, chunk.rate, pcm[i : i + block].tobytes(), final=False)

    def end(self, job: Job) -> None:
        if not self._wanted(job):
            return
        # An empty final frame marks the end even when the job was cancelled half-way.
        self._send(job, self._rate.pop(job.id, 0), b"", final=True)
        self._seq.pop(job.id, None)

    def _send(self, job: Job, rate: int, payload: bytes, final: bool) -> None:
        seq = self._seq.get(job.id, 0)
        self._seq[job.id] = seq + 1
        self._outbox.put(
            PcmOut(
                job=job.id,
                header=pcm_header(job.id, seq, rate, final),
                payload=payload,
                publish=self._publish,
                peer=job.peer if job.want_pcm else None,
            )
        )

    def close(self) -> None:
        self._seq.clear()
