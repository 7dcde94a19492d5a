"""PCM out over ZeroMQ: ``[b"pcm/<job>", header JSON, s16le payload]`` frames.

The frames go through the :class:`~ishowttsd.daemon.outbox.Outbox` to the I/O thread, which publishes
them on the PUB socket (when the ``pcm`` sink is configured) and sends them to the requesting
client (when its ``say`` asked for ``pcm``). Never blocks: a PUB drops at its high-water mark.

**Paced** (``[audio] pace``; by default when the pcm sink is on and no ALSA device plays): the
PUB is then the speaker (an OBS overlay plays it), so the published audio leaves like a sound
card takes it — in real time, at most ``pace_lead_s`` ahead of the moment it is heard. A thread
of its own keeps that clock (the *playhead*: when the last published sample will have been
heard), so the worker still synthesises ahead while :meth:`PcmSink.end` returns only once the
job has been heard. Everything not yet heard stays in the daemon, where the queue, priorities,
pause (nothing more leaves while paused), skip and delete/ban act on it. A job cut short sends
its ``final`` frame at once with ``"cancelled": true``: consumers drop what they have buffered
of it (at most the lead). Consecutive jobs continue on the same playhead: back to back when the
next job's audio is there before the previous one has played out.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ishowttsd.daemon.outbox import Outbox, PcmOut
from ishowttsd.engine.base import AudioChunk
from ishowttsd.job import Job
from ishowttsd.protocol import pcm_header

BLOCK_S = 0.25
"""Longest audio in one frame: small enough for low-latency consumers, large enough to be cheap."""

PACED_BLOCK_S = 0.05
"""Frame length when paced: the lead is kept to within one such block."""

_POLL_S = 0.01
"""How often the pacing thread looks at the speaking job's cancel token while it has nothing
to send (the token wakes it at once while it waits for a frame's time)."""


@dataclass(frozen=True)
class Pacing:
    lead_s: float = 0.2
    """Seconds of audio published ahead of the moment it is heard."""


@dataclass
class _Paced:
    """A published job's state on the pacing thread."""

    job: Job
    rate: int = 0
    final_sent: bool = False
    end_at: float | None = None
    """Monotonic time its last sample is heard (set when its final frame is sent)."""
    finalised: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class _Block:
    st: _Paced
    rate: int
    payload: bytes
    end: bool = False  # the job has no more audio


class PcmSink:
    name = "pcm"

    def __init__(
        self,
        outbox: Outbox,
        publish: bool,
        pacing: Pacing | None = None,
        paused: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._publish = publish
        self._seq: dict[str, int] = {}
        self._rate: dict[str, int] = {}
        self._pacing = pacing if publish else None
        self._paused = paused
        self._clock = clock
        self._paced: dict[str, _Paced] = {}
        self._q: queue.SimpleQueue[_Block | None] = queue.SimpleQueue()
        self._seq_lock = threading.Lock()
        self.samples_played = 0
        """Samples heard on the paced playhead (the watchdog counts them as progress)."""
        self.playhead = 0.0
        self._thread: threading.Thread | None = None
        if self._pacing is not None:
            self._thread = threading.Thread(target=self._run, name="pcm-pacer", daemon=True)
            self._thread.start()

    def _wanted(self, job: Job) -> bool:
        return self._publish or job.want_pcm

    @property
    def paced(self) -> bool:
        return self._pacing is not None

    # -- worker side ---------------------------------------------------------------------------
    def write(self, job: Job, chunk: AudioChunk) -> None:
        if not self._wanted(job):
            return
        self._rate[job.id] = chunk.rate
        pcm = np.ascontiguousarray(chunk.pcm, dtype="<i2")
        if self._pacing is not None:
            st = self._paced.setdefault(job.id, _Paced(job))
            block = max(1, int(chunk.rate * PACED_BLOCK_S))
            for i in range(0, len(pcm), block):
                self._q.put(_Block(st, chunk.rate, pcm[i : i + block].tobytes()))
            return
        block = max(1, int(chunk.rate * BLOCK_S))
        for i in range(0, len(pcm), block):
            self._send(job, chunk.rate, pcm[i : i + block].tobytes(), final=False)

    def end(self, job: Job) -> None:
        if not self._wanted(job):
            return
        rate = self._rate.pop(job.id, 0)
        if self._pacing is None:
            # An empty final frame marks the end even when the job was cancelled half-way.
            self._send(job, rate, b"", final=True, cancelled=job.cancel.cancelled)
            self._seq.pop(job.id, None)
            return
        st = self._paced.setdefault(job.id, _Paced(job))
        self._q.put(_Block(st, rate, b"", end=True))
        try:
            while not st.finalised.wait(0.1):
                if self._thread is None or not self._thread.is_alive():
                    return
            # Done means heard: wait for the playhead to pass the job's last sample (or a cancel).
            while st.end_at is not None:
                left = st.end_at - self._clock()
                if left <= 0:
                    break
                if job.cancel.wait(left):
                    # All of it was published, not all heard: consumers drop the rest on the
                    # job's ``cancelled`` event, and the next job starts on a fresh playhead.
                    self.playhead = min(self.playhead, self._clock())
                    break
        finally:
            self._paced.pop(job.id, None)
            with self._seq_lock:
                self._seq.pop(job.id, None)

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=5)
        self._seq.clear()

    # -- frames --------------------------------------------------------------------------------
    def _send(self, job: Job, rate: int, payload: bytes, final: bool, cancelled: bool = False) -> None:
        with self._seq_lock:
            seq = self._seq.get(job.id, 0)
            self._seq[job.id] = seq + 1
        header = pcm_header(job.id, seq, rate, final)
        if final and cancelled:
            header["cancelled"] = True
        self._outbox.put(
            PcmOut(
                job=job.id,
                header=header,
                payload=payload,
                publish=self._publish,
                peer=job.peer if job.want_pcm else None,
            )
        )

    # -- pacing thread -------------------------------------------------------------------------
    def _run(self) -> None:
        current: _Paced | None = None  # the job whose audio is being heard
        while True:
            try:
                timeout = _POLL_S if current is not None and not current.final_sent else None
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                if current is not None and current.job.cancel.cancelled:
                    self._cut(current)
                continue
            if item is None:
                return
            st = item.st
            current = st
            if st.final_sent:
                if item.end:
                    st.finalised.set()
                continue  # cut short: the rest of its audio is dropped
            if item.end:
                self._finish(st, item.rate)
                continue
            if not self._wait_for_turn(st):
                self._cut(st)
                continue
            now = self._clock()
            self.playhead = max(self.playhead, now)
            self._send(st.job, item.rate, item.payload, final=False)
            n = len(item.payload) // 2
            self.playhead += n / item.rate
            self.samples_played += n
            st.rate = item.rate

    def _wait_for_turn(self, st: _Paced) -> bool:
        """Hold the next block until it is within the lead of being heard, and while paused;
        False when the job is cancelled meanwhile."""
        assert self._pacing is not None
        lead = self._pacing.lead_s
        while True:
            if st.job.cancel.cancelled:
                return False
            if self._paused():
                st.job.cancel.wait(0.05)
                continue
            left = self.playhead - lead - self._clock()
            if left <= 0:
                return True
            st.job.cancel.wait(left)

    def _finish(self, st: _Paced, rate: int) -> None:
        cancelled = st.job.cancel.cancelled
        self._send(st.job, rate or st.rate, b"", final=True, cancelled=cancelled)
        st.final_sent = True
        st.end_at = None if cancelled else max(self.playhead, self._clock())
        st.finalised.set()

    def _cut(self, st: _Paced) -> None:
        """The job was cancelled with audio not yet heard: its final frame leaves now, marked
        ``cancelled``, and the playhead forgets what was published of it but not heard."""
        if st.final_sent:
            return
        self._send(st.job, st.rate, b"", final=True, cancelled=True)
        st.final_sent = True
        self.playhead = min(self.playhead, self._clock())
