"""The real daemon with ``[engine] kind = "f5"`` on a tiny random checkpoint, over real sockets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from f5tiny import f5_doc
from support import collect_until_terminal, running_daemon, short_tmpdir
from waits import wait_until

from ishowttsd import config
from ishowttsd.engine.base import CancelToken

LINES = [
    "Hello chat, thanks for the follow!",
    "Welcome in, everybody. Today we are trying a brand new game, so bear with me while I learn it.",
]


def overrides(**f5: Any) -> dict[str, Any]:
    doc = f5_doc(seed=42, warmup="first", **f5)
    second = dict(doc["voices"][0], id="tiny2", ref_text="Another voice made from the same sound.")
    # The engine's own samples, bit for bit: no loudness stage (tests/test_loudness.py covers it).
    return {
        "engine": {"kind": "f5"},
        "f5": doc["f5"],
        "voices": [*doc["voices"], second],
        "audio": {"normalize_loudness": False},
    }


def reference_audio(ov: dict[str, Any], text: str, voice: str | None = None) -> tuple[np.ndarray, list[int]]:
    """The same line through the engine in this process: the daemon must send exactly this."""
    from ishowttsd.engine.f5.engine import F5Engine

    e = F5Engine(*config.f5_sections(config.parse({"f5": ov["f5"], "voices": ov["voices"]}, None)))
    e.load(lambda _m: None)
    chunks = list(e.synthesize(text, voice, CancelToken()))
    return np.concatenate([c.pcm for c in chunks]), [len(c.pcm) for c in chunks]


def test_f5_daemon_speaks_chat_lines_in_order_with_smooth_seams() -> None:
    ov = overrides()
    with running_daemon(ov) as d:
        assert "f5" in d.log_text()
        voices = d.request({"op": "voices"})["voices"]
        assert [v["id"] for v in voices] == ["tiny", "tiny2"]
        ev = d.subscribe()
        bot = d.bot()
        for i, text in enumerate(LINES):
            bot.send_multipart([b"chat", json.dumps({"text": text, "user": f"v{i}", "id": f"m{i}"}).encode()])
        for text in LINES:
            started = ev.wait_for(lambda e, t=text: e.get("event") == "started" and e.get("text") == t, 90)
            done = ev.wait_for(lambda e, j=started["job"]: e.get("event") == "done" and e["job"] == j, 90)
            ev.pump(0.3)
            hdrs = [h for h, _ in sorted(ev.pcm[done["job"]], key=lambda hf: hf[0]["seq"])]
            assert [h["seq"] for h in hdrs] == list(range(len(hdrs)))
            assert {h["rate"] for h in hdrs[:-1]} == {24000} and hdrs[-1]["final"]
            got = ev.audio(done["job"])
            want, sizes = reference_audio(ov, started["text"])
            assert np.array_equal(got, want)  # every chunk, in order, joined exactly as the engine joins
            assert abs(len(got) / 24000 - done["audio_s"]) < 0.01
            # seams: no gap (no digital silence) and no click (jump within the signal's own range)
            jumps = np.abs(np.diff(got.astype(np.int32)))
            bound = np.percentile(jumps, 99.9)
            for edge in np.cumsum(sizes)[:-1]:
                assert jumps[edge - 2 : edge + 2].max() <= bound
                assert np.abs(got[edge - 240 : edge + 240]).max() > 0
        assert len(LINES[1]) > 40  # the long line went out in more than one chunk


def test_f5_per_request_voice_and_stop_within_one_chunk() -> None:
    ov = overrides()
    ov["debug"] = {"chunk_delay_s": 0.5}  # a slow "GPU" so the stop lands mid-line
    text = " ".join(f"Sentence number {i} is here to make this a long line." for i in range(20))
    with running_daemon(ov) as d:
        ev = d.subscribe()
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": text, "voice": "tiny2", "id": "long"}).encode())
        started = ev.wait_for(lambda e: e.get("event") == "started" and e.get("job") == "long", 60)
        assert started["voice"] == "tiny2"
        deadline = time.monotonic() + 60
        while not ev.pcm.get("long") and time.monotonic() < deadline:
            ev.pump(0.05)
        assert ev.pcm.get("long"), "no audio before the deadline"
        assert d.request({"op": "stop", "id": "long"})["jobs"] == ["long"]
        fin = ev.wait_for(lambda e: e.get("job") == "long" and e.get("event") in ("cancelled", "done"), 30)
        assert fin["event"] == "cancelled"
        ev.pump(0.3)
        _, sizes = reference_audio(ov, text, "tiny2")
        assert len(sizes) >= 5
        got = len(ev.audio("long"))
        assert got <= sizes[0] + sizes[1]  # at most one more chunk after the stop
        # the queue goes on: the next job speaks
        s2 = d.dealer()
        s2.send(json.dumps({"op": "say", "text": "Next one.", "id": "next"}).encode())
        evs = collect_until_terminal(s2, 60)
        assert evs[-1]["event"] == "done" and evs[-1]["job"] == "next"


def test_missing_checkpoint_fails_startup_with_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.safetensors"
    ov = overrides(checkpoint=str(missing))
    d0 = short_tmpdir()
    with running_daemon(ov, ready=False, d=d0) as d:
        assert d.proc is not None
        rc = d.proc.wait(120)
        log = d.log_text()
    assert rc != 0
    assert str(missing) in log and "ishowtts-models fetch" in log


def test_sighup_adds_a_voice_without_reloading_the_model() -> None:
    import signal

    import tomlkit

    ov = overrides()
    with running_daemon(ov) as d:
        assert [v["id"] for v in d.request({"op": "voices"})["voices"]] == ["tiny", "tiny2"]
        loads = d.log_text().count("f5 model loaded")
        new = dict(d.settings)
        new["voices"] = [*ov["voices"], dict(ov["voices"][0], id="tiny3", ref_text="A third one.")]
        d.config.write_text(tomlkit.dumps(new))
        d.signal(signal.SIGHUP)

        def voices_with_tiny3() -> list[str] | None:
            ids = [v["id"] for v in d.request({"op": "voices"})["voices"]]
            return ids if "tiny3" in ids else None

        assert wait_until(voices_with_tiny3, 30, "the voice added by SIGHUP", poll_s=0.2) == [
            "tiny",
            "tiny2",
            "tiny3",
        ]
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": "New voice here.", "voice": "tiny3"}).encode())
        assert collect_until_terminal(s, 60)[-1]["event"] == "done"
        assert d.log_text().count("f5 model loaded") == loads  # the model stayed loaded
