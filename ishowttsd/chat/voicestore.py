"""Viewers' sticky voices (``!voice NAME``): per platform and user, kept in ``<state_dir>/chat.sqlite3``.

A viewer who picked a voice keeps it across daemon restarts until ``!voice reset``. SQLite in WAL
mode, one small table; a store that cannot be opened or written is logged and the daemon goes on
without sticky voices (speech on stream beats a remembered preference).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from ishowttsd import log

_log = log.get(__name__)

FILENAME = "chat.sqlite3"
MAX_USERS = 100_000
"""Past this many remembered viewers, the longest unchanged choices are forgotten first."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_voices (
    platform   TEXT NOT NULL,
    user       TEXT NOT NULL,
    voice      TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (platform, user)
);
"""


class VoiceStore:
    def __init__(self, path: Path | None) -> None:
        """``path`` None: remember in memory only (no state directory)."""
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._memory: dict[tuple[str, str], str] = {}
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                self._db = db
            except (sqlite3.Error, OSError) as e:
                _log.error(
                    "sticky voices not kept across restarts: cannot open the store",
                    path=str(path),
                    error=str(e),
                )

    @classmethod
    def in_dir(cls, state_dir: Path) -> VoiceStore:
        return cls(state_dir / FILENAME)

    @staticmethod
    def _key(platform: str | None, user: str) -> tuple[str, str]:
        return (platform or "").casefold(), user.casefold()

    def get(self, platform: str | None, user: str) -> str | None:
        key = self._key(platform, user)
        with self._lock:
            if self._db is None:
                return self._memory.get(key)
            try:
                row = self._db.execute(
                    "SELECT voice FROM user_voices WHERE platform=? AND user=?", key
                ).fetchone()
            except sqlite3.Error as e:
                _log.error("sticky voice lookup failed", error=str(e))
                return None
        return None if row is None else str(row[0])

    def set(self, platform: str | None, user: str, voice: str | None) -> None:
        """Remember ``voice`` for the user (None: forget, ``!voice reset``)."""
        key = self._key(platform, user)
        with self._lock:
            if self._db is None:
                if voice is None:
                    self._memory.pop(key, None)
                else:
                    self._memory[key] = voice
                return
            try:
                if voice is None:
                    self._db.execute("DELETE FROM user_voices WHERE platform=? AND user=?", key)
                else:
                    self._db.execute(
                        "INSERT INTO user_voices VALUES (?, ?, ?, ?) ON CONFLICT(platform, user)"
                        " DO UPDATE SET voice=excluded.voice, updated_at=excluded.updated_at",
                        (*key, voice, time.time()),
                    )
                    self._db.execute(
                        "DELETE FROM user_voices WHERE rowid IN (SELECT rowid FROM user_voices"
                        " ORDER BY updated_at DESC LIMIT -1 OFFSET ?)",
                        (MAX_USERS,),
                    )
            except sqlite3.Error as e:
                _log.error("sticky voice not saved", error=str(e))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
