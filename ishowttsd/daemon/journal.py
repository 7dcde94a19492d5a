"""A crash-safe record of accepted jobs (SQLite, WAL) so a daemon that dies loses no speech.

Every accepted job is written before its ``queued`` acknowledgement goes out; the worker marks
it ``started`` and then ``finished`` (or ``dropped``). On start, jobs that were accepted or
started but not finished and are not past their ``expires_at`` are handed back in speaking
order (priority, then acceptance order) to be queued again and reported as ``replayed``.

Finished and dropped rows are the appliance's history (the dashboard's "last lines"): pruning
keeps the newest ``keep_last`` of them, each with its ``outcome`` (``spoken``, ``dropped``,
``cancelled``, ``error``) and reason.

A job is marked finished *before* its ``done`` event is sent: if the process dies between the
two, the job was spoken and is not replayed (no one hears it twice). A job killed while speaking
is replayed from the start, since the listener did not hear all of it.

Storage errors never crash the daemon: a full disk (or the ``journal_max_mb`` cap) raises
:class:`JournalFull` for that one job, which is refused with an error event; bookkeeping
failures after acceptance are logged and counted.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ishowttsd import log
from ishowttsd.daemon import journal_repair
from ishowttsd.job import ChatOrigin
from ishowttsd.protocol import PRIORITIES

_log = log.get(__name__)

FILENAME = "journal.sqlite3"
SCHEMA_VERSION = 2
"""1 → 2: the ``outcome`` column (added in place; older rows read as ``spoken``/``dropped``)."""
STATES = journal_repair.STATES
_RANK_SQL = "CASE priority " + " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(PRIORITIES)) + " END"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    priority    TEXT NOT NULL,
    text        TEXT NOT NULL,
    voice       TEXT,
    user        TEXT,
    channel     TEXT,
    platform    TEXT,
    kind        TEXT,
    msg_id      TEXT,
    source      TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    expires_at  REAL,
    state       TEXT NOT NULL DEFAULT 'accepted',
    reason      TEXT,
    updated_at  REAL NOT NULL,
    outcome     TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
) WITHOUT ROWID;
"""


class JournalError(RuntimeError):
    """Writing a job failed; ``code`` goes into the job's ``error`` event."""

    def __init__(self, message: str, code: str = "journal_error") -> None:
        super().__init__(message)
        self.code = code


class _Damaged(sqlite3.DatabaseError):
    """The integrity check found damage (SQLite itself raises plain DatabaseError for it)."""


@dataclass(frozen=True)
class Damage:
    """A journal found damaged at start: where it went and what was read back from it."""

    problem: str
    moved_to: Path
    rows: list[dict[str, Any]]
    """Every job row recovered (waiting ones are replayed; the rest is history)."""
    recovered: int
    """Waiting (accepted or started) jobs among them."""
    unreadable_pages: int
    """Pages of the file with no readable version: rows that were on them are lost."""
    meta: dict[str, str]
    """The daemon state recovered (``paused``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "moved_to": str(self.moved_to),
            "recovered_jobs": self.recovered,
            "recovered_rows": len(self.rows),
            "unreadable_pages": self.unreadable_pages,
        }


class JournalFull(JournalError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "journal_full")


@dataclass(frozen=True)
class Entry:
    """One journalled job: what is needed to speak it again after a restart."""

    id: str
    priority: str
    text: str
    source: str
    """``control`` (a client) or ``chat`` (a bot); a replayed job keeps its original source here."""
    accepted_at: float
    """Unix seconds."""
    expires_at: float | None = None
    """Unix seconds after which it is stale; None: never."""
    voice: str | None = None
    origin: ChatOrigin | None = None
    """The chat line's identity."""
    state: str = "accepted"


@dataclass(frozen=True)
class Outcome:
    """One line of the history: a job that is over."""

    job: str
    text: str
    priority: str
    source: str
    outcome: str
    """``spoken``, ``dropped``, ``cancelled`` or ``error``."""
    reason: str | None
    accepted_at: float
    """Unix seconds."""
    finished_at: float
    """Unix seconds."""
    voice: str | None = None
    user: str | None = None
    channel: str | None = None
    platform: str | None = None

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Replay:
    pending: list[Entry]
    """Unfinished, unexpired jobs in speaking order."""
    expired: list[Entry]
    """Unfinished jobs past their staleness limit (now marked dropped)."""


def _origin(
    user: str | None, channel: str | None, platform: str | None, kind: str | None, msg_id: str | None
) -> ChatOrigin | None:
    if user is None and channel is None and platform is None and kind is None and msg_id is None:
        return None
    return ChatOrigin(user, channel, platform, kind, msg_id)


def _classify(e: sqlite3.Error, what: str) -> JournalError:
    msg = str(e)
    if isinstance(e, sqlite3.OperationalError) and "full" in msg:  # "database or disk is full"
        return JournalFull(f"journal cannot store the job ({what}): {msg}")
    return JournalError(f"journal {what} failed: {msg}")


class Journal:
    """One SQLite file; safe to call from the I/O thread and the worker (one lock, short statements)."""

    def __init__(
        self,
        path: Path,
        *,
        sync: str = "normal",
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self.counters = {"written": 0, "write_errors": 0, "replayed": 0, "pruned": 0}
        self.damage: Damage | None = None
        """Set when the journal was found damaged at open (and what was recovered)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # Checked before SQLite opens the files: SQLite would silently cut a damaged log.
        problem = journal_repair.wal_problem(Path(f"{path}-wal"))
        if problem is None:
            try:
                self._db = self._open(sync, max_bytes)
                return
            except sqlite3.DatabaseError as e:
                if isinstance(e, sqlite3.OperationalError):
                    raise  # locked, unwritable, disk full: the file may be fine, so never move it aside
                problem = str(e)
        # A damaged journal must not keep the daemon from speaking: set it aside, recover what
        # can be read, and say so (log here; status and an event through ``damage``).
        self.damage = self._recover(problem)
        self._db = self._open(sync, max_bytes)
        self._restore(self.damage.rows, self.damage.meta)

    def _recover(self, problem: str) -> Damage:
        path = self.path
        aside = path.with_name(f"{path.name}.corrupt-{int(self._clock())}")
        n = 1
        while aside.exists():
            aside = path.with_name(f"{path.name}.corrupt-{int(self._clock())}-{n}")
            n += 1
        with contextlib.suppress(FileNotFoundError):
            path.rename(aside)
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}-wal").rename(Path(f"{aside}-wal"))
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}-shm").unlink()
        found = journal_repair.salvage(aside)
        waiting = sum(1 for r in found.rows if r["state"] in ("accepted", "started"))
        damage = Damage(
            problem=problem,
            moved_to=aside,
            rows=found.rows,
            recovered=waiting,
            unreadable_pages=found.unreadable_pages,
            meta=found.meta,
        )
        _log.error(
            "journal damaged; moved aside, recovered what could be read",
            path=str(path),
            moved_to=str(aside),
            problem=problem,
            recovered_waiting_jobs=waiting,
            recovered_rows=len(found.rows),
            unreadable_pages=found.unreadable_pages,
        )
        return damage

    def _restore(self, rows: list[dict[str, Any]], meta: dict[str, str]) -> None:
        """Write the salvaged rows into the fresh file (the newest copy of a job id wins)."""
        cols = ", ".join(journal_repair.COLUMNS)
        marks = ", ".join("?" for _ in journal_repair.COLUMNS)
        try:
            with self._tx() as db:
                for r in sorted(rows, key=lambda r: r["updated_at"]):
                    db.execute(f"INSERT OR REPLACE INTO jobs ({cols}) VALUES ({marks})",
                               [r[c] for c in journal_repair.COLUMNS])  # fmt: skip
                for k, v in meta.items():
                    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))
        except sqlite3.Error as e:
            _log.error("recovered jobs could not be written back", error=str(e))

    def _open(self, sync: str, max_bytes: int | None) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # Integrity first, before anything is written; quick_check reads every page.
            verdict = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
            if verdict != ["ok"]:
                raise _Damaged(f"integrity check failed: {'; '.join(verdict)}")
            # Deleted rows and freed pages are zeroed, so a salvage never finds stale copies of jobs.
            db.execute("PRAGMA secure_delete=ON")
            db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            db.executescript(_SCHEMA)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            cols = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
            if version == 1 and "outcome" not in cols:
                db.execute("ALTER TABLE jobs ADD COLUMN outcome TEXT")
                version = SCHEMA_VERSION
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {version}; this daemon knows {SCHEMA_VERSION}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if max_bytes is not None:
                page = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count={max(2, max_bytes // page)}")
        except BaseException:
            db.close()
            raise
        return db

    @classmethod
    def in_dir(
        cls,
        state_dir: Path,
        *,
        sync: str = "normal",
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Journal:
        """The daemon's journal: ``<state_dir>/journal.sqlite3``."""
        return cls(state_dir / FILENAME, sync=sync, max_bytes=max_bytes, clock=clock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writes -----------------------------------------------------------------------------------
    def add(self, entry: Entry) -> None:
        """Record an accepted job (committed when this returns). Raises :class:`JournalError`."""
        o = entry.origin or ChatOrigin()
        try:
            with self._tx() as db:
                # A client may reuse the id of a job that is over; only one still in flight conflicts.
                db.execute("DELETE FROM jobs WHERE id=? AND state IN ('finished','dropped')", (entry.id,))
                db.execute(
                    "INSERT INTO jobs (id, priority, text, voice, user, channel, platform, kind, msg_id,"
                    " source, accepted_at, expires_at, state, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'accepted',?)",
                    (
                        entry.id, entry.priority, entry.text, entry.voice, o.user, o.channel,
                        o.platform, o.kind, o.msg_id, entry.source, entry.accepted_at,
                        entry.expires_at, self._clock(),
                    ),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            raise JournalError(f"job id {entry.id!r} is already queued or speaking", "duplicate_id") from None
        except UnicodeEncodeError as e:  # a lone surrogate ("\\ud800" in JSON) cannot be stored or spoken
            raise JournalError(f"text is not valid Unicode: {e.reason} at {e.start}", "bad_text") from None
        except sqlite3.Error as e:
            self.counters["write_errors"] += 1
            raise _classify(e, f"job {entry.id}") from None
        self.counters["written"] += 1

    def _set_state(self, job_id: str, state: str, reason: str | None, outcome: str | None = None) -> bool:
        try:
            with self._tx() as db:
                cur = db.execute(
                    "UPDATE jobs SET state=?, reason=?, outcome=?, updated_at=? WHERE id=? AND state NOT IN"
                    " ('finished','dropped')",
                    (state, reason, outcome, self._clock(), job_id),
                )
                return cur.rowcount > 0
        except sqlite3.Error as e:
            # The job was already accepted and is being spoken: log, never take the worker down.
            self.counters["write_errors"] += 1
            _log.error("journal update failed", job=job_id, state=state, error=str(e))
            return False

    def started(self, job_id: str) -> bool:
        return self._set_state(job_id, "started", None)

    def finished(self, job_id: str) -> bool:
        return self._set_state(job_id, "finished", None, "spoken")

    def dropped(self, job_id: str, reason: str, outcome: str = "dropped") -> bool:
        """Cancelled, stale, removed by a moderator, failed: it will not be replayed. ``outcome``
        says which (``dropped``, ``cancelled``, ``error``) for the history."""
        return self._set_state(job_id, "dropped", reason, outcome)

    def prune(self, keep_s: float = 0.0, keep_last: int = 0) -> int:
        """Delete finished and dropped jobs last touched more than ``keep_s`` seconds ago, except
        the newest ``keep_last`` of them (the history)."""
        cutoff = self._clock() - keep_s
        try:
            with self._tx() as db:
                n = db.execute(
                    "DELETE FROM jobs WHERE state IN ('finished','dropped') AND updated_at <= ?"
                    " AND seq NOT IN (SELECT seq FROM jobs WHERE state IN ('finished','dropped')"
                    "  ORDER BY updated_at DESC, seq DESC LIMIT ?)",
                    (cutoff, keep_last),
                ).rowcount
        except sqlite3.Error as e:
            _log.error("journal prune failed", error=str(e))
            return 0
        self.counters["pruned"] += n
        return int(n)

    # -- start-up --------------------------------------------------------------------------------------
    def replay(self) -> Replay:
        """Unfinished jobs: the unexpired ones to queue again (speaking order), the expired ones dropped."""
        now = self._clock()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, priority, text, source, accepted_at, expires_at, voice, user, channel,"
                f" platform, kind, msg_id, state FROM jobs WHERE state IN ('accepted','started')"
                f" ORDER BY {_RANK_SQL}, seq"
            ).fetchall()
        pending: list[Entry] = []
        expired: list[Entry] = []
        for r in rows:
            e = Entry(
                id=r[0], priority=r[1], text=r[2], source=r[3], accepted_at=r[4], expires_at=r[5],
                voice=r[6], origin=_origin(*r[7:12]), state=r[12],
            )  # fmt: skip
            (expired if e.expires_at is not None and e.expires_at < now else pending).append(e)
        for e in expired:
            self.dropped(e.id, "stale")
        self.counters["replayed"] += len(pending)
        return Replay(pending, expired)

    def history(self, limit: int) -> list[Outcome]:
        """The newest ``limit`` jobs that are over, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, text, priority, source, state, outcome, reason, accepted_at, updated_at, voice,"
                " user, channel, platform FROM jobs WHERE state IN ('finished','dropped')"
                " ORDER BY updated_at DESC, seq DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        out = []
        for r in rows:
            state, outcome = r[4], r[5]
            out.append(
                Outcome(
                    job=r[0], text=r[1], priority=r[2], source=r[3],
                    outcome=outcome or ("spoken" if state == "finished" else "dropped"),
                    reason=r[6], accepted_at=r[7], finished_at=r[8], voice=r[9], user=r[10],
                    channel=r[11], platform=r[12],
                )
            )  # fmt: skip
        return out

    # -- daemon state --------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """A piece of daemon state kept across restarts (``paused``)."""
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as e:
            _log.error("journal read failed", key=key, error=str(e))
            return None
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> bool:
        try:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        except sqlite3.Error as e:
            self.counters["write_errors"] += 1
            _log.error("journal write failed", key=key, error=str(e))
            return False
        return True

    def states(self) -> dict[str, str]:
        """Job id -> state (for tests and diagnostics)."""
        with self._lock:
            return dict(self._db.execute("SELECT id, state FROM jobs").fetchall())

    def count(self, state: str | None = None) -> int:
        with self._lock:
            if state is None:
                return int(self._db.execute("SELECT count(*) FROM jobs").fetchone()[0])
            return int(self._db.execute("SELECT count(*) FROM jobs WHERE state=?", (state,)).fetchone()[0])


class Reopener:
    """Opens the journal again and again, in a thread of its own, until it opens.

    A journal locked at start (another process holds SQLite's write lock: a backup, an
    ``sqlite3`` shell, a second daemon) used to leave the daemon journal-less for its whole life.
    Now the daemon serves without it (accepted lines are not crash-safe meanwhile, and say so)
    while this retries with a doubling, bounded delay; :meth:`take` hands the journal over once.
    """

    def __init__(
        self,
        open_journal: Callable[[], Journal],
        problem: str,
        first_s: float = 0.5,
        max_s: float = 30.0,
    ) -> None:
        self.problem = problem
        self.attempts = 1
        self.delay_s = first_s
        self._max_s = max_s
        self._open = open_journal
        self._result: Journal | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-reopen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.delay_s):
            self.attempts += 1
            try:
                journal = self._open()
            except (sqlite3.Error, OSError) as e:
                self.problem = str(e)
                self.delay_s = min(self._max_s, self.delay_s * 2)
                continue
            if self._stop.is_set():
                journal.close()
                return
            self._result = journal
            return

    def take(self) -> Journal | None:
        """The journal once it opened (handed over once), else None."""
        j, self._result = self._result, None
        return j

    def status(self) -> dict[str, Any]:
        return {
            "unavailable": self.problem,
            "retrying": True,
            "attempts": self.attempts,
            "retry_in_s": round(self.delay_s, 1),
            "crash_safe": False,
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        j = self.take()
        if j is not None:
            j.close()
