"""The ``-o`` file of ``ishowtts-say``: a 16-bit mono WAV written as the audio arrives.

Opened (and its header written and flushed) *before* anything is sent to the daemon, so a
missing folder, a folder given as the file, a read-only place or a full disk is a usage error
before anything is spoken. Audio goes to disk as it comes, so a daemon that dies half-way
leaves the audio received so far in a valid file; the header's sizes and rate are patched on
close (for a pipe, which cannot seek, they are written once, with the first audio, as
"unknown length").
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

_UNKNOWN = 0xFFFFFFFF


class OutputError(Exception):
    """The ``-o`` file cannot be opened or written; ``str()`` says which file and why."""


def _header(rate: int, data_bytes: int) -> bytes:
    riff = _UNKNOWN if data_bytes >= _UNKNOWN - 36 else 36 + data_bytes
    data = min(data_bytes, _UNKNOWN)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


class WavOut:
    """One output WAV. Every failure raises :class:`OutputError` (never a bare ``OSError``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rate = 0
        self.bytes = 0
        self.rate_mismatch = False
        if path.is_dir():
            raise OutputError(f"cannot write {path}: it is a directory")
        parent = path.parent
        if not parent.is_dir():
            raise OutputError(f"cannot write {path}: the directory {parent} does not exist")
        try:
            self._f: BinaryIO = open(path, "wb")  # noqa: SIM115 - kept open while audio arrives
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
        try:
            self._seekable = self._f.seekable()
            if self._seekable:
                self._f.write(_header(22050, 0))  # placeholder, patched on close
                self._f.flush()
        except OSError as e:
            self._abandon()
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from e

    @property
    def seconds(self) -> float:
        return self.bytes / 2 / self.rate if self.rate else 0.0

    def write(self, rate: int, pcm: bytes) -> None:
        """Append s16le mono samples at ``rate`` Hz (the first rate is the file's)."""
        if not self.rate:
            self.rate = rate
            if not self._seekable:
                self._write(_header(rate, _UNKNOWN))
        elif rate != self.rate:
            self.rate_mismatch = True
        self._write(pcm)
        self.bytes += len(pcm)

    def close(self) -> None:
        """Patch the header and close; raises OutputError if the data did not reach the disk."""
        try:
            if self._seekable:
                self._f.seek(0)
                self._f.write(_header(self.rate or 22050, self.bytes))
            self._f.flush()
        except OSError as e:
            self._abandon()
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        try:
            self._f.close()
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e

    def _write(self, data: bytes) -> None:
        try:
            self._f.write(data)
        except OSError as e:
            self._abandon()
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e

    def _abandon(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass
