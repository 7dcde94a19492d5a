"""One loudness for every engine and voice: Piper and F5 (tiny, CPU) brought to the target, the limiter,
the keys, and the daemon's PCM at the target (``-s`` prints the measured figures)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from f5tiny import f5_doc
from support import running_daemon

from ishowttsd import config
from ishowttsd.confread import ConfigError
from ishowttsd.engine import create_engine
from ishowttsd.engine.base import AudioChunk, CancelToken, Engine
from ishowttsd.loudness import Leveller, LoudnessSettings, integrated_lufs, limit

LINES = (
    "hello chat, how is everyone doing tonight?",
    "that was an amazing play, clip it!",
    "thanks for the raid, welcome in everybody",
    "no way, he actually made that jump",
    "remember to hydrate and stretch, chat",
)


def engine(doc: dict[str, Any]) -> Engine:
    e, _ = create_engine(*config.engine_sections(config.parse(doc, None)))
    e.load(lambda _m: None)
    return e


def levelled(e: Engine, lv: Leveller) -> tuple[list[float], list[float], float]:
    """Each line's loudness before and after the leveller, and the loudest peak after (dBFS)."""
    voice = e.default_voice()
    raw, out = [], []
    peak = 0
    for i, line in enumerate(LINES):
        chunks = list(e.synthesize(line, voice, CancelToken()))
        rate = chunks[0].rate
        raw.append(integrated_lufs(np.concatenate([c.pcm for c in chunks]), rate))
        pcm = np.concatenate([c.pcm for c in lv.wrap(f"job{i}", voice, chunks)])
        out.append(integrated_lufs(pcm, rate))
        peak = max(peak, int(np.abs(pcm.astype(np.int32)).max()))
    return raw, out, 20 * np.log10(peak / 32768)


def test_piper_and_f5_tiny_speak_the_same_lines_at_the_target() -> None:
    target = -18.0
    results = {}
    for name, doc in (
        ("piper", {"engine": {"kind": "piper"}, "piper": {"deterministic": True}}),
        ("f5 tiny", {**f5_doc(), "engine": {"kind": "f5"}}),
    ):
        lv = Leveller(LoudnessSettings(target_lufs=target))
        results[name] = levelled(engine(doc), lv)
        raw, out, peak = results[name]
        print(f"\n{name}: before {[round(x, 2) for x in raw]} LUFS; after {[round(x, 2) for x in out]} LUFS; "
              f"peak {peak:.2f} dBFS")  # fmt: skip
        assert all(abs(x - target) <= 1.0 for x in out), (name, out)
        assert peak <= -1.0 + 0.01
    # It mattered: the engines are ~10 LU apart before, within 1 LU of each other after.
    assert abs(np.mean(results["piper"][0]) - np.mean(results["f5 tiny"][0])) > 5
    assert abs(np.mean(results["piper"][1]) - np.mean(results["f5 tiny"][1])) < 1


def test_gains_add_up_and_short_chunks_take_their_voices_level() -> None:
    rate = 24000
    t = np.arange(rate) / rate
    tone = (0.05 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)  # 1 s, about -29 LUFS
    lv = Leveller(LoudnessSettings(target_lufs=-20, master_gain_db=-3, voice_gain_db={"v": 2.0}))
    out = lv.apply("a", "v", AudioChunk(tone, rate))
    assert abs(integrated_lufs(out.pcm, rate) - (-20 - 3 + 2)) < 0.2
    before = lv.voice_lufs("v")
    assert before is not None and abs(before - integrated_lufs(tone, rate)) < 0.01
    short = lv.apply("a", "v", AudioChunk(tone[: rate // 5], rate))  # 0.2 s: too short to measure alone
    assert (
        abs(20 * np.log10(np.abs(short.pcm).max() / np.abs(tone[: rate // 5]).max()) - (-20 - 3 + 2 - before))
        < 0.1
    )
    lv.end("a")
    # A voice never measured, with nothing to change, is passed through untouched.
    plain = Leveller(LoudnessSettings(normalize=False))
    chunk = AudioChunk(tone[:100], rate)
    assert plain.apply("b", "w", chunk) is chunk


def test_limiter_holds_the_ceiling_across_chunks_without_clicks() -> None:
    rate = 24000
    rng = np.random.default_rng(0)
    loud = (rng.standard_normal(rate) * 0.6).astype(np.float32)  # peaks far over full scale
    ceiling = 10 ** (-1 / 20)
    a, g = limit(loud[: rate // 2], rate, ceiling)
    b, g2 = limit(loud[rate // 2 :], rate, ceiling, g)
    joined = np.concatenate([a, b])
    assert np.abs(joined).max() <= ceiling + 1e-6
    assert g < 1.0 and g2 < 1.0
    quiet = (np.sin(np.arange(rate) / 10) * 0.1).astype(np.float32)
    same, g3 = limit(quiet, rate, ceiling)
    assert g3 == 1.0 and np.array_equal(same, quiet)
    # After a loud chunk the gain recovers at the release rate instead of jumping back (a click).
    rec, _ = limit(quiet, rate, ceiling, start=0.5)
    env = np.abs(rec[:2400]) / np.maximum(np.abs(quiet[:2400]), 1e-6)
    assert env[10] < 0.6 and np.abs(rec).max() <= 0.1 + 1e-6


@pytest.mark.parametrize(
    ("audio", "key"),
    [
        ({"target_lufs": 3}, "audio.target_lufs"),
        ({"master_gain_db": "loud"}, "audio.master_gain_db"),
        ({"voice_gain_db": {"joe": 99}}, "audio.voice_gain_db.joe"),
        ({"voice_gain_db": 3}, "audio.voice_gain_db"),
        ({"peak_dbfs": 1}, "audio.peak_dbfs"),
        ({"normalize_loudness": "yes"}, "audio.normalize_loudness"),
    ],
)
def test_bad_values_name_the_key(audio: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.parse({"audio": audio}, None)


def test_the_daemon_publishes_levelled_speech_and_reports_it() -> None:
    with running_daemon({"audio": {"target_lufs": -23.0}}) as d:
        ev = d.subscribe()
        bot = d.bot()
        bot.send_multipart([b"chat", json.dumps({"text": LINES[0], "user": "v", "id": "m1"}).encode()])
        done = ev.wait_for(lambda e: e.get("event") == "done", 60)
        ev.pump(0.3)
        lufs = integrated_lufs(ev.audio(done["job"]), 22050)
        print(f"\ndaemon PCM: {lufs:.2f} LUFS (target -23)")
        assert abs(lufs - -23.0) <= 1.0
        status = d.request({"op": "status"})["loudness"]
        assert status["target_lufs"] == -23.0 and "joe" in status["voices"]
