"""Voice preparation and storage: real speech (Piper), real codecs (PyAV), real Whisper."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from asr import wer
from voicekit import FORMATS, encode, silence, speech

from ishowttsd.engine.f5.settings import VoiceSettings
from ishowttsd.voices import VoiceError, prepare, store
from ishowttsd.voices.transcribe import transcribe

LINE = "Hello chat, thanks for the follow. Welcome to the stream, everybody."
LONG = [
    "This is the first sentence of a long recording.",
    "Here comes the second sentence, a little longer than the first one.",
    "And now the third sentence, which should be cut away.",
    "Finally a fourth sentence that nobody will ever hear from this voice.",
]


def clip(*lines: str, gap_s: float = 0.6, lead_s: float = 0.8) -> tuple[np.ndarray, int]:
    parts = []
    rate = 22050
    for line in lines:
        x, rate = speech(line)
        parts += [silence(gap_s, rate), x]
    return np.concatenate([silence(lead_s, rate), *parts, silence(1.0, rate)]), rate


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_upload_format_becomes_a_24k_trimmed_normalised_clip(fmt: str) -> None:
    x, rate = clip(LINE)
    p = prepare.prepare(encode(x, rate, fmt))
    assert p.rate == 24000 and p.samples.dtype == np.float32
    # edge silence trimmed down to the margins (the input had 1.4 s of lead and 1 s of tail)
    assert p.seconds < len(x) / rate - 1.6
    assert p.speech_s >= 2.0 and not p.cut
    import pyloudnorm

    lufs = pyloudnorm.Meter(24000).integrated_loudness(p.samples.astype(np.float64))
    assert abs(lufs - prepare.TARGET_LUFS) < 0.5 or np.abs(p.samples).max() >= prepare.PEAK_LIMIT - 1e-3
    assert np.abs(p.samples).max() <= prepare.PEAK_LIMIT + 1e-4


def test_long_recording_is_cut_at_a_pause_and_whisper_writes_what_is_kept() -> None:
    x, rate = clip(*LONG)
    assert len(x) / rate > prepare.MAX_CLIP_S
    p = prepare.prepare(encode(x, rate, "webm"))
    assert p.cut and p.seconds <= prepare.MAX_CLIP_S
    text = transcribe(p.samples, p.rate)
    # cut in the pause after a sentence: the transcript is whole sentences, not half a word
    assert any(wer(" ".join(LONG[:n]), text) <= 0.15 for n in (1, 2, 3)), text
    assert "fourth" not in text.lower()


def test_transcript_of_a_short_clip() -> None:
    x, rate = clip(LINE)
    p = prepare.prepare(encode(x, rate, "mp3"))
    assert wer(LINE, transcribe(p.samples, p.rate)) <= 0.15


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: b"", "not_audio"),
        (lambda: b"this is not audio at all, just some text that claims to be a file" * 50, "not_audio"),
        (lambda: os.urandom(20000), "not_audio"),
        (lambda: encode(silence(4.0), 22050, "wav"), "silent"),
        (lambda: encode(silence(4.0) + 1e-5, 22050, "ogg"), "silent"),
        (
            lambda: encode(np.concatenate([silence(1.0), speech("Hi.")[0], silence(2.0)]), 22050, "wav"),
            "too_short",
        ),
        (lambda: b"\0" * (prepare.MAX_UPLOAD_BYTES + 1), "too_large"),
    ],
    ids=["empty", "text", "random", "silence", "near-silence", "short", "oversize"],
)
def test_bad_uploads_get_a_clear_error(make: object, code: str) -> None:
    with pytest.raises(VoiceError) as e:
        prepare.prepare(make())  # type: ignore[operator]
    assert e.value.code == code
    assert len(e.value.message) > 15 and "Traceback" not in e.value.message


def test_too_long_recording_is_refused_while_decoding() -> None:
    x = np.tile(speech(LINE)[0], 3)
    with pytest.raises(VoiceError) as e:
        prepare.decode(encode(x, 22050, "mp3"), max_s=5.0)
    assert e.value.code == "too_long"


def _listing(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_store_saves_lists_merges_and_deletes(tmp_path: Path) -> None:
    s = store.VoiceStore.in_state_dir(tmp_path)
    x, rate = clip(LINE)
    p = prepare.prepare(encode(x, rate, "wav"))
    v = s.save(
        "my-voice",
        p.wav_bytes(),
        "  Hello chat,\nthanks ",
        seconds=p.seconds,
        language="en",
        transcribed=True,
    )
    assert v.ref_text == "Hello chat, thanks" and v.clip.is_file()
    assert [w.id for w in s.list()] == ["my-voice"]
    import soundfile as sf

    data, r = sf.read(v.clip)
    assert r == 24000 and abs(len(data) / r - p.seconds) < 0.01
    cfg = (VoiceSettings(id="conf", ref_audio=Path("/x.wav"), ref_text="x"),)
    assert [m.id for m in store.merged(cfg, s)] == ["conf", "my-voice"]
    for vid, taken, code in [("my-voice", (), "exists"), ("conf", ("conf",), "exists"), ("Bad Id", (), "bad_id"),
                             ("a" * 33, (), "bad_id"), ("../x", (), "bad_id"), ("", (), "bad_id")]:  # fmt: skip
        with pytest.raises(VoiceError) as e:
            s.save(vid, p.wav_bytes(), "text", seconds=1.0, taken=taken)
        assert e.value.code == code
    with pytest.raises(VoiceError) as e:
        s.save("empty-text", p.wav_bytes(), "   ", seconds=1.0)
    assert e.value.code == "bad_text"
    assert _listing(s.root) == ["my-voice"]  # nothing partial from the refusals
    s.delete("my-voice")
    assert s.list() == [] and _listing(s.root) == []
    with pytest.raises(VoiceError) as e:
        s.delete("my-voice")
    assert e.value.code == "unknown_voice"


def test_store_leaves_nothing_when_the_disk_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = store.VoiceStore(tmp_path / "voices")
    real = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:  # the disk fails after the clip is written (ENOSPC)
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        s.save("v1", b"RIFF....", "some words", seconds=3.0)
    assert _listing(s.root) == [] and s.list() == []


def test_store_skips_broken_entries_and_cleans_leftovers(tmp_path: Path) -> None:
    s = store.VoiceStore(tmp_path)
    (tmp_path / ".tmp-x-1234").mkdir()
    (tmp_path / "half").mkdir()  # no voice.json: a crash of some other writer
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "voice.json").write_text('{"id": "other", "ref_text": "x"}')
    (tmp_path / "wrong" / "ref.wav").write_bytes(b"")
    assert s.list() == []
    assert s.clean(older_than_s=0) == 1
    assert not (tmp_path / ".tmp-x-1234").exists()
