"""The paced PCM PUB (``[audio] pace``): with no sound card the PUB is the speaker, so audio leaves
in real time, ``done`` means heard, and a skip or a delete acts on what has not been heard yet."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import Daemon, Events, running_daemon

LEAD_S = 0.2
LINE = "This line is long enough to take a few seconds to speak, so we can watch it pace."


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon({"audio": {"sinks": ["pcm"], "pace": "auto", "pace_lead_s": LEAD_S}}) as d:
        yield d


class Timed(Events):
    """Events with the arrival time of each PCM frame."""

    arrivals: dict[str, list[tuple[float, dict[str, Any], int]]]

    def pump(self, timeout_s: float = 0.05) -> None:
        import zmq

        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if not self.sock.poll(max(0, int(left * 1000))):
                return
            while True:
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                now = time.monotonic()
                if frames[0] == b"event":
                    ev = json.loads(frames[1])
                    ev["_t"] = now
                    self.events.append(ev)
                else:
                    hdr = json.loads(frames[1])
                    self.arrivals.setdefault(hdr["job"], []).append((now, hdr, len(frames[2]) // 2))


def timed(d: Daemon) -> Timed:
    ev = d.subscribe()
    t = Timed(ev.sock)
    t.arrivals = {}
    return t


def audio_of(ev: Timed, job: str, timeout_s: float = 30.0) -> None:
    """Wait for the job's first audio frame (synthesis may be slow on a busy machine)."""
    deadline = time.monotonic() + timeout_s
    while job not in ev.arrivals:
        assert time.monotonic() < deadline, f"no audio for {job}"
        ev.pump(0.05)


def say(d: Daemon, text: str, **extra: Any) -> str:
    r = d.request({"op": "say", "text": text, **extra})
    assert r["event"] == "queued", r
    return str(r["job"])


def test_audio_leaves_in_real_time_and_done_means_heard(daemon: Daemon) -> None:
    ev = timed(daemon)
    job = say(daemon, LINE)
    done = ev.wait_for(lambda e: e.get("job") == job and e["event"] == "done", 60)
    frames = ev.arrivals[job]
    assert frames[-1][1]["final"] and not frames[-1][1].get("cancelled")
    rate = frames[0][1]["rate"]
    t0 = frames[0][0]
    sent = 0
    for t, _hdr, n in frames[:-1]:
        # a frame leaves no earlier than the lead before the moment it is heard
        assert t - t0 >= sent / rate - LEAD_S - 0.06, (t - t0, sent / rate)
        sent += n
    audio_s = sent / rate
    assert audio_s == pytest.approx(done["audio_s"], abs=0.01)
    assert audio_s > 3.0
    # done arrives when the last sample has been heard, not when it was made
    assert done["_t"] - t0 == pytest.approx(audio_s, abs=0.25)


def test_delete_while_queued_never_sounds_and_skip_cuts_at_once(daemon: Daemon) -> None:
    ev = timed(daemon)
    bot = daemon.bot()
    bot.send_multipart([b"chat", json.dumps({"text": LINE, "user": "first", "id": "m-1"}).encode()])
    bot.send_multipart(
        [b"chat", json.dumps({"text": "I must never be heard.", "user": "x", "id": "m-2"}).encode()]
    )
    first = ev.wait_for(lambda e: e["event"] == "started" and e.get("msg_id") == "m-1", 30)["job"]
    second = ev.wait_for(lambda e: e["event"] == "queued" and e.get("msg_id") == "m-2", 30)["job"]
    audio_of(ev, first)
    ev.pump(1.0)  # the first line's audio was made long ago; it is still being heard
    assert second not in ev.arrivals
    bot.send_multipart([b"delete", json.dumps({"id": "m-2"}).encode()])
    ev.wait_for(lambda e: e.get("job") == second and e["event"] in ("cancelled", "dropped"), 10)
    # skip the speaking line mid-way: its final frame, marked cancelled, leaves at once
    t_stop = time.monotonic()
    assert daemon.request({"op": "stop"})["event"] == "ok"
    while not any(h["final"] for _, h, _ in ev.arrivals[first]):
        ev.pump(0.01)
        assert time.monotonic() - t_stop < 2
    t_final, hdr, _ = next(f for f in ev.arrivals[first] if f[1]["final"])
    assert hdr["cancelled"] is True
    assert t_final - t_stop < 0.1
    ev.wait_for(lambda e: e.get("job") == first and e["event"] == "cancelled", 10)
    ev.pump(0.5)
    assert second not in ev.arrivals
    assert all(t <= t_final for t, _, _ in ev.arrivals[first])


def test_nothing_leaves_while_paused(daemon: Daemon) -> None:
    ev = timed(daemon)
    job = say(daemon, LINE)
    audio_of(ev, job)
    ev.pump(0.5)
    assert daemon.request({"op": "pause"})["event"] == "ok"
    t_pause = time.monotonic()
    ev.pump(1.2)
    ev.pump(0.01)
    late = [t for t, _, _ in ev.arrivals[job] if t > t_pause + 0.05]
    assert late == []
    assert daemon.request({"op": "resume"})["event"] == "ok"
    done = ev.wait_for(lambda e: e.get("job") == job and e["event"] == "done", 60)
    assert done["_t"] - t_pause > 1.2 + done["audio_s"] - 1.0 - 0.3
