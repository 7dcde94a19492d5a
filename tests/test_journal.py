"""The crash-safe job journal: replay order, exactly-once bookkeeping, prune, disk full."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ishowttsd.daemon.journal import Entry, Journal, JournalError, JournalFull
from ishowttsd.job import ChatOrigin


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def entry(i: str, prio: str = "text", expires: float | None = None) -> Entry:
    return Entry(id=i, priority=prio, text=f"line {i}", source="chat", accepted_at=0.0, expires_at=expires)


def test_replay_in_priority_then_acceptance_order(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    for i, prio in enumerate(["text", "message", "text", "important", "message", "important"]):
        j.add(entry(f"j{i}", prio))
    j.close()
    r = Journal.in_dir(tmp_path).replay()
    assert [e.id for e in r.pending] == ["j3", "j5", "j1", "j4", "j0", "j2"]
    assert r.expired == []


def test_finished_and_dropped_are_not_replayed_started_is(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    for i in range(5):
        j.add(entry(f"j{i}"))
    assert j.started("j0") and j.finished("j0")
    assert j.started("j1")  # killed while speaking: heard only in part
    assert j.dropped("j2", "cancelled")
    j.close()
    j2 = Journal.in_dir(tmp_path)
    assert [e.id for e in j2.replay().pending] == ["j1", "j3", "j4"]
    # finished is final: a late 'started' or 'dropped' cannot resurrect or relabel it
    assert not j2.started("j0")
    assert not j2.dropped("j0", "x")
    assert j2.states()["j0"] == "finished"


def test_replay_keeps_every_field(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    e = Entry(
        id="a",
        priority="important",
        text="数据 👩‍👩‍👧 שלום",
        source="control",
        accepted_at=5.0,
        expires_at=None,
        voice="joe",
        origin=ChatOrigin(user="Ünï", channel="#c", platform="twitch", kind="paid", msg_id="m1"),
    )
    j.add(e)
    assert Journal.in_dir(tmp_path).replay().pending == [e]


def test_expired_jobs_are_dropped_on_replay(tmp_path: Path) -> None:
    clock = Clock()
    j = Journal.in_dir(tmp_path, clock=clock)
    j.add(entry("old", expires=clock.t + 10))
    j.add(entry("fresh", expires=clock.t + 1000))
    j.add(entry("paid", "important"))  # never expires
    clock.t += 100
    r = j.replay()
    assert [e.id for e in r.pending] == ["paid", "fresh"]
    assert [e.id for e in r.expired] == ["old"]
    assert j.states()["old"] == "dropped"
    assert [e.id for e in j.replay().pending] == ["paid", "fresh"]  # and it stays dropped


def test_duplicate_id_is_a_per_job_error_while_in_flight(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    j.add(entry("a"))
    j.add(entry("b"))
    with pytest.raises(JournalError) as ei:
        j.add(entry("a"))
    assert ei.value.code == "duplicate_id"
    j.started("a")
    with pytest.raises(JournalError):
        j.add(entry("a"))
    j.finished("a")
    j.add(entry("a"))  # an id whose job is over may be used again, and queues as a new job
    assert [e.id for e in j.replay().pending] == ["b", "a"]


def test_lone_surrogate_is_a_per_job_error(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    with pytest.raises(JournalError) as ei:
        j.add(Entry(id="s", priority="text", text="bad \ud800", source="control", accepted_at=0.0))
    assert ei.value.code == "bad_text"
    j.add(entry("ok"))  # the journal still works
    assert j.count() == 1


def test_prune_removes_only_old_finished_and_dropped(tmp_path: Path) -> None:
    clock = Clock()
    j = Journal.in_dir(tmp_path, clock=clock)
    for i in range(4):
        j.add(entry(f"j{i}"))
    j.finished("j0")
    j.dropped("j1", "stale")
    j.started("j2")
    assert j.prune(keep_s=60) == 0  # too recent
    clock.t += 61
    j.finished("j3")  # touched just now: kept
    assert j.prune(keep_s=60) == 2
    assert set(j.states()) == {"j2", "j3"}
    assert j.prune() == 1
    assert j.states() == {"j2": "started"}


def test_disk_full_is_a_clear_per_job_error_not_a_crash(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path, max_bytes=64 * 1024)  # SQLite's max_page_count: a tiny "disk"
    big = "x" * 2000
    accepted = 0
    with pytest.raises(JournalFull) as ei:
        for i in range(1000):
            j.add(Entry(id=f"j{i}", priority="text", text=big, source="chat", accepted_at=0.0))
            accepted += 1
    assert ei.value.code == "journal_full"
    assert "full" in str(ei.value)
    assert 5 < accepted < 1000
    assert j.counters["write_errors"] == 1
    # Bookkeeping on accepted jobs still works, and freeing space lets new jobs in again.
    for i in range(accepted):
        assert j.finished(f"j{i}")
    assert j.prune() == accepted
    j.add(Entry(id="after", priority="text", text=big, source="chat", accepted_at=0.0))
    assert [e.id for e in j.replay().pending] == ["after"]


def test_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite3").write_bytes(b"this is not a database" * 100)
    j = Journal.in_dir(tmp_path)
    j.add(entry("a"))
    assert [e.id for e in j.replay().pending] == ["a"]
    assert len(list(tmp_path.glob("journal.sqlite3.corrupt-*"))) == 1


_WRITER = """
import os, sys
from ishowttsd.daemon.journal import Entry, Journal
j = Journal.in_dir(__import__("pathlib").Path(sys.argv[1]))
for i in range(50):
    j.add(Entry(id=f"j{i}", priority="text", text="t", source="chat", accepted_at=0.0))
    if i < 20:
        j.started(f"j{i}"); j.finished(f"j{i}")
print("written", flush=True)
os.kill(os.getpid(), 9)
"""


def test_committed_jobs_survive_sigkill(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", _WRITER, str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == -9 and "written" in p.stdout, p.stderr
    r = Journal.in_dir(tmp_path).replay()
    assert [e.id for e in r.pending] == [f"j{i}" for i in range(20, 50)]


def test_wal_mode(tmp_path: Path) -> None:
    Journal.in_dir(tmp_path).close()
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_locked_journal_raises_and_is_never_moved_aside(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    j.add(entry("keep"))
    j.close()
    (tmp_path / "journal.sqlite3-wal").unlink(missing_ok=True)
    (tmp_path / "journal.sqlite3-shm").unlink(missing_ok=True)
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    db.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        with pytest.raises(sqlite3.OperationalError):
            Journal(tmp_path / "journal.sqlite3", busy_timeout_s=0.1)
    finally:
        db.rollback()
        db.close()
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert [e.id for e in Journal.in_dir(tmp_path).replay().pending] == ["keep"]
