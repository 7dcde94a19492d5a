"""What survives of a damaged journal, read page by page from the files (SQLite is not asked).

SQLite itself gives up on a damaged file: a query that reaches a bad page fails ("database disk
image is malformed"), and a write-ahead log whose checksum breaks is silently cut there, so the
jobs committed after the break are gone without a word. This module is the salvage: it reads the
main file and every frame of the ``-wal`` file as raw pages, keeps the newest version of each
page that still decodes, and returns every ``jobs`` row found on the table's leaf pages (and
their overflow pages). Rows whose bytes do not decode as a job (wrong column count or types, a
state or priority that does not exist) are left out: garbage is never replayed.

Formats: https://www.sqlite.org/fileformat2.html (b-tree pages, records, the WAL).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ishowttsd.protocol import PRIORITIES

COLUMNS = (
    "seq", "id", "priority", "text", "voice", "user", "channel", "platform", "kind", "msg_id",
    "source", "accepted_at", "expires_at", "state", "reason", "updated_at", "outcome",
)  # fmt: skip
"""The ``jobs`` table's columns in schema order (schema 1 rows lack the last one)."""
STATES = ("accepted", "started", "finished", "dropped")
"""A row's ``state`` column (defined here, with the columns, so that this module needs nothing
from :mod:`ishowttsd.daemon.journal`, which imports it)."""
META_KEYS = ("paused",)
"""Keys of the ``meta`` table a salvage looks for (a two-text-column record with such a key)."""
REQUIRED_TEXT = ("id", "priority", "text", "source", "state")
OPTIONAL_TEXT = ("voice", "user", "channel", "platform", "kind", "msg_id", "reason", "outcome")

WAL_MAGIC = (0x377F0682, 0x377F0683)
"""Little- and big-endian checksums."""
WAL_HEADER = 32
FRAME_HEADER = 24
LEAF_TABLE = 0x0D
LEAF_INDEX = 0x0A
INTERIOR_TABLE = 0x05
INTERIOR_INDEX = 0x02
PAGE_TYPES = (INTERIOR_INDEX, INTERIOR_TABLE, LEAF_INDEX, LEAF_TABLE)


@dataclass
class Salvage:
    """What :func:`salvage` read."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    """Every decodable ``jobs`` row, newest version of each page, by ``seq``."""
    pages: int = 0
    """Distinct pages seen (main file and log)."""
    unreadable_pages: int = 0
    """Pages of which no version decodes: the rows they held are lost."""
    meta: dict[str, str] = field(default_factory=dict)
    """Rows of the ``meta`` table (daemon state such as ``paused``) that could be read."""


# -- write-ahead log ------------------------------------------------------------------------------------


def _wal_checksum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words) - 1, 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


@dataclass(frozen=True)
class _Frame:
    index: int
    page: int
    commit: bool
    salts: tuple[int, int]
    data: bytes
    checksum_ok: bool


def _wal_frames(wal: bytes) -> tuple[int, tuple[int, int] | None, list[_Frame], bool]:
    """(page size, the header's salts or None, every frame, whether the header checksum holds)."""
    if len(wal) < WAL_HEADER:
        return 0, None, [], False
    magic, _version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", wal[:WAL_HEADER])
    big = magic == WAL_MAGIC[1]
    header_ok = magic in WAL_MAGIC and _wal_checksum(wal[:24], 0, 0, big) == (c1, c2)
    if not (512 <= page_size <= 65536 and page_size & (page_size - 1) == 0):
        return 0, None, [], header_ok
    s = _wal_checksum(wal[:24], 0, 0, big) if header_ok else (0, 0)
    frames: list[_Frame] = []
    chain_ok = header_ok
    off = WAL_HEADER
    size = FRAME_HEADER + page_size
    while off + size <= len(wal):
        page, commit, f1, f2, k1, k2 = struct.unpack(">6I", wal[off : off + FRAME_HEADER])
        data = wal[off + FRAME_HEADER : off + size]
        ok = False
        if chain_ok and (f1, f2) == (salt1, salt2):
            s = _wal_checksum(wal[off : off + 8], *s, big)
            s = _wal_checksum(data, *s, big)
            ok = s == (k1, k2)
        chain_ok = chain_ok and ok
        frames.append(_Frame(len(frames), page, commit != 0, (f1, f2), data, ok))
        off += size
    return page_size, ((salt1, salt2) if header_ok else None), frames, header_ok


def wal_problem(wal_path: Path) -> str | None:
    """Why SQLite would silently drop committed transactions of this log (None: it would not).

    SQLite replays frames up to the first one whose checksum fails and ignores the rest, and
    ignores the whole log when its header is damaged. A crash only ever leaves an unfinished
    transaction at the end (no commit frame after the break): that is normal, not damage.
    """
    try:
        wal = wal_path.read_bytes()
    except FileNotFoundError:
        return None
    if len(wal) <= WAL_HEADER:
        return None
    _, salts, frames, header_ok = _wal_frames(wal)
    if not header_ok:
        return f"{wal_path}: the write-ahead log's header is damaged (SQLite would ignore {len(wal)} bytes)"
    first_bad = next((f.index for f in frames if not f.checksum_ok), None)
    if first_bad is None:
        return None
    lost = [f for f in frames[first_bad:] if f.commit and f.salts == salts]
    if not lost:
        return None
    return (
        f"{wal_path}: frame {first_bad} of the write-ahead log is damaged; "
        f"{len(lost)} committed transaction(s) after it would be lost"
    )


# -- b-tree pages and records ---------------------------------------------------------------------------


def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = 0
    for k in range(8):
        c = b[i + k]
        v = (v << 7) | (c & 0x7F)
        if c < 0x80:
            return v, i + k + 1
    return (v << 8) | b[i + 8], i + 9


def _value(t: int, b: bytes, i: int) -> tuple[Any, int]:
    if t == 0:
        return None, i
    if 1 <= t <= 6:
        n = (1, 2, 3, 4, 6, 8)[t - 1]
        if i + n > len(b):
            raise ValueError("record ends early")
        return int.from_bytes(b[i : i + n], "big", signed=True), i + n
    if t == 7:
        return struct.unpack(">d", b[i : i + 8])[0], i + 8
    if t in (8, 9):
        return t - 8, i
    if t >= 12:
        n = (t - 12) // 2
        if i + n > len(b):
            raise ValueError("record ends early")
        raw = b[i : i + n]
        return (raw.decode("utf-8") if t % 2 else raw), i + n
    raise ValueError(f"reserved serial type {t}")


def _record(payload: bytes) -> list[Any]:
    hlen, i = _varint(payload, 0)
    if hlen > len(payload) or hlen < 1:
        raise ValueError("bad record header")
    types: list[int] = []
    while i < hlen:
        t, i = _varint(payload, i)
        types.append(t)
    values: list[Any] = []
    j = hlen
    for t in types:
        v, j = _value(t, payload, j)
        values.append(v)
    if j != len(payload):
        raise ValueError("record length mismatch")
    return values


def _job_row(rowid: int, values: list[Any]) -> dict[str, Any] | None:
    """A ``jobs`` row from a record, or None when the record is something else (or garbage)."""
    if len(values) not in (len(COLUMNS) - 1, len(COLUMNS)):
        return None
    row = dict(zip(COLUMNS, values, strict=False))
    row.setdefault("outcome", None)
    row["seq"] = rowid
    if not all(isinstance(row[k], str) for k in REQUIRED_TEXT):
        return None
    if not all(row[k] is None or isinstance(row[k], str) for k in OPTIONAL_TEXT):
        return None
    for k in ("accepted_at", "updated_at"):
        if isinstance(row[k], bool) or not isinstance(row[k], (int, float)):
            return None
    if row["expires_at"] is not None and not isinstance(row["expires_at"], (int, float)):
        return None
    if row["state"] not in STATES or row["priority"] not in PRIORITIES or not row["id"]:
        return None
    return row


class _Pages:
    """The newest decodable version of each page, across the main file and the log."""

    def __init__(self, main: bytes, wal: bytes) -> None:
        self.page_size = _main_page_size(main)
        self.usable = self.page_size - (main[20] if len(main) > 20 else 0)
        versions: dict[int, list[bytes]] = {}
        for n in range(len(main) // self.page_size):
            versions.setdefault(n + 1, []).append(main[n * self.page_size : (n + 1) * self.page_size])
        wal_size, salts, frames, _ = _wal_frames(wal)
        if frames and wal_size == self.page_size:
            if salts is None:  # header damaged: the generation most frames carry
                counts: dict[tuple[int, int], int] = {}
                for f in frames:
                    counts[f.salts] = counts.get(f.salts, 0) + 1
                salts = max(counts, key=lambda k: counts[k])
            for f in frames:
                if f.salts == salts and 1 <= f.page <= 1 << 31:
                    versions.setdefault(f.page, []).append(f.data)
        self.versions = versions  # oldest first
        self.unreadable = 0

    def cells(self) -> Iterator[tuple[int, bytes, bool]]:
        """(rowid, payload, is an index cell) of every cell of every leaf page, newest decodable
        version of each page."""
        self.unreadable = 0
        for n, vs in sorted(self.versions.items()):
            for data in reversed(vs):
                cells = self._leaf(n, data)
                if cells is not None:
                    yield from cells
                    break
            else:
                self.unreadable += 1

    def _leaf(self, n: int, data: bytes) -> list[tuple[int, bytes, bool]] | None:
        """A page's cells when it is a leaf; [] for another kind of page; None: garbage."""
        h = 100 if n == 1 else 0
        try:
            kind = data[h]
            if kind not in PAGE_TYPES:
                return [] if not any(data[h : h + 8]) else None  # zeroed (free) or garbage
            if kind not in (LEAF_TABLE, LEAF_INDEX):
                return []
            count = int.from_bytes(data[h + 3 : h + 5], "big")
            out: list[tuple[int, bytes, bool]] = []
            for c in range(count):
                ptr = int.from_bytes(data[h + 8 + 2 * c : h + 10 + 2 * c], "big")
                if not h + 8 + 2 * count <= ptr < self.usable:
                    return None
                if kind == LEAF_TABLE:
                    out.append((*self._cell(data, ptr), False))
                else:
                    out.append((0, self._index_cell(data, ptr), True))
            return out
        except (IndexError, ValueError, struct.error):
            return None

    def _index_cell(self, data: bytes, ptr: int) -> bytes:
        """The payload of a small index-leaf cell (the meta table's rows are a few bytes)."""
        size, i = _varint(data, ptr)
        if i + size > self.usable or size > self.usable - 35:
            raise ValueError("index cell overruns its page or overflows")
        return data[i : i + size]

    def _cell(self, data: bytes, ptr: int) -> tuple[int, bytes]:
        size, i = _varint(data, ptr)
        rowid, i = _varint(data, i)
        if rowid >= 1 << 63:
            rowid -= 1 << 64
        u = self.usable
        x = u - 35
        if size <= x:
            if i + size > u:
                raise ValueError("cell overruns its page")
            return rowid, data[i : i + size]
        m = ((u - 12) * 32 // 255) - 23
        k = m + (size - m) % (u - 4)
        local = k if k <= x else m
        payload = bytearray(data[i : i + local])
        nxt = int.from_bytes(data[i + local : i + local + 4], "big")
        seen: set[int] = set()
        while len(payload) < size:
            if nxt in seen or nxt not in self.versions:
                raise ValueError("broken overflow chain")
            seen.add(nxt)
            page = self.versions[nxt][-1]
            payload += page[4:u]
            nxt = int.from_bytes(page[:4], "big")
        return rowid, bytes(payload[:size])


def _main_page_size(main: bytes) -> int:
    if len(main) >= 18:
        v = int.from_bytes(main[16:18], "big")
        size = 65536 if v == 1 else v
        if 512 <= size <= 65536 and size & (size - 1) == 0:
            return size
    return 4096


def salvage(db_path: Path, wal_path: Path | None = None) -> Salvage:
    """Every ``jobs`` row that can still be read from ``db_path`` and its log (default:
    ``<db_path>-wal``). Never raises for damaged content; an unreadable file gives nothing."""
    wal_path = wal_path if wal_path is not None else Path(f"{db_path}-wal")
    try:
        main = db_path.read_bytes()
    except OSError:
        main = b""
    try:
        wal = wal_path.read_bytes()
    except OSError:
        wal = b""
    pages = _Pages(main, wal)
    rows: dict[int, dict[str, Any]] = {}
    meta: dict[str, str] = {}
    for rowid, payload, index in pages.cells():
        try:
            values = _record(payload)
        except (IndexError, ValueError, UnicodeDecodeError, struct.error):
            continue
        if index:  # WITHOUT ROWID tables live in index b-trees: the meta table
            if len(values) == 2 and values[0] in META_KEYS and isinstance(values[1], str):
                meta[values[0]] = values[1]
            continue
        row = _job_row(rowid, values)
        old = rows.get(rowid)
        # Two copies of a row (a page that was freed after a split, stale): the newer one wins.
        if row is not None and (old is None or row["updated_at"] >= old["updated_at"]):
            rows[rowid] = row
    out = Salvage(rows=[rows[k] for k in sorted(rows)], pages=len(pages.versions), meta=meta)
    out.unreadable_pages = pages.unreadable
    return out
