"""The one thread that owns the engine: load, warm up, then speak jobs one at a time.

Inference never runs on the I/O loop. The worker stamps a heartbeat whenever it makes
progress (a chunk out, or an idle poll), so the watchdog can tell a hung synthesis from an
idle daemon. Failures are per job: the job gets an ``error`` event and the loop goes on.

With an engine that batches (:class:`~ishowttsd.engine.base.BatchingEngine`, ``max_batch() > 1``)
the worker takes every job that is waiting (up to ``max_batch``, after ``batch_window_s`` for
company) and synthesises them together: the first job's audio goes out as it is made, the
others' is held until their turn, and each is spoken in the order, and with the events, it
would have had alone. Each job's ``synth_s`` is its share of the batch's time.

Private jobs (``say`` with ``"play": false``) go only to their requester (no ALSA, no PUB): the
scheduler hands them out first, and while a played line is playing out (the sinks' ``end``, which
blocks until it has been heard, runs on a small delivery thread) the worker synthesises waiting
private jobs, batched together when the engine batches. So an API caller waits for at most the
synthesis in progress, never for queued chat to be spoken.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from ishowttsd import log
from ishowttsd.daemon.faults import FaultyEngine
from ishowttsd.daemon.outbox import EventOut, Outbox
from ishowttsd.daemon.report import Report
from ishowttsd.daemon.scheduler import Scheduler
from ishowttsd.daemon.turn import Turn
from ishowttsd.daemon.watchdog import Watchdog
from ishowttsd.engine.base import (
    AudioChunk,
    BatchingEngine,
    CancelToken,
    Engine,
    EngineError,
    StartupError,
    SynthRequest,
    UnknownVoice,
)
from ishowttsd.engine.f5.settings import VoiceSettings
from ishowttsd.events import Cancelled, Done, JobError, JobEvent, Started, VoicesReloaded
from ishowttsd.job import Job
from ishowttsd.loudness import Leveller
from ishowttsd.sinks import Sink, SinkError
from ishowttsd.sinks.pcm import PcmSink

_log = log.get(__name__)


@dataclass(frozen=True)
class JobResult:
    """What one finished job cost: the watchdog and the status counters read these."""

    job: str
    audio_s: float
    synth_s: float
    chars: int
    chunks: int
    first_chunk_s: float
    """Seconds from start to the first chunk being ready (time to first audio)."""

    @property
    def rtf(self) -> float:
        return self.synth_s / self.audio_s if self.audio_s > 0 else 0.0


class Worker(threading.Thread):
    def __init__(
        self,
        engine: Engine,
        scheduler: Scheduler,
        sinks: Sequence[Sink],
        outbox: Outbox,
        report: Report,
        on_progress: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        watchdog: Watchdog | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        super().__init__(name="worker", daemon=True)
        self.engine = engine
        self.scheduler = scheduler
        self.sinks = list(sinks)
        self.outbox = outbox
        self.report = report
        """Every job event leaves through it (journal row first), as the admission's do."""
        self.turn = Turn()
        """The checks at a job's turn (cancelled, stale; a chat line's announce)."""
        self.watchdog = watchdog
        """Told of the warm-up (calibration) and of every finished job (the RTF monitor)."""
        self._on_progress = on_progress
        self._clock = clock
        self.heartbeat = clock()
        self.ready = threading.Event()
        self.startup_error: BaseException | None = None
        self.warmup_s = 0.0
        self.stopping = stopping if stopping is not None else threading.Event()
        self.reload_requested = threading.Event()
        self._reload_lock = threading.Lock()
        self._reload_voices: Sequence[VoiceSettings] | None = None
        self._reload_replies: list[EventOut] = []
        self.counters = {"done": 0, "cancelled": 0, "error": 0, "dropped": 0}
        self.batch_counters = {"batches": 0, "batched_jobs": 0, "largest": 0}
        """Synthesis calls that made more than one job's audio together, and those jobs."""
        self.last_result: JobResult | None = None
        self.leveller: Leveller | None = None
        """Brings each chunk to the target loudness before the sinks (None: audio as the engine made it)."""
        self._batching: BatchingEngine | None = None
        """The engine, when it batches (set after warm-up)."""
        self._private_sink = PcmSink(outbox, publish=False)
        """Private jobs' only sink: their audio goes back to the requester, nowhere else."""
        self._delivery = _Delivery()

    # -- events ------------------------------------------------------------------------------------
    def _report(self, job: Job, event: JobEvent) -> None:
        if event.terminal and event.name in self.counters:
            self.counters[event.name] += 1
        self.report.emit(job, event)

    # -- thread ------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            t0 = time.perf_counter()
            self.engine.load(self._progress)
            if self.stopping.is_set():
                return  # stopped while loading: skip the warm-up so the daemon can exit promptly
            self.engine.warmup(self._progress)
            if self.leveller is not None:
                self.leveller.prepare()
            if self.watchdog is not None:
                # The baseline is the healthy engine's speed: the [debug] faults (a simulated slow
                # GPU) apply to jobs only, or a drill could never drift from its own baseline.
                engine = self.engine.inner if isinstance(self.engine, FaultyEngine) else self.engine
                self.watchdog.calibrate(
                    lambda text: engine.synthesize(text, None, CancelToken()), self._on_progress
                )
            self.warmup_s = time.perf_counter() - t0
            _log.info("engine warm", engine=self.engine.name, warmup_s=round(self.warmup_s, 3))
        except BaseException as e:  # reported by the daemon, which exits with its startup code
            self.startup_error = e
            self.ready.set()
            return
        self.heartbeat = self._clock()
        if isinstance(self.engine, BatchingEngine) and self.engine.max_batch() > 1:
            self._batching = self.engine
            _log.info("batching", max_batch=self.engine.max_batch(), window_s=self.engine.batch_window_s())
        self.ready.set()
        while not self.stopping.is_set():
            self.heartbeat = self._clock()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload()
            if self._batching is not None:
                jobs = self.scheduler.take(
                    self._batching.max_batch(), self._batching.batch_window_s(), timeout=0.25
                )
                if len(jobs) > 1:
                    self._run_batch(jobs)
                    continue
                job = jobs[0] if jobs else None
            else:
                job = self.scheduler.next(timeout=0.25)
            if job is None:
                if self.scheduler.closed:
                    # closed: next()/take() return at once, and spinning here would take a core
                    # from the shutdown drain until the daemon sets ``stopping``
                    self.stopping.wait(0.25)
                continue
            try:
                self._run_job(job)
            finally:
                self.scheduler.done(job)
                self.heartbeat = self._clock()

    def _progress(self, line: str) -> None:
        self.heartbeat = self._clock()
        self._on_progress(line)

    def request_reload(self, voices: Sequence[VoiceSettings], reply: EventOut | None = None) -> None:
        """Hand ``voices`` to the engine between jobs (the job being spoken and a batch in flight
        finish first, with the voices they started with); ``reply`` is sent when it is done, with
        the engine's ``voices`` and ``default`` added."""
        with self._reload_lock:
            self._reload_voices = voices
            if reply is not None:
                self._reload_replies.append(reply)
        self.reload_requested.set()

    def _reload(self) -> None:
        with self._reload_lock:
            voices, self._reload_voices = self._reload_voices, None
            replies, self._reload_replies = self._reload_replies, []
        if voices is not None:
            try:
                self.engine.reload_voices(voices)
                _log.info("voices reloaded", voices=[v.id for v in self.engine.voices()])
            except Exception as e:
                _log.error("voice reload failed; keeping the old voices", error=str(e))
        reloaded = VoicesReloaded(
            voices=tuple(v.id for v in self.engine.voices()), default=self.engine.default_voice()
        )
        now = reloaded.to_json()
        self.outbox.put(EventOut(now))  # on the PUB, for dashboards
        for r in replies:
            self.outbox.put(replace(r, payload={**r.payload, **now}))

    def _run_job(self, job: Job) -> None:
        if not self._admit(job):
            return
        self._speak(job, lambda: self._stream(job))

    def _stream(self, job: Job) -> Iterator[AudioChunk]:
        """The job's audio: one synthesis, or one per voice-tag segment, played back to back."""
        segments = job.segments
        if not segments:
            return self.engine.synthesize(job.text, job.voice, job.cancel)
        return _segmented(self.engine, segments, job.cancel)

    def _admit(self, job: Job) -> bool:
        """The checks at a job's turn (cancelled, stale; a chat line's announce); False once reported."""
        end = self.turn.at_turn(job)
        if end is not None:
            self._report(job, end)
        return end is None

    def _still_wanted(self, job: Job) -> bool:
        end = self.turn.still_wanted(job)
        if end is not None:
            self._report(job, end)
        return end is None

    def _run_batch(self, jobs: list[Job]) -> None:
        """Speak ``jobs`` (in flight, in speaking order) with one batched synthesis.

        The turn checks run for all of them first, since they may rewrite the text to be synthesised;
        at each later job's turn the cancel and staleness checks run again, as they would have
        when it left the queue. A queued job that outranks the next one is spoken first, alone.
        """
        assert self._batching is not None
        live: list[Job] = []
        for job in jobs:
            if self._admit(job):
                live.append(job)
            else:
                self.scheduler.done(job)
        wanted = list(live)
        streams: dict[int, Iterator[AudioChunk]] = {}
        for j in [j for j in wanted if j.segments]:  # voice tags: one stream per segment
            wanted.remove(j)
            streams[id(j)] = self._stream(j)
        try:
            if len(wanted) > 1:
                self._count_batch(wanted)
                requests = [SynthRequest(j.text, j.voice, j.cancel) for j in wanted]
                made = self._batching.synthesize_many(requests)
                streams.update({id(j): st for j, st in zip(wanted, made, strict=True)})
            elif wanted:
                j = wanted[0]
                streams[id(j)] = self.engine.synthesize(j.text, j.voice, j.cancel)
        except Exception as e:  # the batch as a whole failed: each of its jobs reports it
            streams.update({id(j): _failing(e) for j in wanted})
        batch = len(wanted) if len(wanted) > 1 else None
        pending = deque(live)
        try:
            while pending and not self.stopping.is_set():
                job = pending[0]
                head = job is jobs[0]  # taken first: current since take(), and just admitted
                if not head and job.play:  # private jobs have no turn: nothing waits for them
                    self._hold_between_jobs(job)
                    nxt = self.scheduler.turn(job)
                    if nxt is not job:
                        try:
                            self._run_job(nxt)
                        finally:
                            self.scheduler.done(nxt)
                            self.heartbeat = self._clock()
                        continue
                pending.popleft()
                try:
                    if head or self._still_wanted(job):
                        self._speak(job, functools.partial(_opened, streams.get(id(job))), batch=batch)
                finally:
                    _close(streams.pop(id(job), None))
                    self.scheduler.done(job)
                    self.heartbeat = self._clock()
        finally:
            for job in pending:  # only when stopping: cancelled by the scheduler's close()
                self._report(job, Cancelled(reason=job.cancel.reason or "shutdown"))
                self.scheduler.done(job)
            for st in streams.values():
                _close(st)

    def _count_batch(self, jobs: list[Job]) -> None:
        c = self.batch_counters
        c["batches"] += 1
        c["batched_jobs"] += len(jobs)
        c["largest"] = max(c["largest"], len(jobs))
        _log.info("batch", jobs=[j.id for j in jobs])

    def _hold_between_jobs(self, job: Job) -> None:
        """While paused, a batch's next job waits for its turn like a queued one (no time limit),
        with the heartbeat stamped each second."""
        while (
            self.scheduler.paused
            and not self.scheduler.closed
            and not job.cancel.cancelled
            and not self.stopping.is_set()
        ):
            # The batch's streams are between rounds: private jobs can use the engine meanwhile.
            self._serve_private(1.0, lambda: not self.scheduler.paused or job.cancel.cancelled)
            self.heartbeat = self._clock()

    def _speak(
        self, job: Job, open_stream: Callable[[], Iterator[AudioChunk]], batch: int | None = None
    ) -> None:
        """Synthesise (or take the made audio of) one admitted job into the sinks, and report it.
        ``batch``: how many jobs were synthesised together (None: this one alone)."""
        sinks = self.sinks if job.play else [self._private_sink]
        voice = job.voice or self.engine.default_voice()
        segments = None
        if job.segments:  # voice tags: each segment's voice and text, in speaking order
            default = self.engine.default_voice()
            segments = tuple({"voice": v or default, "text": t} for v, t in job.segments)
        self._report(job, Started(text=job.text, voice=voice, segments=segments))
        t_start = time.perf_counter()
        audio_s = synth_s = 0.0
        first = -1.0
        chunks = 0
        failure: tuple[str, str] | None = None
        try:
            stream = open_stream()
            while True:
                t0 = time.perf_counter()
                chunk = next(stream, None)
                if chunk is None:
                    break
                if batch is not None:
                    # Its share of the batch's time (a stream that drives the batch waits for all
                    # of it; the others' chunks were made then).
                    synth_s += chunk.timings.get("total", time.perf_counter() - t0)
                    if first < 0:
                        first = chunk.ready_s if chunk.ready_s is not None else time.perf_counter() - t_start
                else:
                    synth_s += time.perf_counter() - t0
                    if first < 0:
                        first = time.perf_counter() - t_start
                chunks += 1
                audio_s += chunk.seconds
                self.heartbeat = self._clock()
                if self.leveller is not None:  # one loudness for every voice (ishowttsd/loudness.py)
                    chunk = self.leveller.apply(job.id, voice, chunk)
                for sink in sinks:
                    sink.write(job, chunk)
                if job.cancel.cancelled:
                    break
                if job.play:  # pause holds the speaker, not a private job's requester
                    self._hold_while_paused(job)
        except UnknownVoice as e:
            failure = (e.code, str(e))
        except EngineError as e:
            failure = (e.code, str(e))
        except MemoryError:
            failure = ("out_of_memory", "out of memory while synthesising")
        except Exception as e:  # the engine is third-party research code: contain it per job
            code = "out_of_memory" if "out of memory" in str(e).lower() else "engine_error"
            failure = (code, f"{type(e).__name__}: {e}")
            _log.exception("synthesis failed", job=job.id)
        if self.leveller is not None:
            self.leveller.end(job.id)
        ended = self._deliver(job, sinks, engine_free=batch is None)
        if failure is None:
            failure = ended
        if failure is not None:
            self._report(job, JobError(code=failure[0], reason=failure[1]))
        elif job.cancel.cancelled:
            reason = job.cancel.reason or "cancelled"
            self._report(job, Cancelled(reason=reason, audio_s=round(audio_s, 3)))
        else:
            result = JobResult(job.id, audio_s, synth_s, len(job.text), chunks, max(first, 0.0))
            self.last_result = result
            done = Done(
                audio_s=round(audio_s, 4),
                synth_s=round(synth_s, 4),
                rtf=round(result.rtf, 5),
                ttfa_s=round(result.first_chunk_s, 4),
                chunks=chunks,
                batch=batch,
            )
            self._report(job, done)
            if self.watchdog is not None:
                self.watchdog.job_done(job.user or "say", job.text, audio_s, synth_s, result.chars)

    def _deliver(self, job: Job, sinks: Sequence[Sink], engine_free: bool = True) -> tuple[str, str] | None:
        """End ``job`` in its sinks, which blocks until it has been played (or cancelled); a
        delivery failure as ``(code, reason)``. A played job waits on the delivery thread while
        this one serves private jobs (its own stream is finished: the engine is free), and, when
        no batch is in flight (``engine_free``), takes new voices: a line paused mid-way on the
        paced PUB must not leave a ``reload_voices`` unanswered until ``resume``."""
        if not job.play or self.scheduler.closed:
            return _end_sinks(job, sinks)
        fut = self._delivery.submit(functools.partial(_end_sinks, job, sinks))
        fut.add_done_callback(lambda _f: self.scheduler.wake())
        while not fut.done() and not self.scheduler.closed:
            # Waiting for a line to be heard (real time on the paced PUB, longer when paused) is
            # progress, not a hang: without this stamp a long or paused line tripped the watchdog.
            self.heartbeat = self._clock()
            if engine_free and self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload()
            self._serve_private(1.0, fut.done)
        return fut.result()

    def _serve_private(self, timeout: float, until: Callable[[], bool]) -> None:
        """Speak the private jobs that are waiting (waiting up to ``timeout`` for one, or until
        ``until()``), batched together when the engine batches."""
        n = self._batching.max_batch() if self._batching is not None else 1
        jobs = self.scheduler.take_private(n, timeout, until)
        if not jobs:
            return
        if len(jobs) > 1:
            self._run_batch(jobs)
            return
        try:
            self._run_job(jobs[0])
        finally:
            self.scheduler.done(jobs[0])
            self.heartbeat = self._clock()

    def _hold_while_paused(self, job: Job, limit_s: float = 3600.0) -> None:
        """Wait between chunks while paused (at most ``limit_s``), stamping the heartbeat each second:
        a pause is not a hang, and the watchdog must keep pinging through it."""
        end = self._clock() + limit_s
        while self.scheduler.paused and not job.cancel.cancelled and not self.stopping.is_set():
            left = end - self._clock()
            if left <= 0:
                return
            self.scheduler.wait_while_paused(job.cancel, timeout=min(1.0, left))
            self.heartbeat = self._clock()


def _segmented(
    engine: Engine, segments: Sequence[tuple[str | None, str]], cancel: CancelToken
) -> Iterator[AudioChunk]:
    """Each segment in its voice, back to back (the sinks see one job's chunks: no gap, in order)."""
    for voice, text in segments:
        if cancel.cancelled:
            return
        yield from engine.synthesize(text, voice, cancel)


def _failing(error: Exception) -> Iterator[AudioChunk]:
    """A stream that raises ``error``: each job of a batch that failed as a whole reports it."""
    raise error
    yield  # a generator: the error surfaces when the job's turn reads it, like a lone job's


def _end_sinks(job: Job, sinks: Sequence[Sink]) -> tuple[str, str] | None:
    failure: tuple[str, str] | None = None
    for sink in sinks:
        try:
            sink.end(job)
        except SinkError as e:
            if failure is None:
                failure = (e.code, str(e))
    return failure


class _Delivery:
    """One daemon thread that runs the sinks' blocking ``end`` for played jobs (a daemon thread,
    so a stuck audio device cannot hold up the process's exit)."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[tuple[Future[tuple[str, str] | None], Callable[[], Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], tuple[str, str] | None]) -> Future[tuple[str, str] | None]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="delivery", daemon=True)
            self._thread.start()
        fut: Future[tuple[str, str] | None] = Future()
        self._q.put((fut, fn))
        return fut

    def _run(self) -> None:
        while True:
            fut, fn = self._q.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the worker, which reports it for the job
                fut.set_exception(e)


def _opened(stream: Iterator[AudioChunk] | None) -> Iterator[AudioChunk]:
    if stream is None:
        raise EngineError("no stream for this job", "engine_error")
    return stream


def _close(stream: Iterator[AudioChunk] | None) -> None:
    """Close an engine stream the worker is done with, so a batch makes no more chunks for it."""
    close = getattr(stream, "close", None)
    if close is not None:
        close()


__all__ = ["JobResult", "StartupError", "Worker"]
