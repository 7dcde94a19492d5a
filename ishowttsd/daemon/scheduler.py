"""Jobs and the bounded priority queue between the I/O side and the worker.

Plain code: no ZeroMQ, no engine. The I/O thread submits and cancels; the worker thread
takes the next job. Priorities follow speech-dispatcher: ``important`` before ``message``
before ``text``; FIFO within a priority (a sequence number breaks ties). When the queue is
full, the oldest ordinary chat (``text``) makes room, since fresher chat matters more;
``message`` and ``important`` jobs are never dropped to make room for their own kind.

A batching worker takes several jobs at once (:meth:`Scheduler.take`): they leave the queue and
are *in flight* until done. In-flight jobs are still found, cancelled and removed like queued
ones; ``current`` is the one being spoken, and before each of the others is spoken the worker asks
:meth:`Scheduler.turn`, which hands out any queued job that outranks it first: the speaking order
is the one-at-a-time order, only the audio of a batch's later jobs is made ahead.

*Private* jobs (``say`` with ``"play": false``: synthesised for their requester only, never
played) wait in a lane of their own: they are handed out before any speaker job, also while the
speaker is paused, and a worker waiting for a line to finish playing takes them with
:meth:`Scheduler.take_private` in the meantime. They neither count towards nor displace the
speaker's queue, and only a cancel by their id (or shutdown) removes them.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ishowttsd.engine.base import CancelToken
from ishowttsd.job import Job
from ishowttsd.protocol import PRIORITIES

RANK = {p: i for i, p in enumerate(PRIORITIES)}


def _order(job: Job) -> tuple[int, int]:
    """Speaking order: priority, then acceptance."""
    return RANK[job.priority], job.seq


class QueueFull(Exception):
    """The job can't be queued; ``code`` is the ``dropped`` event's reason, ``reason`` the detail."""

    def __init__(self, reason: str, code: str = "queue_full") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Limits:
    max_jobs: int = 200
    max_audio_s: float = 900.0
    """Bound on the estimated seconds of audio waiting, so a raid cannot queue an hour of speech."""
    max_per_user: int = 0
    """At most this many queued jobs per chat user (0: no limit)."""
    max_private: int = 64
    """At most this many private jobs waiting or in flight (their own lane's bound)."""


class Scheduler:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._cv = threading.Condition()
        self._queue: list[Job] = []
        self._est: dict[int, float] = {}
        self._queued_s = 0.0
        """Sum of the queued jobs' estimated seconds, kept as jobs come and go: a raid submits
        ~1,000 lines/s, and summing the whole queue on each was the I/O thread's top cost."""
        self._seq = itertools.count()
        self._current: Job | None = None
        self._in_flight: list[Job] = []
        """Taken by the worker and not yet done, in speaking order (``_current`` among them)."""
        self._paused = False
        self._closed = False
        self._private: list[Job] = []
        """Private jobs waiting, in submission order (priority first)."""
        self._private_flight: list[Job] = []
        """Private jobs taken by the worker and not yet done."""

    # -- I/O side ---------------------------------------------------------------------------
    def submit(self, job: Job) -> list[Job]:
        """Queue ``job``; return the jobs dropped to make room. Raises QueueFull if it can't go in."""
        with self._cv:
            if self._closed:
                raise QueueFull("shutting down")
            if not job.play:
                return self._submit_private(job)
            if job.user is not None and self.limits.max_per_user and job.source == "chat":
                n = sum(1 for j in self._queue if j.user == job.user and j.source == "chat")
                if n >= self.limits.max_per_user:
                    raise QueueFull(f"user {job.user!r} already has {n} queued lines", "user_limit")
            dropped: list[Job] = []
            while self._over_limits(job):
                victim = self._victim_for(job)
                if victim is None:
                    for j in dropped:  # undo: nothing is lost when the new job is refused
                        self._add(j)
                    raise QueueFull(f"queue full ({len(self._queue)} jobs, {self._queued_s:.0f} s of audio)")
                self._discard(victim)
                dropped.append(victim)
            job.seq = next(self._seq)
            if not job.accepted_at:
                job.accepted_at = self._clock()
            self._add(job)
            self._cv.notify_all()
            return dropped

    def _submit_private(self, job: Job) -> list[Job]:
        n = len(self._private) + len(self._private_flight)
        if n >= self.limits.max_private:
            raise QueueFull(f"too many private jobs ({n}; limit {self.limits.max_private})")
        job.seq = next(self._seq)
        if not job.accepted_at:
            job.accepted_at = self._clock()
        self._private.append(job)
        self._private.sort(key=_order)
        self._cv.notify_all()
        return []

    def _add(self, job: Job) -> None:
        est = job.est_seconds
        self._queue.append(job)
        self._est[id(job)] = est  # what was added is what is taken away, even if the text changes
        self._queued_s += est

    def _discard(self, job: Job) -> None:
        self._queue.remove(job)
        self._queued_s -= self._est.pop(id(job), 0.0)
        if not self._queue:
            self._queued_s = 0.0  # no float drift carried across an empty queue

    def _over_limits(self, incoming: Job) -> bool:
        if len(self._queue) + 1 > self.limits.max_jobs:
            return True
        total = self._queued_s + incoming.est_seconds
        return total > self.limits.max_audio_s and bool(self._queue)

    def _victim_for(self, incoming: Job) -> Job | None:
        """The oldest job of the lowest priority that ``incoming`` may displace."""
        r = RANK[incoming.priority]
        lowest = RANK["text"]
        candidates = [j for j in self._queue if RANK[j.priority] > r or (RANK[j.priority] == r == lowest)]
        if not candidates:
            return None
        worst = max(RANK[j.priority] for j in candidates)
        return min((j for j in candidates if RANK[j.priority] == worst), key=lambda j: j.seq)

    def remove(
        self, pred: Callable[[Job], bool], reason: str, include_current: bool = True, private: bool = False
    ) -> list[Job]:
        """Take queued jobs matching ``pred`` out, and cancel the in-flight ones that match (the
        worker reports those itself; see :meth:`in_flight`). ``private``: private jobs too
        (a cancel by id); the speaker's controls never reach them."""
        with self._cv:
            out = [j for j in self._queue if pred(j)]
            for j in out:
                self._discard(j)
            if private:
                gone = [j for j in self._private if pred(j)]
                self._private = [j for j in self._private if j not in gone]
                out.extend(gone)
                if include_current:
                    out.extend(j for j in self._private_flight if pred(j))
            if include_current:
                out.extend(j for j in self._in_flight if pred(j))
            for j in out:
                j.cancel.cancel(reason)
            self._cv.notify_all()
            return out

    def stop_current(self, reason: str, job_id: str | None = None) -> Job | None:
        with self._cv:
            cur = self._current
            if cur is None or (job_id is not None and cur.id != job_id):
                return None
            cur.cancel.cancel(reason)
            self._cv.notify_all()
            return cur

    def pause(self) -> None:
        with self._cv:
            self._paused = True

    def resume(self) -> None:
        with self._cv:
            self._paused = False
            self._cv.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> list[Job]:
        """Refuse new jobs; return (and forget) those still queued. In-flight jobs other than the
        one being spoken are cancelled (``shutdown``) as if they were still queued; the worker
        reports them."""
        with self._cv:
            self._closed = True
            left, self._queue, self._queued_s = self._queue, [], 0.0
            left.extend(self._private)
            self._private = []
            self._est.clear()
            for j in (*self._in_flight, *self._private_flight):
                if j is not self._current:
                    j.cancel.cancel("shutdown")
            self._cv.notify_all()
            return left

    # -- worker side -----------------------------------------------------------------------------
    def next(self, timeout: float) -> Job | None:
        """Block up to ``timeout`` for the highest-priority job; None when idle, paused or closed."""
        jobs = self.take(1, 0.0, timeout)
        return jobs[0] if jobs else None

    def take(self, max_jobs: int, window_s: float, timeout: float) -> list[Job]:
        """Up to ``max_jobs`` jobs in speaking order, all in flight, the first one current.

        Blocks up to ``timeout`` for the first (nothing while paused or closed), then up to
        ``window_s`` for company (0: only what is already queued). Jobs that arrive while a batch
        is spoken wait for the next one.

        Private jobs come first, also while paused (then without speaker company); a private
        head is not ``current`` (nothing is being spoken)."""
        with self._cv:
            self._current = None
            self._in_flight = []
            deadline = self._clock() + timeout
            while not self._private and (self._paused or not self._queue):
                if self._closed:
                    return []
                left = deadline - self._clock()
                if left <= 0:
                    return []
                self._cv.wait(left)
            if self._private:
                head = self._private.pop(0)
                self._private_flight.append(head)
            else:
                head = self._best()
                self._discard(head)
                self._current = head
            taken = [head]
            if max_jobs > 1 and window_s > 0:
                end = self._clock() + window_s
                while len(self._queue) + len(self._private) < max_jobs - 1 and not self._closed:
                    left = end - self._clock()
                    if left <= 0:
                        break
                    self._cv.wait(left)
            private = self._private[: max(0, max_jobs - 1)]
            del self._private[: len(private)]
            self._private_flight.extend(private)
            taken.extend(private)
            room = max(0, max_jobs - len(taken))
            rest = [] if self._paused else sorted(self._queue, key=_order)[:room]
            for j in rest:
                self._discard(j)
            taken.extend(rest)
            self._in_flight = [j for j in taken if j.play]
            return taken

    def take_private(
        self, max_jobs: int, timeout: float, until: Callable[[], bool] = lambda: False
    ) -> list[Job]:
        """Up to ``max_jobs`` private jobs, now in flight (not ``current``), for a worker that is
        waiting for speech to play out: blocks up to ``timeout`` for one, or until ``until()``
        (checked whenever :meth:`wake` is called). Empty when closed."""
        with self._cv:
            deadline = self._clock() + timeout
            while not self._private and not self._closed and not until():
                left = deadline - self._clock()
                if left <= 0:
                    return []
                self._cv.wait(left)
            if self._closed:
                return []
            out = self._private[:max_jobs]
            del self._private[: len(out)]
            self._private_flight.extend(out)
            return out

    def wake(self) -> None:
        """Wake a worker blocked in :meth:`take_private` (e.g. its line has finished playing)."""
        with self._cv:
            self._cv.notify_all()

    def turn(self, job: Job) -> Job:
        """The worker is about to speak in-flight ``job``: a queued job that outranks it (taken
        out of the queue, now in flight), else ``job``; either becomes current. This keeps the
        speaking order one-at-a-time's when an urgent job arrives while a batch is spoken."""
        with self._cv:
            nxt = job
            if self._queue and not self._paused and not self._closed:
                best = self._best()
                if _order(best) < _order(job):
                    self._discard(best)
                    self._in_flight.insert(self._in_flight.index(job) if job in self._in_flight else 0, best)
                    nxt = best
            self._current = nxt
            return nxt

    def _best(self) -> Job:
        return min(self._queue, key=_order)

    def wait_while_paused(self, cancel: CancelToken, timeout: float) -> None:
        """Hold the worker between chunks while paused (speech resumes at the next chunk)."""
        with self._cv:
            deadline = self._clock() + timeout
            while self._paused and not cancel.cancelled and not self._closed:
                left = deadline - self._clock()
                if left <= 0:
                    return
                self._cv.wait(min(left, 0.25))

    def done(self, job: Job) -> None:
        with self._cv:
            if self._current is job:
                self._current = None
            if job in self._in_flight:
                self._in_flight.remove(job)
            if job in self._private_flight:
                self._private_flight.remove(job)
            self._cv.notify_all()

    # -- observation -------------------------------------------------------------------------------
    @property
    def current(self) -> Job | None:
        """The job being spoken (in a batch, the one whose audio goes out now)."""
        return self._current

    def in_flight(self, job: Job) -> bool:
        """Whether the worker holds ``job`` (and so reports how it ends itself)."""
        with self._cv:
            return job in self._in_flight or job in self._private_flight

    @property
    def busy(self) -> bool:
        """Whether any job is in flight."""
        return bool(self._in_flight or self._private_flight)

    @property
    def private_count(self) -> int:
        """Private jobs waiting or in flight."""
        return len(self._private) + len(self._private_flight)

    @property
    def in_flight_count(self) -> int:
        """Jobs taken by the worker and not done: the speaking one and a batch's others."""
        return len(self._in_flight)

    def queued(self) -> list[Job]:
        with self._cv:
            return sorted(self._queue, key=_order)

    def position(self, job: Job) -> int:
        """0-based place of ``job`` in speaking order, or in the private lane (-1 if not queued)."""
        with self._cv:
            order = list(self._private) if not job.play else sorted(self._queue, key=_order)
        for i, j in enumerate(order):
            if j is job:
                return i
        return -1

    def find(self, ids: Iterable[str]) -> list[Job]:
        wanted = set(ids)
        with self._cv:
            found = [j for j in self._queue if j.id in wanted]
            found.extend(j for j in self._in_flight if j.id in wanted)
            found.extend(j for j in (*self._private, *self._private_flight) if j.id in wanted)
            return found

    @property
    def queued_seconds(self) -> float:
        """Estimated seconds of speech waiting."""
        return self._queued_s

    def __len__(self) -> int:
        return len(self._queue)
