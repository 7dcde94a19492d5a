"""A damaged journal: found at open, moved aside, and every readable waiting job recovered.

The journals are written by a real process that is killed with SIGKILL (so the last jobs live
in the write-ahead log, as after a crash), then damaged with random bytes the way a failing SD
card or a stray write would: past the SQLite header of the main file, or inside the ``-wal``.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from ishowttsd.daemon.journal import Entry, Journal
from ishowttsd.daemon.journal_repair import salvage, wal_problem

_WRITER = """
import os, sys
from pathlib import Path
from ishowttsd.daemon.journal import Entry, Journal
d = Path(sys.argv[1])
j = Journal.in_dir(d)
for i in range(40):  # history, checkpointed into the main file by a clean close
    j.add(Entry(id=f"old{i}", priority="text", text=f"old line {i} " + "y" * 300, source="chat",
                accepted_at=float(i)))
    j.finished(f"old{i}")
j.close()
j = Journal.in_dir(d)
for i in range(5):
    j.add(Entry(id=f"wait{i}", priority="message", text=f"waiting line {i} " + "z" * 3000 * (i == 4),
                source="control", accepted_at=100.0 + i))
print("written", flush=True)
os.kill(os.getpid(), 9)
"""


def _crashed_journal(d: Path) -> Path:
    p = subprocess.run([sys.executable, "-c", _WRITER, str(d)], capture_output=True, text=True, timeout=60)
    assert p.returncode == -9 and "written" in p.stdout, p.stderr
    return d / "journal.sqlite3"


def _damage(path: Path, start: int, n: int, seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    end = min(len(data), start + n)
    data[start:end] = bytes(rng.randrange(256) for _ in range(end - start))
    path.write_bytes(bytes(data))


def test_random_bytes_past_the_header_are_found_and_the_waiting_jobs_recovered(tmp_path: Path) -> None:
    path = _crashed_journal(tmp_path)
    _damage(path, 100, 1 << 20, seed=1)  # everything after the 100-byte header
    j = Journal.in_dir(tmp_path)
    assert j.damage is not None
    assert "malformed" in j.damage.problem or "integrity" in j.damage.problem
    assert j.damage.moved_to.exists() and j.damage.moved_to.name.startswith("journal.sqlite3.corrupt-")
    assert j.damage.recovered == 5
    pending = j.replay().pending
    assert [e.id for e in pending] == [f"wait{i}" for i in range(5)]
    assert pending[4].text.endswith("z" * 3000)  # a row with an overflow page, read whole
    j.add(Entry(id="new", priority="text", text="after", source="chat", accepted_at=200.0))
    assert j.states()["new"] == "accepted"


@pytest.mark.parametrize("offset", [40, 5000, 30000, 60000])
def test_damage_in_the_write_ahead_log_is_found_before_sqlite_cuts_it(tmp_path: Path, offset: int) -> None:
    path = _crashed_journal(tmp_path)
    wal = Path(f"{path}-wal")
    _damage(wal, offset, 300, seed=offset)
    problem = wal_problem(wal)
    assert problem is not None and "committed transaction" in problem  # SQLite would drop them silently
    j = Journal.in_dir(tmp_path)
    assert j.damage is not None and j.damage.problem == problem and j.damage.recovered == 5
    assert sorted(e.id for e in j.replay().pending) == [f"wait{i}" for i in range(5)]


def test_an_intact_crashed_journal_is_not_damage(tmp_path: Path) -> None:
    path = _crashed_journal(tmp_path)
    assert wal_problem(Path(f"{path}-wal")) is None
    j = Journal.in_dir(tmp_path)
    assert j.damage is None and len(j.replay().pending) == 5
    assert not list(tmp_path.glob("*.corrupt-*"))


@pytest.mark.parametrize("seed", range(12))
def test_salvage_of_random_damage_never_raises_and_returns_only_real_rows(tmp_path: Path, seed: int) -> None:
    path = _crashed_journal(tmp_path)
    rng = random.Random(seed)
    for target in (path, Path(f"{path}-wal")):
        for _ in range(rng.randrange(1, 6)):
            size = target.stat().st_size
            _damage(target, rng.randrange(100, size), rng.randrange(1, 5000), rng.randrange(1 << 30))
    found = salvage(path)
    real = {f"old{i}" for i in range(40)} | {f"wait{i}" for i in range(5)}
    assert {r["id"] for r in found.rows} <= real
    for r in found.rows:
        if r["id"].startswith("wait"):
            assert r["text"].startswith(f"waiting line {r['id'][4:]}") and r["state"] == "accepted"
    j = Journal.in_dir(tmp_path)  # and the daemon's journal opens and takes jobs, whatever it found
    j.add(Entry(id="new", priority="text", text="after", source="chat", accepted_at=200.0))
