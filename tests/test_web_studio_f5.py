"""The voice studio with the F5 engine (a tiny random checkpoint on the CPU): a voice recorded through
Chromium's fake microphone, and one uploaded through the API, are used by F5 for the next job
without a restart. One daemon, one gateway and one browser for the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from asr import wer
from browser import chrome, login, needs_chromium, screenshot, wait
from f5tiny import f5_doc
from voicekit import encode, silence, speech, wav_file

from tests.support import Daemon, Events, collect_until_terminal, running_daemon
from tests.websupport import Gateway, running_gateway

pytestmark = needs_chromium

MIC_LINE = "Hello chat, this is my new voice. Thanks for watching the stream tonight."
API_LINE = "Welcome in everybody, grab a drink and enjoy the show."


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    doc = f5_doc(seed=42, warmup="first")
    with running_daemon({"engine": {"kind": "f5"}, "f5": doc["f5"], "voices": doc["voices"]}) as d:
        yield d


@pytest.fixture(scope="module")
def gw(daemon: Daemon) -> Iterator[Gateway]:
    with running_gateway(daemon) as g:
        yield g


@pytest.fixture(scope="module")
def events(daemon: Daemon) -> Events:
    ev = daemon.subscribe()
    return ev


@pytest.fixture(scope="module")
def driver(daemon: Daemon) -> Iterator[Any]:
    x, rate = speech(MIC_LINE)
    mic = daemon.dir / "mic.wav"  # what the fake microphone says (Chromium loops the file)
    wav_file(mic, np.concatenate([silence(0.3, rate), x, silence(3.0, rate)]), rate)
    d = chrome(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}"], size="1000,1300")  # fmt: skip
    try:
        yield d
    finally:
        d.quit()


def say(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ISHOWTTS_CONTROL": daemon.control}
    return subprocess.run([sys.executable, "-m", "ishowttsd.cli.say", *args], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip


def test_a_voice_recorded_in_the_browser_is_transcribed_saved_used_and_deleted(
    driver: Any, gw: Gateway, daemon: Daemon, events: Events
) -> None:
    from selenium.webdriver.common.by import By

    login(driver, gw.url + "/studio", gw.token)
    wait(
        lambda: driver.find_elements(By.CSS_SELECTOR, "#voices li[data-voice=tiny]"),
        20,
        "the voice list",
        driver,
    )
    assert not driver.find_element(By.ID, "needs-f5").is_displayed()  # F5 is here: no "needs weights" note
    driver.find_element(By.ID, "voice-id").send_keys("mic-voice")
    driver.find_element(By.ID, "record").click()
    wait(lambda: driver.find_element(By.ID, "stop-record").is_displayed(), 10, "recording", driver)
    time.sleep(6.0)  # the length of the take: the fake microphone's clip plays for this long
    driver.find_element(By.ID, "stop-record").click()
    text = driver.find_element(By.ID, "ref-text")
    wait(lambda: text.get_attribute("value"), 90, "Whisper's transcript", driver)
    heard = text.get_attribute("value")
    assert wer(MIC_LINE, heard) <= 0.2, heard
    assert "12 s" not in driver.find_element(By.ID, "take-info").text  # not cut: under 12 s
    driver.find_element(By.ID, "save").click()
    saved = driver.find_element(By.ID, "saved")
    wait(lambda: saved.is_displayed(), 120, "saved", driver)
    assert "ready to use" in saved.text, saved.text
    item = wait(
        lambda: driver.find_element(By.CSS_SELECTOR, "#voices li[data-voice=mic-voice]"), 20, "listed", driver
    )
    assert "studio" in item.text and "f5" in item.text and heard in item.text
    screenshot(driver, "web-studio.png")
    meta = json.loads((daemon.dir / "state" / "voices" / "mic-voice" / "voice.json").read_text())
    assert meta["transcribed"] is False and meta["ref_text"] == heard  # the page sent the (editable) text

    # the next `ishowtts-say --voice` uses it: F5 speaks it, no restart
    r = say(daemon, "--wait", "--voice", "mic-voice", "Testing the new voice.")
    assert r.returncode == 0, r.stderr
    started = events.wait_for(
        lambda e: e.get("event") == "started" and e.get("text") == "Testing the new voice."
    )
    assert started["voice"] == "mic-voice"
    events.wait_for(lambda e: e.get("event") == "done" and e.get("job") == started["job"])

    # deleted through the page: gone from the list, the disk and the engine
    btn = item.find_element(By.CSS_SELECTOR, "[data-act=delete]")
    btn.click()
    btn.click()
    wait(
        lambda: not driver.find_elements(By.CSS_SELECTOR, "#voices li[data-voice=mic-voice]"),
        60,
        "deleted",
        driver,
    )
    assert not (daemon.dir / "state" / "voices" / "mic-voice").exists()
    r = say(daemon, "--voice", "mic-voice", "Gone?")
    assert r.returncode != 0 and "unknown voice" in (r.stderr + r.stdout)


def _job_audio(
    events: Events, daemon: Daemon, text: str, voice: str | None
) -> tuple[np.ndarray, dict[str, Any]]:
    s = daemon.dealer()
    req: dict[str, Any] = {"op": "say", "text": text}
    if voice:
        req["voice"] = voice
    s.send(json.dumps(req).encode())
    out = collect_until_terminal(s, 120)
    assert out[-1]["event"] == "done", out
    started = next(e for e in out if e["event"] == "started")
    events.wait_for(lambda e: e.get("event") == "done" and e.get("job") == started["job"], 30)
    events.pump(0.3)
    return events.audio(started["job"]), started


def test_a_voice_uploaded_through_the_api_is_used_by_f5_for_the_next_job_without_a_restart(
    gw: Gateway, daemon: Daemon, events: Events
) -> None:
    pid = daemon.proc.pid if daemon.proc else None
    line = "Good to see you."
    before, st0 = _job_audio(events, daemon, line, None)
    assert st0.get("voice") in (None, "tiny")
    x, rate = speech(API_LINE)
    clip = encode(np.concatenate([silence(0.5, rate), x, silence(0.5, rate)]), rate, "m4a")
    r = httpx.post(gw.url + "/api/voices", headers=gw.auth, timeout=120,
                   data={"id": "api-voice", "ref_text": API_LINE, "language": "en"},
                   files={"file": ("take.m4a", clip, "audio/mp4")})  # fmt: skip
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["usable"] is True and "api-voice" in body["voices"] and body["transcribed"] is False
    assert 2.0 < body["seconds"] <= 12.0
    after, st1 = _job_audio(events, daemon, line, "api-voice")
    assert st1["voice"] == "api-voice"
    # the engine conditions on the new clip: same text, same seed, another reference -> other audio
    assert len(after) > 0 and (len(after) != len(before) or not np.array_equal(after, before))
    listed = {v["id"]: v for v in httpx.get(gw.url + "/api/voices", headers=gw.auth).json()["voices"]}
    assert listed["api-voice"]["usable"] and listed["api-voice"]["engine"] == "f5"
    assert listed["api-voice"]["ref_text"] == API_LINE
    # the default voice can be the new one; lines without a voice then use it
    r = httpx.put(gw.url + "/api/voices/default", headers=gw.auth, json={"voice": "api-voice"})
    assert r.status_code == 200 and r.json()["default"] == "api-voice"
    _, st2 = _job_audio(events, daemon, "Which voice now?", None)
    assert st2["voice"] == "api-voice"
    assert httpx.delete(gw.url + "/api/voices/api-voice", headers=gw.auth, timeout=120).status_code == 200
    _, st3 = _job_audio(events, daemon, "And now?", None)  # the deleted default falls back
    assert st3.get("voice") in (None, "tiny")
    assert (
        daemon.proc is not None and daemon.proc.pid == pid and daemon.proc.poll() is None
    )  # never restarted
