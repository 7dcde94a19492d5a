"""Batching concurrent jobs (CPU, tiny F5 model, ``[f5.fast] on_cpu``: the fast pipeline eagerly in
fp32): ``F5Engine.synthesize_many`` against each job alone and against the reference sampler, and
the worker speaking a batch with the real scheduler, sinks and outbox in this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zmq
from f5tiny import f5_doc
from waits import wait_until

from ishowttsd import config
from ishowttsd.config import DebugSettings
from ishowttsd.daemon import faults
from ishowttsd.daemon.outbox import EventOut, Outbox
from ishowttsd.daemon.report import Report
from ishowttsd.daemon.scheduler import Limits, Scheduler
from ishowttsd.daemon.worker import Worker
from ishowttsd.engine.base import BatchingEngine, CancelToken, SynthRequest, UnknownVoice
from ishowttsd.engine.f5.engine import F5Engine
from ishowttsd.engine.f5.fast import pack_shape
from ishowttsd.job import Job
from ishowttsd.sinks.pcm import PcmSink

LINES = [
    "gg",
    "Hello chat, thanks for the follow!",
    "Welcome in, everybody. Today we are trying a brand new game, so bear with me while I learn it.",
    "what game is this?",
    "Sentence number one is here to make this a long line. And another sentence follows it, long enough. "
    "And a third sentence, so that this line is spoken in three chunks.",
]
LONG = " ".join(f"Sentence number {i} is here to make this a long line." for i in range(3))
"""Three chunks (with :data:`F5`): still speaking after its first."""
TOL = 2
"""int16 steps between a batched job and the same job alone (both fp32 on the CPU; padded keys
masked, so only summation order differs): measured at most 1."""
REF_TOL = 4
"""int16 steps against the reference sampler (f5-tts's arithmetic, not fused): measured at most 1."""
FAST = {"on_cpu": True, "compile": False, "cuda_graph": False}
F5 = {"seed": 7, "warmup": "none", "max_total_s": 7.0, "max_ref_s": 4.0, "first_chunk_chars": 0}
"""Short chunks (~50 characters): lines of several chunks stay cheap on the CPU. No short first
chunk, so a line is chunked alike alone and in a batch, and by the reference sampler (which
always splits one off when idle): the tests compare the three."""


def engine(**fast: Any) -> F5Engine:
    doc = f5_doc(**F5)
    doc["f5"]["fast"] = fast
    e = F5Engine(*config.f5_sections(config.parse(doc, None)))
    e.load(lambda _m: None)
    return e


@pytest.fixture(scope="module")
def fast() -> F5Engine:
    return engine(**FAST)


def alone(e: F5Engine, text: str) -> np.ndarray:
    return np.concatenate([c.pcm for c in e.synthesize(text, None, CancelToken())]).astype(np.int32)


def steps(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def test_batched_jobs_sound_as_they_do_alone_and_as_the_reference_sampler(fast: F5Engine) -> None:
    assert isinstance(fast, BatchingEngine) and fast.max_batch() == 16
    ref = engine()  # the reference sampler: no fast pipeline, so it does not batch
    assert ref.max_batch() == 1
    streams = fast.synthesize_many([SynthRequest(t, None, CancelToken()) for t in LINES])
    got: dict[int, list[Any]] = {}
    for i in reversed(range(len(LINES))):  # the last job's stream drives the rounds here
        got[i] = list(streams[i])
    chunk_counts = [len(fast.plan(t)) for t in LINES]
    assert len(set(chunk_counts)) > 2  # jobs drop out of the rounds at different points
    for i, text in enumerate(LINES):
        chunks = got[i]
        assert [c.text for c in chunks] == [c for c, _ in fast.plan(text)]
        # round k makes the k-th chunk of every job that has one: the first round all of them
        assert [c.batch for c in chunks] == [sum(n > k for n in chunk_counts) for k in range(len(chunks))]
        assert all(c.ready_s is not None and c.timings["total"] > 0 for c in chunks)
        pcm = np.concatenate([c.pcm for c in chunks])
        want = alone(fast, text)
        assert np.abs(want).max() > 1000  # real audio, not silence
        assert steps(pcm, want) <= TOL, text
        assert steps(pcm, alone(ref, text)) <= REF_TOL, text
    lengths = {len(np.concatenate([c.pcm for c in got[i]])) for i in got}
    assert len(lengths) == len(LINES)  # padded and masked: every length differs


def test_packed_batches_sound_as_the_jobs_do_alone(fast: F5Engine) -> None:
    """``[f5.fast] pack``: the worker's rounds run as packed batches (no padded plan is built),
    and every job's audio is what it is alone."""
    packed = engine(**FAST, pack=True, pack_min_frames=0)
    assert packed._fast is not None and packed._fast.fs.pack
    streams = packed.synthesize_many([SynthRequest(t, None, CancelToken()) for t in LINES])
    pcms = [np.concatenate([c.pcm for c in s]) for s in streams]
    # no padded batch: a round of several jobs runs packed, a round of one job runs alone
    assert all(b == 1 and not masked for b, _frames, masked in packed._fast.fs.plans)
    for text, pcm in zip(LINES, pcms, strict=True):
        assert steps(pcm, alone(fast, text)) <= TOL, text
    # a round smaller than pack_min_frames runs as padded batches, as without pack
    small = engine(**FAST, pack=True, pack_min_frames=10**6)
    for s in small.synthesize_many([SynthRequest(t, None, CancelToken()) for t in LINES[:3]]):
        for _c in s:
            pass
    assert small._fast is not None and any(b > 1 for b, _frames, _m in small._fast.fs.plans)


def test_full_warm_up_runs_the_batched_shapes_too() -> None:
    doc = f5_doc(**dict(F5, warmup="all", bucket_ratio=1.0))  # exact lengths: two shapes to warm
    doc["f5"]["fast"] = dict(FAST, pack=False)
    e = F5Engine(*config.f5_sections(config.parse(doc, None)))
    e.load(lambda _m: None)
    e.warmup(lambda _m: None)
    shapes = {(b, masked) for b, _frames, masked in e._fast.fs.plans}
    # an unmasked pair and masked batches of two sizes: what torch.compile needs to have seen
    assert {(2, False), (4, True), (8, True)} <= shapes
    assert e._fast.fs.packed_runs == 0


def test_warm_up_with_pack_runs_two_packed_batches_over_the_threshold() -> None:
    doc = f5_doc(**dict(F5, warmup="all", bucket_ratio=1.0))
    doc["f5"]["fast"] = dict(FAST, pack=True, pack_min_frames=2000)
    e = F5Engine(*config.f5_sections(config.parse(doc, None)))
    e.load(lambda _m: None)
    batches = e._packed_warmup_batches()
    lengths = [[f for t in b for _c, f in e.plan(t, idle=False)] for b in batches]
    assert len(lengths) == 2 and min(sum(n) for n in lengths) >= 2000
    # they differ in total and in the longest line's step: compile has seen both move
    shapes = [pack_shape(n, e._s.fast.pack_bucket_frames) for n in lengths]
    assert shapes[0][1] != shapes[1][1] and sum(lengths[0]) != sum(lengths[1])
    e.warmup(lambda _m: None)
    # the five-line batch is under the threshold (padded); the two packed ones are over it
    assert e._fast is not None and e._fast.fs.packed_runs == 2


def test_cancelled_closed_and_unknown_jobs_leave_the_others_alone(fast: F5Engine) -> None:
    long_lines = [LINES[2], LINES[4], LINES[2] + " Again."]
    tokens = [CancelToken() for _ in long_lines]
    reqs = [SynthRequest(t, None, c) for t, c in zip(long_lines, tokens, strict=True)]
    streams = fast.synthesize_many([*reqs, SynthRequest("hi", "nobody", CancelToken())])
    with pytest.raises(UnknownVoice):
        next(streams[3])  # only its own stream fails
    first = next(streams[0])
    assert first.batch == 3
    tokens[1].cancel("deleted")
    streams[2].close()  # type: ignore[attr-defined]  # the worker is done with it (dropped at its turn)
    rest = list(streams[0])
    assert [c.batch for c in rest] == [1] * (len(fast.plan(long_lines[0])) - 1)  # later rounds: job 0 alone
    assert list(streams[1]) == [] and list(streams[2]) == []
    assert steps(np.concatenate([first.pcm, *[c.pcm for c in rest]]), alone(fast, long_lines[0])) <= TOL


def test_a_failed_round_fails_every_job_that_needs_it() -> None:
    e = engine(**FAST)
    streams = e.synthesize_many([SynthRequest(t, None, CancelToken()) for t in (LINES[2], LINES[4])])
    next(streams[0])
    e.close()  # the model is gone under a running batch: the next round fails
    with pytest.raises(Exception) as first:
        next(streams[0])
    assert next(streams[1]).batch == 2  # its first chunk was made before the failure
    with pytest.raises(Exception) as second:
        next(streams[1])
    assert second.value is first.value


# -- the worker, in this process ---------------------------------------------------------------------


class Harness:
    """A worker on a real F5 engine, scheduler, PCM sink and outbox; this thread plays the I/O loop."""

    def __init__(self, debug: DebugSettings | None = None) -> None:
        doc = f5_doc(**F5)
        doc["f5"]["fast"] = FAST
        self.engine = F5Engine(*config.f5_sections(config.parse(doc, None)))
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.outbox = Outbox(self.ctx)
        self.scheduler = Scheduler(Limits())
        sink = PcmSink(self.outbox, publish=True)
        report = Report(self.outbox)  # no journal: the events go straight to the outbox
        stopping = threading.Event()
        engine = faults.wrap(self.engine, debug or DebugSettings(), stopping)
        self.worker = Worker(engine, self.scheduler, [sink], self.outbox, report, print, stopping=stopping)
        self.events: list[dict[str, Any]] = []
        self.pcm: dict[str, list[tuple[dict[str, Any], bytes]]] = {}
        self.published: set[str] = set()
        """Jobs with audio or events bound for the PUB (every job but a private one)."""
        self.worker.start()
        assert self.worker.ready.wait(60) and self.worker.startup_error is None

    def submit(self, *jobs: Job) -> None:
        for j in jobs:
            self.scheduler.submit(j)

    def pump(self) -> None:
        for item in self.outbox.drain():
            if isinstance(item, EventOut):
                self.events.append(item.payload)
                if item.publish:
                    self.published.add(item.payload["job"])
            else:
                self.pcm.setdefault(item.job, []).append((item.header, item.payload))
                if item.publish:
                    self.published.add(item.job)

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout_s: float = 60) -> dict[str, Any]:
        def match() -> dict[str, Any] | None:
            self.pump()
            return next((ev for ev in self.events if pred(ev)), None)

        return wait_until(match, timeout_s, "a matching event", lambda: f"events: {self.events}", 0.01)

    def outcome(self, job: str) -> dict[str, Any]:
        return self.wait_for(
            lambda e: e["job"] == job and e["event"] in ("done", "cancelled", "error", "dropped")
        )

    def of(self, job: str) -> list[str]:
        return [e["event"] for e in self.events if e["job"] == job]

    def audio(self, job: str) -> np.ndarray:
        frames = sorted(self.pcm.get(job, []), key=lambda hp: hp[0]["seq"])
        return np.frombuffer(b"".join(p for _, p in frames), dtype="<i2").astype(np.int32)

    def close(self) -> None:
        self.scheduler.close()
        self.worker.stopping.set()
        self.worker.join(30)
        self.outbox.close()
        self.ctx.term()


def first_audio(h: Harness, job: str) -> None:
    h.wait_for(lambda e: e["job"] == job and e["event"] == "started")

    def arrived() -> bool:
        h.pump()
        return bool(h.pcm.get(job))

    wait_until(arrived, 60, f"the first audio of {job}", poll_s=0.01)


def test_worker_speaks_a_batch_in_order_and_lets_urgent_stop_and_remove_through(fast: F5Engine) -> None:
    h = Harness(DebugSettings(chunk_delay_s=0.3))  # a slow "GPU": the head is still speaking below
    try:
        h.scheduler.pause()
        head = Job("A", LONG, priority="message")
        b, c, d = (
            Job("B", LINES[1], priority="text"),
            Job("C", LINES[3], priority="text"),
            Job("D", "gg", "text"),
        )
        h.submit(b, c, d, head)
        h.scheduler.resume()
        first_audio(h, "A")
        # While A speaks: a paid line arrives, C is deleted by a moderator, A is stopped.
        assert h.scheduler.in_flight(c) and not c.cancel.cancelled
        h.submit(Job("U", "big thanks for the sub", priority="important"))
        assert h.scheduler.remove(lambda j: j.id == "C", "deleted") == [c]
        assert h.scheduler.stop_current("stopped") is head
        outcomes = {j: h.outcome(j) for j in "AUBCD"}
        assert outcomes["A"]["event"] == "cancelled" and outcomes["A"]["reason"] == "stopped"
        assert outcomes["C"]["event"] == "cancelled" and outcomes["C"]["reason"] == "deleted"
        assert h.of("C") == ["cancelled"] and "C" not in h.pcm  # its made audio was discarded
        for j in "UBD":
            assert outcomes[j]["event"] == "done", outcomes[j]
        assert outcomes["B"]["batch"] == 4 and outcomes["D"]["batch"] == 4
        assert "batch" not in outcomes["U"]  # taken from the queue after the batch: spoken alone
        started = [e["job"] for e in h.events if e["event"] == "started"]
        assert started == ["A", "U", "B", "D"]  # what one-at-a-time would have spoken, in its order
        assert h.worker.batch_counters == {"batches": 1, "batched_jobs": 4, "largest": 4}
        for j, text in (("U", "big thanks for the sub"), ("B", LINES[1]), ("D", "gg")):
            assert steps(h.audio(j), alone(fast, text)) <= TOL, j
        assert 0 < len(h.audio("A")) < len(alone(fast, LONG))
        assert not h.scheduler.busy
    finally:
        h.close()


def test_a_private_job_shares_the_batch_rounds_with_chat_and_goes_first(fast: F5Engine) -> None:
    """``say`` with ``"play": false``: taken ahead of the chat waiting, synthesised in the same
    batched rounds, its audio and events for its requester only."""
    h = Harness()
    try:
        with h.scheduler._cv:  # all three are queued before the worker looks (the lock is re-entrant)
            h.submit(Job("c1", LINES[1], priority="text", source="chat"))
            h.submit(Job("c2", LINES[3], priority="text", source="chat"))
            h.submit(Job("api", LINES[2], play=False, peer=b"client", want_pcm=True))
        outcomes = {j: h.outcome(j) for j in ("api", "c1", "c2")}
        assert all(o["event"] == "done" and o["batch"] == 3 for o in outcomes.values()), outcomes
        assert [e["job"] for e in h.events if e["event"] == "started"] == ["api", "c1", "c2"]
        assert h.published == {"c1", "c2"}  # nothing of the private job goes to the PUB
        assert steps(h.audio("api"), alone(fast, LINES[2])) <= TOL  # its audio, to its requester
        assert h.worker.batch_counters["largest"] == 3
    finally:
        h.close()


def test_pause_holds_a_batchs_next_job_after_the_speaking_one_is_stopped() -> None:
    h = Harness(DebugSettings(chunk_delay_s=0.2))
    try:
        h.scheduler.pause()
        h.submit(Job("j0", LONG), Job("j1", "what game is this?"), Job("j2", "hello"))
        h.scheduler.resume()
        first_audio(h, "j0")
        h.scheduler.pause()
        h.scheduler.stop_current("skipped")
        assert h.outcome("j0")["reason"] == "skipped"
        time.sleep(0.8)  # four chunks' time, in which the next job must not start
        h.pump()
        assert h.of("j1") == []  # paused: the next one does not start, though its audio is made
        assert time.monotonic() - h.worker.heartbeat < 1.5  # a pause is not a hang
        h.scheduler.resume()
        assert h.outcome("j1")["event"] == "done" and h.outcome("j2")["batch"] == 3
    finally:
        h.close()


def test_shutdown_lets_the_speaking_job_finish_and_cancels_the_batchs_others(fast: F5Engine) -> None:
    h = Harness(DebugSettings(chunk_delay_s=0.2))
    try:
        h.scheduler.pause()
        h.submit(Job("s0", LONG), Job("s1", "what game is this?"), Job("s2", "hello"))
        h.scheduler.resume()
        first_audio(h, "s0")
        assert h.scheduler.close() == []  # nothing left queued: all three are in flight
        assert h.outcome("s0")["event"] == "done"
        for j in ("s1", "s2"):  # as if still queued: cancelled, replayed by the journal next start
            assert h.outcome(j)["reason"] == "shutdown" and h.of(j) == ["cancelled"]
        wait_until(lambda: not h.scheduler.busy, 5, "the scheduler to be idle", poll_s=0.01)
    finally:
        h.close()
    assert steps(h.audio("s0"), alone(fast, LONG)) <= TOL


def test_a_failed_batch_fails_its_jobs_and_the_worker_goes_on() -> None:
    h = Harness()
    try:
        h.scheduler.pause()
        h.submit(*[Job(f"f{i}", text) for i, text in enumerate(LINES[:3])])
        h.engine.close()  # worker idle (paused): the batch call itself fails
        h.scheduler.resume()
        for i in range(3):
            ev = h.outcome(f"f{i}")
            assert ev["event"] == "error" and ev["code"] == "not_ready", ev
            assert h.of(f"f{i}") == ["started", "error"]
        h.scheduler.pause()
        h.engine.load(lambda _m: None)
        h.submit(Job("ok1", "back again"), Job("ok2", "and again"))
        h.scheduler.resume()
        assert h.outcome("ok1")["event"] == "done" and h.outcome("ok2")["batch"] == 2
        assert h.worker.is_alive() and h.worker.counters["error"] == 3
    finally:
        h.close()


def test_a_closed_scheduler_does_not_make_the_worker_spin() -> None:
    """After shutdown closes the scheduler, take() returns at once; the worker must wait, not loop
    (it would burn a core through the whole shutdown drain)."""
    h = Harness()
    try:
        t_close = time.monotonic()
        h.scheduler.close()
        wait_until(lambda: h.worker.heartbeat > t_close, 5, "the worker to go round its loop after the close")
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(1.0)  # the window in which the CPU it burns is measured
        cpu = time.process_time() - cpu0
        assert h.worker.is_alive()
        assert cpu < 0.3 * (time.monotonic() - wall0), f"{cpu:.2f} s of CPU in 1 s with nothing to do"
    finally:
        h.close()
