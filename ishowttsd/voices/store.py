"""Voices made in the studio, kept under ``<state_dir>/voices/<id>/`` (``ref.wav`` + ``voice.json``).

Who writes and who reads: the web gateway (``ishowtts-web``) prepares uploads and writes here; the
daemon only reads, when it starts and on its ``reload_voices`` control op, and merges these voices
with the configured ``[[voices]]`` (a configured id wins; the studio refuses ids that are taken).
Both units run as user ``ishowtts``: the directory is group-writable (0770), and the gateway's unit
has it as its only writable path (``ReadWritePaths=``).

A voice appears whole or not at all: it is written into a hidden temporary directory on the same
file system, flushed, and renamed into place; a delete renames it out of sight before removing it.
Readers skip names starting with a dot, so a crash mid-write leaves nothing the daemon would load,
and :meth:`VoiceStore.clean` removes the leftovers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ishowttsd.engine.f5.settings import VoiceSettings
from ishowttsd.voices.errors import VoiceError

DIRNAME = "voices"
CLIP = "ref.wav"
META = "voice.json"
ID_RE = re.compile(r"[a-z0-9_-]{1,32}")
MAX_TEXT_CHARS = 1000
MAX_LANGUAGE_CHARS = 16
STALE_TMP_S = 3600.0
"""Temporary directories older than this are leftovers of a crash (an upload takes seconds)."""


@dataclass(frozen=True)
class StoredVoice:
    id: str
    ref_text: str
    language: str | None
    seconds: float
    """Length of the reference clip."""
    created: float
    """Unix seconds."""
    transcribed: bool
    """Whether ``ref_text`` came from Whisper (and was not changed by the user)."""
    dir: Path

    @property
    def clip(self) -> Path:
        return self.dir / CLIP

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ref_text": self.ref_text,
            "language": self.language,
            "seconds": round(self.seconds, 2),
            "created": self.created,
            "transcribed": self.transcribed,
        }

    def settings(self) -> VoiceSettings:
        return VoiceSettings(
            id=self.id,
            ref_audio=self.clip,
            ref_text=self.ref_text,
            language=self.language,
            description="made in the voice studio",
        )


def check_id(voice_id: str) -> str:
    if not isinstance(voice_id, str) or not ID_RE.fullmatch(voice_id):
        raise VoiceError(
            "bad_id",
            "A voice id is 1 to 32 characters: lower-case letters, digits, '_' and '-' "
            f"(got {str(voice_id)[:40]!r}).",
        )
    return voice_id


def check_text(ref_text: str) -> str:
    text = " ".join(ref_text.split())
    if len(text) > MAX_TEXT_CHARS:
        raise VoiceError("bad_text", f"The transcript is longer than {MAX_TEXT_CHARS} characters.")
    if not text:
        raise VoiceError("bad_text", "The transcript is empty: type what the recording says.")
    return text


def check_language(language: str | None) -> str | None:
    if language is None or not language.strip():
        return None
    lang = language.strip()
    if len(lang) > MAX_LANGUAGE_CHARS or not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", lang):
        msg = f"The language should be a code such as 'en' or 'pt-BR', not {lang[:20]!r}."
        raise VoiceError("bad_text", msg)
    return lang


class VoiceStore:
    """The studio's voices in one directory. Safe for one writer (the gateway) and many readers."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> VoiceStore:
        return cls(state_dir / DIRNAME)

    # -- reading ------------------------------------------------------------------------------------
    def list(self) -> list[StoredVoice]:
        """Every complete voice, by id; broken entries are skipped (never raised)."""
        out: list[StoredVoice] = []
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return []
        for name in names:
            if name.startswith(".") or not ID_RE.fullmatch(name):
                continue
            v = self._read(self.root / name)
            if v is not None:
                out.append(v)
        return out

    def get(self, voice_id: str) -> StoredVoice | None:
        if not ID_RE.fullmatch(voice_id):
            return None
        return self._read(self.root / voice_id)

    def _read(self, d: Path) -> StoredVoice | None:
        try:
            meta = json.loads((d / META).read_text(encoding="utf-8"))
            if not (d / CLIP).is_file() or meta.get("id") != d.name:
                return None
            return StoredVoice(
                id=d.name,
                ref_text=str(meta["ref_text"]),
                language=meta.get("language"),
                seconds=float(meta.get("seconds", 0.0)),
                created=float(meta.get("created", 0.0)),
                transcribed=bool(meta.get("transcribed", False)),
                dir=d,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- writing ------------------------------------------------------------------------------------
    def save(
        self,
        voice_id: str,
        wav: bytes,
        ref_text: str,
        *,
        seconds: float,
        language: str | None = None,
        transcribed: bool = False,
        taken: Iterable[str] = (),
    ) -> StoredVoice:
        """Write a voice whole (temporary directory, then rename). Raises VoiceError if the id is
        malformed or already used here or in ``taken`` (the configured voices)."""
        check_id(voice_id)
        text = check_text(ref_text)
        lang = check_language(language)
        if voice_id in set(taken) or (self.root / voice_id).exists():
            raise VoiceError("exists", f"A voice named {voice_id!r} already exists; pick another name.")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{voice_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            meta = {
                "id": voice_id,
                "ref_text": text,
                "language": lang,
                "seconds": round(seconds, 3),
                "created": time.time(),
                "transcribed": transcribed,
            }
            _write(tmp / CLIP, wav)
            _write(tmp / META, json.dumps(meta, ensure_ascii=False, indent=1).encode())
            _fsync_dir(tmp)
            try:
                os.rename(tmp, self.root / voice_id)  # fails if another writer got there first
            except OSError:
                raise VoiceError("exists", f"A voice named {voice_id!r} already exists.") from None
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        v = self._read(self.root / voice_id)
        assert v is not None
        return v

    def delete(self, voice_id: str) -> None:
        """Remove a voice (first out of sight, then from the disk). Raises VoiceError if unknown."""
        d = self.root / voice_id
        if not ID_RE.fullmatch(voice_id) or not d.is_dir():
            raise VoiceError("unknown_voice", f"There is no studio voice named {voice_id[:40]!r}.")
        gone = self.root / f".del-{voice_id}-{uuid.uuid4().hex[:8]}"
        os.rename(d, gone)
        shutil.rmtree(gone, ignore_errors=True)

    def clean(self, older_than_s: float = STALE_TMP_S) -> int:
        """Remove leftovers of interrupted writes and deletes; returns how many."""
        n = 0
        now = time.time()
        with contextlib.suppress(OSError):
            for p in self.root.iterdir():
                if p.name.startswith((".tmp-", ".del-")) and now - p.stat().st_mtime >= older_than_s:
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
        return n


def merged(configured: Sequence[VoiceSettings], store: VoiceStore) -> tuple[VoiceSettings, ...]:
    """The configured ``[[voices]]`` first (their ids win), then the studio's."""
    ids = {v.id for v in configured}
    return (*configured, *(v.settings() for v in store.list() if v.id not in ids))


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
