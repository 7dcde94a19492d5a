"""Concurrent jobs synthesised together, in rounds (numpy only; the engine supplies the model).

Round ``r`` makes the ``r``-th chunk of every job that has one, is not cancelled and whose stream
is still open, as one call of the engine's batched step (the fast pipeline's length groups of
padded, masked batches). Each job keeps its own cross-fader, so its chunks join exactly as they
do when the job is synthesised alone. The work is pulled, not pushed: whichever job's stream
needs a chunk that is not made yet runs the next round, and the other jobs' chunks from that
round wait in their streams. So the job being spoken drives the batch while its audio goes out,
pausing the speaker pauses the batch, and a job that is cancelled or closed costs nothing more.

Time: a round's wall time is shared equally among its jobs (``AudioChunk.timings`` hold the
share, ``AudioChunk.batch`` the round's size), so a job's summed ``total`` is what it cost, not
what the whole batch cost; the watchdog's RTF monitor reads that per-job sum.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ishowttsd.engine.base import AudioChunk, CancelToken, float_to_int16
from ishowttsd.engine.f5.stream import CrossFader

Wave = npt.NDArray[np.float32]
StepFn = Callable[[Sequence[tuple[Any, str]]], tuple[list[Wave], dict[str, float]]]
"""Makes one round: (voice, chunk text) pairs in, each one's float waveform out (in order), with
the round's seconds by stage (``text``, ``model``, ``vocoder``)."""


@dataclass
class Plan:
    """One job of a batch: its chunks, as the engine splits its line, and how far it has got."""

    voice: Any
    chunks: list[str]
    cancel: CancelToken
    fader: CrossFader
    prep_s: float = 0.0
    """Seconds spent splitting the line: charged to the job's first chunk, as when alone."""
    error: BaseException | None = None
    """Set when the job cannot be planned (an unknown voice): only its own stream raises it."""
    made: int = 0
    out: deque[AudioChunk] = field(default_factory=deque)
    closed: bool = False

    @property
    def wants_more(self) -> bool:
        live = not self.closed and self.error is None and not self.cancel.cancelled
        return live and self.made < len(self.chunks)


class Rounds:
    """The shared state of one ``synthesize_many`` call; :meth:`streams` hands out its streams."""

    def __init__(self, plans: Sequence[Plan], step: StepFn, rate: int) -> None:
        self.plans = list(plans)
        self.step = step
        self.rate = rate
        self.t0 = time.perf_counter()
        self.failed: BaseException | None = None
        self.rounds = 0

    def streams(self) -> list[Iterator[AudioChunk]]:
        return [_Stream(self, p) for p in self.plans]

    def run_round(self) -> None:
        active = [p for p in self.plans if p.wants_more]
        if not active:
            return
        t0 = time.perf_counter()
        try:
            waves, stages = self.step([(p.voice, p.chunks[p.made]) for p in active])
        except BaseException as e:
            self.failed = e  # every stream that still needs a chunk raises it
            raise
        self.rounds += 1
        outs = []
        for p, wave in zip(active, waves, strict=True):
            out = p.fader.push(wave)
            if p.made == len(p.chunks) - 1:
                out = np.concatenate([out, p.fader.flush()])
            outs.append(float_to_int16(out))
        t1 = time.perf_counter()
        n = len(active)
        share = {k: stages.get(k, 0.0) / n for k in ("text", "model", "vocoder")}
        for p, pcm in zip(active, outs, strict=True):
            timings = dict(share, total=(t1 - t0) / n)
            if p.made == 0:
                timings["text"] += p.prep_s
                timings["total"] += p.prep_s
            chunk = AudioChunk(
                pcm=pcm, rate=self.rate, timings=timings, text=p.chunks[p.made], batch=n, ready_s=t1 - self.t0
            )
            p.out.append(chunk)
            p.made += 1


class _Stream(Iterator[AudioChunk]):
    """One job's chunks, in order; running the next round when its next chunk is not made yet."""

    def __init__(self, rounds: Rounds, plan: Plan) -> None:
        self._rounds, self._plan = rounds, plan

    def __next__(self) -> AudioChunk:
        p = self._plan
        if p.error is not None:
            p.closed = True
            raise p.error
        if p.cancel.cancelled:  # as alone: nothing more once the job is cancelled
            self.close()
            raise StopIteration
        while not p.out:
            if not p.wants_more:
                p.closed = True
                raise StopIteration
            if self._rounds.failed is not None:
                p.closed = True
                raise self._rounds.failed
            self._rounds.run_round()
        return p.out.popleft()

    def close(self) -> None:
        """No more chunks for this job (the worker is done with it): later rounds skip it."""
        self._plan.closed = True
        self._plan.out.clear()
