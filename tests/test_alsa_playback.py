"""ALSA playback for real, through ALSA's file plugin: what the daemon plays lands in a file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import alsa_file_env, collect_until_terminal, portaudio_available, running_daemon, short_tmpdir

pytestmark = pytest.mark.skipif(
    not portaudio_available(), reason="PortAudio missing: run ./install.sh --dev (apt libportaudio2)"
)


def test_alsa_file_plugin_receives_exactly_the_samples_played() -> None:
    d = short_tmpdir()
    out = d / "played.raw"
    settings = {"audio": {"sinks": ["alsa", "pcm"], "idle_close_s": 30.0}}
    with running_daemon(settings, env=alsa_file_env(d, out), d=d) as daemon:
        ev = daemon.subscribe()
        s = daemon.dealer()
        texts = ["First line for the speaker.", "Second line, straight after."]
        for t in texts:
            s.send(json.dumps({"op": "say", "text": t}).encode())
        jobs = [collect_until_terminal(s), collect_until_terminal(s)]
        assert [e[-1]["event"] for e in jobs] == ["done", "done"], jobs
        ev.pump(0.3)
        published = np.concatenate([ev.audio(e[-1]["job"]) for e in jobs])
        # The stream stays open between jobs (gapless), so both jobs are in one file, in order;
        # stopping the daemon closes it, which plays out what the device still buffers.
        assert daemon.stop() == 0
        played = np.frombuffer(out.read_bytes(), dtype="<i2")
        assert len(played) >= len(published)
        # PortAudio may add silent pre-fill and tail padding; the payload must appear intact, in order.
        start = _find(played, published[:2000])
        assert start >= 0, "published audio not found in what ALSA played"
        assert np.array_equal(played[start : start + len(published)], published)
        assert not played[:start].any() and not played[start + len(published) :].any()


def _find(hay: np.ndarray, needle: np.ndarray) -> int:
    first = np.flatnonzero(hay == needle[0])
    for i in first:
        if np.array_equal(hay[i : i + len(needle)], needle):
            return int(i)
    return -1


def test_missing_audio_device_fails_the_job_but_pcm_keeps_working() -> None:
    settings = {"audio": {"sinks": ["alsa", "pcm"], "device": "no-such-device-xyz"}}
    with running_daemon(settings) as daemon:
        ev = daemon.subscribe()
        s = daemon.dealer()
        s.send(json.dumps({"op": "say", "text": "Nobody hears this locally."}).encode())
        evs = collect_until_terminal(s)
        assert evs[-1]["event"] == "error" and evs[-1]["code"] == "audio_error", evs
        ev.pump(0.3)
        assert len(ev.audio(evs[-1]["job"])) > 10000  # the PCM subscribers still got the speech
        assert daemon.request({"op": "ping"})["event"] == "pong"
