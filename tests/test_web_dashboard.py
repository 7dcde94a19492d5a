"""The dashboard and the control API in a real headless Chromium, in front of the real gateway and
daemon (Piper, lines slowed so they can be watched), plus the studio's bad-input cases and the
voice preview. One daemon, one gateway and one browser for the module (CI cost)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from asr import transcribe, wer
from browser import chrome, login, needs_chromium, screenshot, wait
from voicekit import encode, silence, speech

from ishowttsd.web.studio import SAMPLE_LINE
from tests.support import Daemon, Events, running_daemon
from tests.websupport import Gateway, running_gateway

pytestmark = needs_chromium

HTML_LINE = "Look: <b>bold</b> <img src=x onerror=alert(1)> text"
LONG = "Sentence one keeps the speaker busy. Sentence two keeps going. Sentence three, and then four."


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    ov = {"debug": {"chunk_delay_s": 1.2}, "queue": {"max_per_user": 10}, "chat": {"approval": "first_time"}}
    with running_daemon(ov) as d:
        yield d


@pytest.fixture(scope="module")
def gw(daemon: Daemon) -> Iterator[Gateway]:
    with running_gateway(daemon) as g:
        yield g


@pytest.fixture(scope="module")
def events(daemon: Daemon) -> Events:
    ev = daemon.subscribe(b"event")
    return ev


@pytest.fixture(scope="module")
def driver(gw: Gateway) -> Iterator[Any]:
    d = chrome()
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture(scope="module")
def bot(daemon: Daemon) -> Any:
    b = daemon.bot()
    return b


def chat(bot: Any, text: str, user: str, mid: str, kind: str = "chat", **extra: Any) -> None:
    msg = {"text": text, "user": user, "id": mid, "kind": kind, **extra}
    bot.send_multipart([b"chat", json.dumps(msg).encode()])


def by(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def queue_users(driver: Any) -> list[str]:
    return [li.find_element("css selector", ".user").text for li in by(driver, "#queue li")]


def click_row(driver: Any, index: int, act: str) -> None:
    """Click a queue row's button (the list is re-rendered every second: retry a stale row)."""
    wait(lambda: by(driver, "#queue li")[index].find_element("css selector", f"[data-act={act}]").click() or True,
         10, f"a clickable {act} button", driver)  # fmt: skip


def api(
    gw: Gateway, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={**gw.auth, **(headers or {})}, timeout=120, **kw)


def idle(gw: Gateway) -> None:
    api(gw, "POST", "/api/control/stop")
    wait(lambda: api(gw, "GET", "/api/queue").json()["current"] is None, 30, "the daemon to be idle")


def store_listing(daemon: Daemon) -> list[str]:
    root = daemon.dir / "state" / "voices"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# -- the API ------------------------------------------------------------------------------------------


def test_api_needs_the_token_and_mirrors_the_daemon(gw: Gateway, daemon: Daemon) -> None:
    for method, path in [("GET", "/api/status"), ("GET", "/api/queue"), ("GET", "/api/history"),
                         ("POST", "/api/control/skip"), ("GET", "/api/voices"), ("POST", "/api/voices"),
                         ("DELETE", "/api/voices/x"), ("PUT", "/api/voices/default")]:  # fmt: skip
        for headers in ({}, {"Authorization": f"Bearer {gw.overlay_key}"}, {"Authorization": "Bearer nope"}):
            r = httpx.request(method, gw.url + path, headers=headers)
            assert r.status_code == 401, (method, path, r.text)
            assert gw.token not in r.text
    status = api(gw, "GET", "/api/status").json()
    assert status["event"] == "status" and status["engine"] == "piper" and status["ready"] is True
    # the same object as `ishowtts-say --status --json`
    out = subprocess.run([sys.executable, "-m", "ishowttsd.cli.say", "--status", "--json"], capture_output=True,
                         text=True, timeout=30, env={"ISHOWTTS_CONTROL": daemon.control, "PATH": "/usr/bin"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)) == set(status)
    assert api(gw, "GET", "/api/history", params={"limit": "abc"}).status_code == 400
    assert api(gw, "GET", "/api/history", params={"limit": "500"}).status_code == 400
    r = api(gw, "POST", "/api/control/explode")
    assert r.status_code == 404 and "skip" in r.json()["error"]["message"]
    assert api(gw, "GET", "/").status_code == 200 and api(gw, "GET", "/studio").status_code == 200


def test_login_refuses_a_wrong_token(driver: Any, gw: Gateway) -> None:
    from selenium.webdriver.common.by import By

    driver.get(gw.url + "/")
    wait(lambda: driver.find_element(By.ID, "token").is_displayed(), what="login form")
    driver.find_element(By.ID, "token").send_keys("wrong-token-123456")
    driver.find_element(By.ID, "login").click()
    wait(lambda: driver.find_element(By.ID, "login-error").is_displayed(), what="the login error")
    assert not driver.find_element(By.ID, "app").is_displayed()
    login(driver, gw.url + "/", gw.token)


# -- the dashboard -------------------------------------------------------------------------------------


def test_queue_ban_skip_clear_and_history_in_the_page(
    driver: Any, gw: Gateway, daemon: Daemon, events: Events, bot: Any
) -> None:
    from selenium.webdriver.common.by import By

    login(driver, gw.url + "/", gw.token)
    chat(bot, LONG, "alice", "a1")
    wait(lambda: driver.find_element(By.ID, "now-user").text == "alice", 20, "alice speaking", driver)
    # progress follows what has been heard (the paced PCM feed)
    bar = driver.find_element(By.ID, "now-progress")
    wait(lambda: float(bar.value_of_css_property("width").rstrip("px") or 0) > 5, 20, "progress", driver)
    chat(bot, "First line from bob.", "bob", "b1")
    chat(bot, "Second line from bob.", "bob", "b2")
    chat(bot, "Carol says hi, see you at the raid.", "carol", "c1")
    chat(bot, "A line from dave.", "dave", "d1")
    chat(bot, "A line from dave.", "dave", "d2")  # duplicate: dropped with a reason
    # chat loses its markup in the daemon's filters; a script's line keeps it, and the page must show it
    # as text (the same code path renders every line)
    wait(lambda: queue_users(driver) == ["bob", "bob", "carol", "dave"], 15, "the chat lines queued", driver)
    s = daemon.dealer()
    s.send(json.dumps({"op": "say", "text": HTML_LINE, "priority": "text", "id": "html1"}).encode())
    # a queued line appears in the queue view, with who sent it and how long it has waited
    wait(
        lambda: queue_users(driver) == ["bob", "bob", "carol", "dave", "control"],
        15,
        "the queue view",
        driver,
    )

    def html_row_is_text() -> bool:
        row = by(driver, "#queue li")[4]
        assert HTML_LINE in row.text  # text, never HTML
        assert not row.find_elements(By.TAG_NAME, "img") and not row.find_elements(By.TAG_NAME, "b")
        return "waiting" in row.find_element(By.CSS_SELECTOR, ".wait").text

    wait(html_row_is_text, 10, "the script's row", driver)
    wait(lambda: [b.text for b in by(driver, "#queue li .prio")] == ["chat"] * 5, 5, "chat badges", driver)
    assert not by(driver, "#queue img") and not by(driver, "#queue b")
    screenshot(driver, "web-dashboard.png")

    # ban removes that user's queued lines
    click_row(driver, 0, "ban")
    mod = events.wait_for(lambda e: e.get("event") == "moderation" and e.get("action") == "ban")
    assert mod["user"] == "bob" and len(mod["jobs"]) == 2
    wait(lambda: queue_users(driver) == ["carol", "dave", "control"], 10, "bob's lines gone", driver)

    # remove one line
    click_row(driver, 2, "remove")
    events.wait_for(lambda e: e.get("event") == "cancelled" and e.get("job") == "html1")
    wait(lambda: queue_users(driver) == ["carol", "dave"], 10, "the script's line gone", driver)

    # skip stops the line being spoken: the daemon's cancelled event follows, the next line starts
    alice_job = driver.find_element(By.ID, "now-line").get_attribute("data-job")
    driver.find_element(By.CSS_SELECTOR, "[data-control=skip]").click()
    cancelled = events.wait_for(lambda e: e.get("event") == "cancelled" and e.get("job") == alice_job)
    assert cancelled["reason"] == "stopped"
    wait(lambda: driver.find_element(By.ID, "now-user").text == "carol", 20, "carol speaking", driver)

    # clear empties the queue (carol goes on speaking)
    for i in range(3):
        chat(bot, f"Queued line {i} for the clear test.", f"eve{i}", f"e{i}")
    wait(lambda: len(queue_users(driver)) == 4, 10, "four queued", driver)
    driver.find_element(By.CSS_SELECTOR, "[data-control=clear]").click()
    wait(lambda: queue_users(driver) == [] and driver.find_element(By.ID, "queue-empty").is_displayed(), 10,
         "an empty queue", driver)  # fmt: skip
    events.wait_for(lambda e: e.get("event") == "cancelled" and e.get("reason") == "cleared")
    assert driver.find_element(By.ID, "now-user").text == "carol"
    events.wait_for(lambda e: e.get("event") == "done" and e.get("msg_id") == "c1", 60)

    # history: spoken, dropped with why, cancelled with why
    def rows() -> list[tuple[str, str]]:
        return [
            (li.find_element(By.CSS_SELECTOR, ".line-text").text, li.text) for li in by(driver, "#history li")
        ]

    def has(text: str, *words: str) -> bool:
        return any(t == text and all(w in row for w in words) for t, row in rows())

    wait(lambda: has("Carol says hi, see you at the raid.", "spoken"), 20, "carol's line spoken", driver)
    for text, *words in [("A line from dave.", "dropped", "duplicate"), ("A line from dave.", "cancelled", "cleared"),
                         (LONG, "cancelled", "stopped"), ("First line from bob.", "cancelled", "banned"),
                         (HTML_LINE, "cancelled"), ("Queued line 0 for the clear test.", "cancelled", "cleared")]:  # fmt: skip
        wait(lambda t=text, w=words: has(t, *w), 5, f"{text!r} {words} in the history", driver)
    assert not by(driver, "#history img") and not by(driver, "#history b")
    # health: engine, warm state, the RTF chart has a bar for the spoken line
    health = driver.find_element(By.ID, "health").text
    assert "piper" in health and "warm" in health and "watchdog" in health
    wait(lambda: by(driver, "#rtf rect"), 10, "an RTF bar", driver)
    screenshot(driver, "web-dashboard-history.png")
    driver.set_window_size(412, 915)  # a phone: one column, buttons under each line
    wait(lambda: driver.execute_script("return window.innerWidth") <= 412, 5, "a phone-sized window", driver)
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 412
    screenshot(driver, "web-dashboard-phone.png")
    driver.set_window_size(1200, 1400)


def test_held_lines_are_approved_or_rejected_in_the_page(
    driver: Any, gw: Gateway, bot: Any, events: Events
) -> None:
    from selenium.webdriver.common.by import By

    idle(gw)
    login(driver, gw.url + "/", gw.token)
    chat(bot, "Hi everyone, first time here!", "newbie1", "n1", first_msg=True)
    chat(bot, "Buy followers at my site now.", "newbie2", "n2", first_msg=True)
    events.wait_for(lambda e: e.get("event") == "held" and e.get("msg_id") == "n2")
    card = driver.find_element(By.ID, "held-card")
    wait(lambda: card.is_displayed() and len(by(driver, "#held li")) == 2, 10, "two held lines", driver)
    assert api(gw, "GET", "/api/held").json()["lines"][0]["user"] == "newbie1"

    def click_held(user: str, act: str) -> bool:
        row = next(
            li for li in by(driver, "#held li") if li.find_element(By.CSS_SELECTOR, ".user").text == user
        )
        row.find_element(By.CSS_SELECTOR, f"[data-act={act}]").click()
        return True

    wait(lambda: click_held("newbie1", "approve"), 10, "approve", driver)
    events.wait_for(lambda e: e.get("event") == "queued" and e.get("msg_id") == "n1")
    wait(lambda: click_held("newbie2", "reject"), 10, "reject", driver)
    rejected = events.wait_for(lambda e: e.get("event") == "dropped" and e.get("msg_id") == "n2")
    assert rejected["reason"] == "rejected"
    wait(lambda: not card.is_displayed(), 10, "no held lines", driver)
    events.wait_for(lambda e: e.get("event") == "done" and e.get("msg_id") == "n1", 60)
    r = api(gw, "POST", "/api/held/nothing-here/approve")
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_found"


def test_pause_and_resume_buttons(driver: Any, gw: Gateway) -> None:
    from selenium.webdriver.common.by import By

    login(driver, gw.url + "/", gw.token)
    driver.find_element(By.ID, "pause").click()
    wait(lambda: driver.find_element(By.ID, "paused-badge").is_displayed(), 10, "paused", driver)
    assert api(gw, "GET", "/api/status").json()["paused"] is True
    driver.find_element(By.ID, "resume").click()
    wait(lambda: not driver.find_element(By.ID, "paused-badge").is_displayed(), 10, "resumed", driver)
    assert api(gw, "GET", "/api/status").json()["paused"] is False


def test_control_api_for_hotkeys(gw: Gateway, bot: Any, events: Events) -> None:
    idle(gw)
    chat(bot, "Frank talks for a while. And then some more. And more still.", "frank", "f1")
    chat(bot, "Waiting behind frank.", "gina", "g1")
    wait(lambda: api(gw, "GET", "/api/queue").json()["current"] is not None, 20, "frank speaking")
    q = api(gw, "GET", "/api/queue").json()
    assert q["current"]["user"] == "frank" and [j["user"] for j in q["jobs"]] == ["gina"]
    r = api(gw, "POST", "/api/control/stop")  # stop: the line and the queue
    assert r.status_code == 200 and len(r.json()["jobs"]) == 2
    events.wait_for(lambda e: e.get("event") == "cancelled" and e.get("msg_id") == "g1")
    r = api(gw, "POST", "/api/moderate/timeout", json={"user": "frank", "duration_s": 0})
    assert r.status_code == 400 and "duration_s" in r.json()["error"]["message"]
    assert (
        api(gw, "POST", "/api/moderate/timeout", json={"user": "frank", "duration_s": 30}).status_code == 200
    )
    h = api(gw, "GET", "/api/history", params={"limit": 5}).json()["lines"]
    assert h[0]["outcome"] == "cancelled" and {x["user"] for x in h[:2]} == {"frank", "gina"}


# -- the studio: preview, and bad input ---------------------------------------------------------------


def test_preview_speaks_to_the_caller_only(gw: Gateway, events: Events) -> None:
    idle(gw)
    seen = len(events.events)
    r = api(gw, "POST", "/api/voices/joe/preview")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    pcm, rate = sf.read(io.BytesIO(r.content), dtype="int16")
    assert len(pcm) / rate > 2.0
    assert wer(SAMPLE_LINE, transcribe(pcm, rate)) <= 0.15
    events.pump(0.5)
    assert not [e for e in events.events[seen:] if e.get("event") in ("started", "done")]  # never played
    r = api(gw, "POST", "/api/voices/joe/preview", json={"text": "Short and sweet."})
    pcm, rate = sf.read(io.BytesIO(r.content), dtype="int16")
    assert wer("Short and sweet.", transcribe(pcm, rate)) <= 0.34
    assert api(gw, "POST", "/api/voices/nobody/preview").status_code == 400
    assert api(gw, "POST", "/api/voices/joe/preview", json={"text": "x" * 1000}).status_code == 400


def _upload(
    gw: Gateway, data: bytes, vid: str = "newvoice", name: str = "clip.wav", **fields: str
) -> httpx.Response:
    return api(
        gw, "POST", "/api/voices", data={"id": vid, **fields}, files={"file": (name, data, "audio/wav")}
    )


def test_bad_uploads_get_a_400_a_person_understands_and_leave_nothing(
    gw: Gateway, daemon: Daemon, bot: Any, events: Events
) -> None:
    line, rate = speech("Hello chat, this is a clean recording of my voice for the studio.")
    good = encode(np.concatenate([silence(0.5, rate), line, silence(0.5, rate)]), rate, "wav")
    cases = [
        (b"GIF89a not audio at all" * 100, {}, "not_audio", "not audio"),
        (encode(silence(5.0), 22050, "ogg"), {}, "silent", "silent"),
        (encode(np.concatenate([silence(1.0), speech("Hi.")[0], silence(1.0)]), 22050, "mp3"), {}, "too_short",
         "at least 2 s"),
        (b"\0" * (17 << 20), {}, "too_large", "limit is 16 MiB"),
        (good, {"id": "Bad Name!"}, "bad_id", "lower-case"),
        (good, {"id": "joe"}, "exists", "already exists"),
        (good, {"id": "x" * 33}, "bad_id", "1 to 32"),
        (good, {"language": "not a language!"}, "bad_text", "language"),
    ]  # fmt: skip
    chat(bot, "Henry is still being read out. Line after line.", "henry", "h1")  # speaking through it all
    for data, fields, code, words in cases:
        r = _upload(gw, data, **fields)
        assert r.status_code == 400, (code, r.status_code, r.text[:300])
        err = r.json()["error"]
        assert err["code"] == code and words in err["message"], err
        assert "Traceback" not in err["message"] and len(err["message"]) < 300
        assert store_listing(daemon) == [], store_listing(daemon)
    r = api(gw, "POST", "/api/voices", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]
    r = api(gw, "POST", "/api/voices", data={"id": "nofile"})
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]
    r = _upload(gw, b"\0" * (40 << 20))  # beyond twice the limit: refused before it is read
    assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]
    assert events.wait_for(lambda e: e.get("msg_id") == "h1" and e.get("event") == "done", 60)
    assert store_listing(daemon) == []


def test_studio_page_with_piper_prepares_a_voice_and_says_cloning_needs_f5(
    driver: Any, gw: Gateway, daemon: Daemon, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    login(driver, gw.url + "/studio", gw.token)
    note = wait(lambda: driver.find_element(By.ID, "needs-f5"), what="the F5 note")
    wait(lambda: note.is_displayed() and "F5" in note.text, 10, "the F5 note shown", driver)
    # a bad file through the page: its message, nothing on disk
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"these are my notes, not a recording" * 50)
    driver.find_element(By.ID, "file").send_keys(str(bad))
    err = driver.find_element(By.ID, "error")
    wait(lambda: err.is_displayed() and "not audio" in err.text, 30, "the not-audio message", driver)
    assert store_listing(daemon) == []
    quiet = tmp_path / "quiet.ogg"
    quiet.write_bytes(encode(silence(4.0), 22050, "ogg"))
    driver.find_element(By.ID, "file").send_keys(str(quiet))
    wait(lambda: err.is_displayed() and "silent" in err.text, 30, "the silent message", driver)
    # a name that is taken: the save is refused with its message
    x, rate = speech("Hello chat, I am trying to steal the built in voice name.")
    taken = tmp_path / "taken.webm"
    taken.write_bytes(encode(np.concatenate([silence(0.4, rate), x, silence(0.6, rate)]), rate, "webm"))
    driver.find_element(By.ID, "voice-id").send_keys("joe")
    driver.find_element(By.ID, "file").send_keys(str(taken))
    wait(lambda: driver.find_element(By.ID, "ref-text").get_attribute("value"), 60, "the transcript", driver)
    driver.find_element(By.ID, "save").click()
    wait(lambda: err.is_displayed() and "already exists" in err.text, 30, "the name-taken message", driver)
    assert store_listing(daemon) == []
    driver.find_element(By.ID, "voice-id").clear()
    # a good one is prepared and saved, waiting for F5
    x, rate = speech("Hello chat, I am preparing a voice for when the weights arrive.")
    good = tmp_path / "take.m4a"
    good.write_bytes(encode(np.concatenate([silence(0.4, rate), x, silence(0.6, rate)]), rate, "m4a"))
    driver.find_element(By.ID, "voice-id").send_keys("later")
    driver.find_element(By.ID, "file").send_keys(str(good))
    text = driver.find_element(By.ID, "ref-text")
    wait(lambda: text.get_attribute("value"), 60, "the transcript", driver)
    assert (
        wer("Hello chat, I am preparing a voice for when the weights arrive.", text.get_attribute("value"))
        <= 0.2
    )
    driver.find_element(By.ID, "save").click()
    saved = driver.find_element(By.ID, "saved")
    wait(lambda: saved.is_displayed(), 60, "saved", driver)
    assert "F5 weights" in saved.text
    item = wait(
        lambda: driver.find_element(By.CSS_SELECTOR, "#voices li[data-voice=later]"), 10, "listed", driver
    )
    assert "waiting for the F5 weights" in item.text
    assert store_listing(daemon) == ["later"]
    listed = {v["id"]: v for v in api(gw, "GET", "/api/voices").json()["voices"]}
    assert listed["later"]["usable"] is False and listed["later"]["clip_s"] > 2
    r = api(gw, "POST", "/api/voices/later/preview")
    assert r.status_code == 400 and "F5" in r.json()["error"]["message"]
    # delete (two clicks)
    btn = item.find_element(By.CSS_SELECTOR, "[data-act=delete]")
    btn.click()
    btn.click()
    wait(lambda: not by(driver, "#voices li[data-voice=later]"), 20, "deleted", driver)
    assert store_listing(daemon) == []
