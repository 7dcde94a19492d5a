"""The real daemon batching concurrent jobs (tiny F5 model, ``[f5.fast] on_cpu``): jobs waiting
together are synthesised together, yet each is spoken in priority/FIFO order with the audio it
has alone; stop, cancel and moderation reach a batch's jobs that are not speaking yet."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from f5tiny import f5_doc
from support import Daemon, Events, running_daemon

from ishowttsd import config
from ishowttsd.engine.base import CancelToken

TOL = 2
"""int16 steps between a job's audio from a batch and alone (fp32 on the CPU): measured at most 1."""


def sentences(n: int) -> str:
    """``n`` chunks of ~50 characters (with ``max_total_s`` below)."""
    return " ".join(f"Sentence number {i} is here to make this a long line." for i in range(n))


def overrides() -> dict[str, Any]:
    doc = f5_doc(seed=42, warmup="first", max_total_s=7.0, max_ref_s=4.0)  # short chunks: cheap on a CPU
    doc["f5"]["fast"] = {"on_cpu": True, "compile": False, "cuda_graph": False}
    second = dict(doc["voices"][0], id="tiny2", ref_text="Another voice made from the same sound.")
    return {
        "engine": {"kind": "f5"},
        "f5": doc["f5"],
        "voices": [*doc["voices"], second],
        "chat": {"announce": "{user} says: {text}"},  # a turn hook that rewrites the text
        "audio": {"normalize_loudness": False},  # compared with the engine's own samples
    }


@pytest.fixture(scope="module")
def daemon() -> Iterator[tuple[Daemon, dict[str, Any]]]:
    """One daemon for both tests (an F5 daemon takes ~9 s to start on the CI's 2 cores)."""
    ov = overrides()
    with running_daemon(ov) as d:
        yield d, ov


def alone(ov: dict[str, Any], jobs: list[tuple[str, str | None]]) -> list[np.ndarray]:
    """Each (text, voice) through the same engine in this process, one at a time."""
    from ishowttsd.engine.f5.engine import F5Engine

    e = F5Engine(*config.f5_sections(config.parse({"f5": ov["f5"], "voices": ov["voices"]}, None)))
    e.load(lambda _m: None)
    return [np.concatenate([c.pcm for c in e.synthesize(t, v, CancelToken())]) for t, v in jobs]


def steps(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def connected_bot(d: Daemon, ev: Events, name: str) -> zmq.Socket[Any]:
    """A bot PUB whose subscription has arrived (PUB drops what it sends before that)."""
    bot = d.bot()
    for i in range(30):
        mid = f"probe-{name}-{i}"
        bot.send_multipart(
            [b"chat", json.dumps({"text": f"probe {name} {i}", "user": name, "id": mid}).encode()]
        )
        try:
            ev.wait_for(lambda e, mid=mid: e.get("msg_id") == mid and e["event"] == "queued", 0.5)
        except AssertionError:
            continue
        # spoken before the test's own jobs, so that it is not one of their batch
        ev.wait_for(lambda e, mid=mid: e.get("msg_id") == mid and e["event"] == "done", 60)
        return bot
    raise AssertionError("the bot never got through")


def say(d: Daemon, job: str, text: str, **args: Any) -> None:
    reply = d.request({"op": "say", "text": text, "id": job, **args})
    assert reply["event"] == "queued", reply


def outcome(ev: Events, job: str) -> dict[str, Any]:
    return ev.wait_for(
        lambda e: e.get("job") == job and e["event"] in ("done", "cancelled", "error", "dropped"), 60
    )


def test_waiting_jobs_are_batched_and_each_speaks_as_alone_in_priority_order(
    daemon: tuple[Daemon, dict[str, Any]],
) -> None:
    d, ov = daemon
    ev = d.subscribe()
    bot = connected_bot(d, ev, "bot1")
    assert d.request({"op": "pause"})["event"] == "ok"
    say(d, "a", "Hello chat, thanks for the follow!")
    bot.send_multipart(
        [b"chat", json.dumps({"text": "what game is this?", "user": "ann", "id": "m1"}).encode()]
    )
    queued = ev.wait_for(lambda e: e.get("msg_id") == "m1" and e["event"] == "queued")
    assert queued["priority"] == "text"
    say(d, "b", "Big thanks for the raid!", priority="important")
    say(d, "c", sentences(5), voice="tiny2")  # message, after a: FIFO; five chunks, another voice
    assert d.request({"op": "resume"})["event"] == "ok"
    m1 = queued["job"]
    order = ["b", "a", "c", m1]
    done = {j: outcome(ev, j) for j in order}
    ev.pump(0.3)
    assert all(done[j]["event"] == "done" for j in order), done
    finished = [e["job"] for e in ev.events if e["event"] == "done" and e["job"] in order]
    assert finished == order  # important, then message FIFO, then chat
    assert all(done[j]["batch"] == 4 for j in order)
    st = d.request({"op": "status"})
    assert st["batching"]["batches"] >= 1 and st["batching"]["largest"] >= 4, st["batching"]
    started = {e["job"]: e for e in ev.events if e["event"] == "started"}
    assert started[m1]["text"] == "ann says: what game is this?"  # the turn hook ran before synthesis
    voices = {"c": "tiny2"}
    want = alone(ov, [(started[j]["text"], voices.get(j)) for j in order])
    for j, w in zip(order, want, strict=True):
        assert steps(ev.audio(j), w) <= TOL, j
        assert abs(len(w) / 24000 - done[j]["audio_s"]) < 0.01


def test_stop_cancel_and_moderation_reach_a_batchs_waiting_jobs(
    daemon: tuple[Daemon, dict[str, Any]],
) -> None:
    d, ov = daemon
    ev = d.subscribe()
    bot = connected_bot(d, ev, "bot2")
    before = d.request({"op": "status"})["jobs"]
    d.request({"op": "pause"})
    say(d, "A", sentences(8))
    say(d, "B", "This one is cancelled by its client.", priority="text")
    bot.send_multipart(
        [b"chat", json.dumps({"text": "delete me please", "user": "carl", "id": "c1"}).encode()]
    )
    chat = ev.wait_for(lambda e: e.get("msg_id") == "c1" and e["event"] == "queued")
    say(d, "D", "Still here at the end.", priority="text")
    d.request({"op": "resume"})
    ev.wait_for(lambda e: e.get("job") == "A" and e["event"] == "started", 60)
    # Paused while A speaks: A holds after a chunk (it has eight), the batch's others wait.
    d.request({"op": "pause"})
    time.sleep(0.5)  # paused for a couple of chunks: nothing of the batch may move on meanwhile
    st = d.request({"op": "status"})
    assert st["current"]["job"] == "A" and st["queue"]["in_flight"] == 4 and st["queue"]["jobs"] == 0
    bot.send_multipart([b"delete", json.dumps({"id": "c1"}).encode()])
    mod = ev.wait_for(lambda e: e["event"] == "moderation" and e["action"] == "delete")
    assert mod["jobs"] == [chat["job"]]
    assert d.request({"op": "cancel", "id": "B"})["jobs"] == ["B"]
    assert d.request({"op": "stop"})["jobs"] == ["A"]
    assert outcome(ev, "A")["reason"] == "stopped"
    time.sleep(0.3)  # time in which D must not start: the daemon is still paused
    ev.pump(0.1)
    assert not [e for e in ev.events if e.get("job") == "D" and e["event"] != "queued"]  # still paused
    d.request({"op": "resume"})
    d_done = outcome(ev, "D")
    assert d_done["event"] == "done" and d_done["batch"] == 4
    ev.pump(0.5)
    for job, reason in (("B", "cancelled"), (chat["job"], "deleted")):
        mine = [e for e in ev.events if e.get("job") == job and e["event"] not in ("queued", "moderation")]
        assert [(e["event"], e["reason"]) for e in mine] == [("cancelled", reason)], (
            mine
        )  # once, never started
        assert job not in ev.pcm
    assert 0 < len(ev.audio("A")) < len(alone(ov, [(sentences(8), None)])[0])
    (want,) = alone(ov, [("Still here at the end.", None)])
    assert steps(ev.audio("D"), want) <= TOL
    st = d.request({"op": "status"})
    assert st["jobs"]["cancelled"] - before["cancelled"] == 3 and st["current"] is None
