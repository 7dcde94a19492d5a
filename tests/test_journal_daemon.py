"""The journal through the real daemon: damaged on disk, locked at start, and the pause it keeps.

The must-show of the hardening issue: pause, queue 5 jobs, kill -9, damage the file past its
header, restart → the daemon serves new lines, reports the damage (log, status, an event) and
speaks every waiting job it recovered. Before, it started ``ready`` and refused every line with
``journal_error``, and the waiting jobs were lost without a word.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from robust import record
from support import Daemon, base_settings, deep_merge, short_tmpdir
from waits import wait_until

from ishowttsd.daemon.journal import Entry, Journal

SETTINGS = {"audio": {"sinks": ["pcm"], "pace": "off"}}


def _history(state: Path, n: int = 40) -> None:
    """Spoken lines from earlier days, checkpointed into the main file by a clean close."""
    j = Journal.in_dir(state)
    for i in range(n):
        j.add(Entry(id=f"old{i}", priority="text", text=f"an old line {i} " + "y" * 300, source="chat",
                    accepted_at=1.0 + i))  # fmt: skip
        j.finished(f"old{i}")
    j.close()


def _damage_past_header(path: Path, seed: int) -> int:
    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    data[100:] = bytes(rng.randrange(256) for _ in range(len(data) - 100))
    path.write_bytes(bytes(data))
    return len(data) - 100


def _done_ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["job"] for e in events if e.get("event") == "done"]


def test_pause_queue_5_kill_9_damage_restart_speaks_what_was_recovered() -> None:
    d = short_tmpdir()
    settings = deep_merge(base_settings(d), SETTINGS)
    state = d / "state"
    _history(state)
    first = Daemon(d, settings)
    first.start()
    try:
        first.wait_ready()
        assert first.request({"op": "pause"})["event"] == "ok"
        for i in range(5):
            reply = first.request({"op": "say", "id": f"wait{i}", "text": f"Waiting line number {i}."})
            assert reply["event"] == "queued" and "crash_safe" not in reply, reply
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait(10)
    finally:
        first.close()
    damaged_bytes = _damage_past_header(state / "journal.sqlite3", seed=16)

    second = Daemon(d, settings)
    events = second.subscribe(joined=False)  # before the start: it hears the daemon's first events
    second.start()
    try:
        second.wait_ready()
        report = events.wait_for(lambda e: e.get("event") == "journal_damaged", 15)
        status = second.request({"op": "status"})
        journal = status["chat"]["journal"]
        assert journal["damaged"]["recovered_jobs"] == report["recovered_jobs"] == 5, (report, journal)
        assert Path(report["moved_to"]).exists() and journal["crash_safe"] is True
        assert "journal damaged" in second.log_text()
        # The pause was kept in the journal and recovered with it: still paused, the jobs wait.
        assert report["pause_restored"] is True and status["paused"] is True, (report, status["paused"])
        assert status["queue"]["jobs"] == 5
        # It serves: a new line is accepted (journalled in the fresh file), and all of it is spoken.
        new = second.request({"op": "say", "id": "after", "text": "A new line after the damage."})
        assert new["event"] == "queued" and "crash_safe" not in new, new
        assert second.request({"op": "resume"})["event"] == "ok"
        deadline = time.monotonic() + 120
        want = {f"wait{i}" for i in range(5)} | {"after"}
        while not want <= set(_done_ids(events.events)):
            assert time.monotonic() < deadline, (_done_ids(events.events), second.log_text()[-2000:])
            events.pump(0.2)
        done = _done_ids(events.events)
        assert [j for j in done if j.startswith("wait")] == [f"wait{i}" for i in range(5)]  # in order
        assert not [e for e in events.events if e.get("event") == "error"], events.events
        record("journal_damage_daemon", damaged_bytes=damaged_bytes, recovered_jobs=report["recovered_jobs"],
               recovered_rows=report["recovered_rows"], unreadable_pages=report["unreadable_pages"],
               spoken_after_restart=len(want))  # fmt: skip
    finally:
        second.close()
        shutil.rmtree(d, ignore_errors=True)


def test_a_journal_locked_at_start_is_retried_and_lines_say_they_are_not_crash_safe() -> None:
    d = short_tmpdir()
    settings = deep_merge(base_settings(d), SETTINGS)
    state = d / "state"
    j = Journal.in_dir(state)
    j.add(
        Entry(id="left", priority="message", text="Left over from before.", source="control", accepted_at=1.0)
    )
    j.close()
    lock = sqlite3.connect(state / "journal.sqlite3", isolation_level=None)
    lock.execute("PRAGMA journal_mode=DELETE")  # a backup tool's exclusive lock, held across the start
    lock.execute("BEGIN EXCLUSIVE")
    daemon = Daemon(d, settings)
    events = daemon.subscribe(joined=False)  # before the start: it hears the daemon's first events
    daemon.start()
    try:
        daemon.wait_ready()
        status = daemon.request({"op": "status"})["chat"]["journal"]
        assert status["crash_safe"] is False and status["retrying"] is True, status
        attempts = status["attempts"]
        reply = daemon.request({"op": "say", "id": "meanwhile", "text": "Said while the journal is locked."})
        assert reply["event"] in ("queued", "started", "done") and reply.get("crash_safe") is False, reply
        lock.execute("ROLLBACK")
        lock.close()
        ev = events.wait_for(lambda e: e.get("event") == "journal_available", 60)
        assert ev["replayed"] == 1, ev  # the job an earlier run left is spoken after all
        status = daemon.request({"op": "status"})["chat"]["journal"]
        assert status["crash_safe"] is True, status
        events.wait_for(lambda e: e.get("event") == "done" and e.get("job") == "left", 60)
        later = daemon.request({"op": "say", "text": "Crash-safe again."})
        assert later["event"] == "queued" and "crash_safe" not in later, later
        record("journal_locked_daemon", attempts_while_locked=attempts, replayed_when_opened=ev["replayed"])
    finally:
        daemon.close()
        shutil.rmtree(d, ignore_errors=True)


def _kept_pause(state: Path) -> str | None:
    """The pause the journal keeps for the next start, read as the next start reads it."""
    db = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'paused'").fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


def test_pause_survives_a_clean_restart_and_resume_is_kept_too() -> None:
    d = short_tmpdir()
    settings = deep_merge(base_settings(d), SETTINGS)
    for paused in (True, False):
        daemon = Daemon(d, settings)
        daemon.start()
        try:
            daemon.wait_ready()
            daemon.request({"op": "pause" if paused else "resume"})
            want = "1" if paused else "0"  # the main loop writes it within a turn (250 ms)
            wait_until(
                lambda want=want: _kept_pause(d / "state") == want, 10, f"paused={want} in the journal"
            )
        finally:
            daemon.close()
        again = Daemon(d, settings)
        events = again.subscribe(joined=False)  # before the start: it hears the daemon's first events
        again.start()
        try:
            again.wait_ready()
            assert again.request({"op": "status"})["paused"] is paused
            if paused:
                events.wait_for(lambda e: e.get("event") == "paused" and e.get("source") == "restart", 15)
        finally:
            again.close()
    shutil.rmtree(d, ignore_errors=True)
