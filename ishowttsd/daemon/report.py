"""Every job event leaves through :meth:`Report.emit`, from the I/O thread (the admission) and
the worker alike: the job's journal row moves along first (``done`` is recorded before the event
leaves: spoken once, never replayed), drops are counted, a line that ended before the journal had
it is remembered for the history, and then the event goes into the outbox.

The admission and the worker are each given the one :class:`Report`; neither calls the other.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from ishowttsd.daemon.journal import Journal, Outcome
from ishowttsd.daemon.outbox import EventOut, Outbox
from ishowttsd.events import Cancelled, Done, Dropped, Event, JobError, JobEvent, Started
from ishowttsd.job import ChatOrigin, Job

PRUNE_EVERY = 100
"""Finished journal rows are deleted every this many finished jobs (and at start)."""
HISTORY_ROWS = 200
"""Finished and dropped jobs kept in the journal as the history (``history`` control op)."""
UNJOURNALED_DROPS = 100
"""Lines dropped before they were accepted (filters, limits) are never journalled: the newest
this many are remembered in memory for the history."""


class Report:
    def __init__(self, outbox: Outbox, wall: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self._wall = wall
        self.journal: Journal | None = None
        """The admission's journal, once it is open (None: not journalled)."""
        self._lock = threading.Lock()  # events come from the I/O thread and the worker
        self._drops: Counter[str] = Counter()
        self._finished_since_prune = 0
        self._unjournaled: deque[Outcome] = deque(maxlen=UNJOURNALED_DROPS)

    def emit(self, job: Job, event: JobEvent) -> None:
        """Send one job event (from any thread), after moving the job's journal row along."""
        if isinstance(event, Dropped):
            with self._lock:
                self._drops[f"dropped.{event.reason}"] += 1
        if self.journal is not None and job.journaled:
            self._record(self.journal, job, event)
        elif isinstance(event, (Dropped, JobError)) and job.source != "replay":
            self._remember(job, event)
        ev = event.for_job(job)
        out = EventOut(ev.to_json(), job.peer, job.single_reply, ev.terminal, wait=job.wait, publish=job.play)
        self.outbox.put(out)

    def publish(self, event: Event) -> None:
        """An event that is not about one job, on the PUB ``event`` topic (through the outbox)."""
        self.outbox.put(EventOut(event.to_json()))

    def _record(self, journal: Journal, job: Job, event: JobEvent) -> None:
        if isinstance(event, Started):
            journal.started(job.id)
        elif isinstance(event, Done):
            journal.finished(job.id)  # before the event leaves: spoken once, never replayed
            self._finished_since_prune += 1
            if self._finished_since_prune >= PRUNE_EVERY:
                self._finished_since_prune = 0
                journal.prune(keep_last=HISTORY_ROWS)
        elif isinstance(event, Cancelled) and event.reason == "shutdown":
            return  # a restart is not a reason to lose accepted speech: replayed next start
        elif isinstance(event, JobError):
            journal.dropped(job.id, event.code or event.reason or "error", event.name)
        elif isinstance(event, (Dropped, Cancelled)):
            journal.dropped(job.id, event.reason or event.name, event.name)

    def _remember(self, job: Job, event: Dropped | JobError) -> None:
        """A line that ended before the journal had it, for the history (memory only)."""
        now = self._wall()
        o = job.origin or ChatOrigin()
        reason = event.reason if isinstance(event, Dropped) else event.code
        text = event.text if event.text is not None else job.text
        with self._lock:
            self._unjournaled.append(
                Outcome(
                    job=job.id, text=text, priority=job.priority, source=job.source, outcome=event.name,
                    reason=reason, accepted_at=now, finished_at=now, voice=job.voice, user=o.user,
                    channel=o.channel, platform=o.platform,
                )
            )  # fmt: skip

    def drops(self) -> Counter[str]:
        """``dropped.<reason>``: every drop, wherever it happened (each has its event)."""
        with self._lock:
            return Counter(self._drops)

    def history(self, limit: int) -> list[Outcome]:
        """The newest ``limit`` lines that are over, newest first: the journal's, and the lines
        dropped before they were accepted (remembered in memory only)."""
        rows = self.journal.history(limit) if self.journal is not None else []
        with self._lock:
            rows.extend(self._unjournaled)
        rows.sort(key=lambda o: o.finished_at, reverse=True)
        return rows[:limit]
