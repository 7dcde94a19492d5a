"""``say`` with ``"play": false``: synthesised for the requester only.

Never played, never on the PCM PUB (audio or events), not queued behind the speaker; the audio
comes back to the requester. Scheduler rules as plain code; the worker in this process with the
real Piper engine and a sound device that takes seconds to play a line; then the real daemon
through the asyncio client (``ishowttsd.client.aio``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from ishowttsd import config
from ishowttsd.client.aio import DaemonClient, DaemonError, PcmFrame
from ishowttsd.daemon.outbox import EventOut, Outbox, PcmOut
from ishowttsd.daemon.report import Report
from ishowttsd.daemon.scheduler import Limits, QueueFull, Scheduler
from ishowttsd.daemon.worker import Worker
from ishowttsd.engine.base import AudioChunk
from ishowttsd.engine.piper_engine import PiperEngine
from ishowttsd.job import Job
from tests import asr
from tests.support import Daemon, running_daemon
from tests.waits import wait_until
from tests.websupport import chat_lines

LINE = "Thanks for the follow, and welcome to the stream."


# -- scheduler -------------------------------------------------------------------------------------


def _job(i: str, play: bool = True, priority: str = "message") -> Job:
    return Job(id=i, text="hello there", play=play, priority=priority)


def test_private_jobs_come_first_also_while_paused() -> None:
    s = Scheduler(Limits())
    s.submit(_job("chat1", priority="important"))
    s.submit(_job("p1", play=False, priority="text"))
    s.pause()
    taken = s.take(4, 0.0, timeout=0.1)
    assert [j.id for j in taken] == ["p1"]  # paused: no speaker company
    assert s.current is None  # nothing is being spoken
    s.done(taken[0])
    assert s.take(4, 0.0, timeout=0.05) == []
    s.resume()
    s.submit(_job("p2", play=False))
    assert [j.id for j in s.take(4, 0.0, timeout=0.1)] == ["p2", "chat1"]  # batched together
    assert s.current is None


def test_private_lane_is_bounded_and_out_of_the_speakers_reach() -> None:
    s = Scheduler(Limits(max_jobs=2, max_private=2))
    s.submit(_job("a"))
    s.submit(_job("b"))
    s.submit(_job("p1", play=False))  # the speaker's full queue does not refuse it
    s.submit(_job("p2", play=False))
    with pytest.raises(QueueFull):
        s.submit(_job("p3", play=False))
    assert len(s) == 2 and s.private_count == 2 and s.position(s.find(["p2"])[0]) == 1
    assert {j.id for j in s.remove(lambda j: True, "cleared")} == {"a", "b"}
    assert s.private_count == 2  # clear/skip/ban never reach private jobs
    assert [j.id for j in s.remove(lambda j: j.id == "p1", "cancelled", private=True)] == ["p1"]
    got = s.take_private(4, timeout=0.1)
    assert [j.id for j in got] == ["p2"] and s.in_flight(got[0]) and s.busy
    s.done(got[0])
    assert not s.busy and s.private_count == 0


def test_take_private_wakes_when_told() -> None:
    s = Scheduler(Limits())
    flag = threading.Event()
    threading.Timer(0.1, lambda: (flag.set(), s.wake())).start()
    t0 = time.monotonic()
    assert s.take_private(1, timeout=5.0, until=flag.is_set) == []
    assert time.monotonic() - t0 < 2.0


# -- the worker, in this process ---------------------------------------------------------------------


class SlowDevice:
    """A sound card at the system's edge: ``end`` blocks as long as the audio lasts (scaled)."""

    name = "alsa"

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self.seconds: dict[str, float] = {}
        self.played: list[str] = []
        self.playing: str | None = None

    def write(self, job: Job, chunk: AudioChunk) -> None:
        self.seconds[job.id] = self.seconds.get(job.id, 0.0) + chunk.seconds

    def end(self, job: Job) -> None:
        self.playing = job.id
        job.cancel.wait(self.seconds.pop(job.id, 0.0) / self.speed)
        self.played.append(job.id)

    def close(self) -> None:
        pass


class Harness:
    def __init__(self) -> None:
        settings = config.parse({"engine": {"kind": "piper"}, "piper": {"deterministic": True}}, None)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.outbox = Outbox(self.ctx)
        self.scheduler = Scheduler(Limits())
        self.device = SlowDevice(speed=0.5)  # a ~3 s line holds it ~6 s: room for a busy CI box
        report = Report(self.outbox)  # no journal: the events go straight to the outbox
        self.worker = Worker(
            PiperEngine(settings.piper), self.scheduler, [self.device], self.outbox, report, lambda _: None
        )
        self.items: list[EventOut | PcmOut] = []
        self.worker.start()
        assert self.worker.ready.wait(60) and self.worker.startup_error is None

    def wait_for(self, event: str, job: str, timeout_s: float = 30.0) -> EventOut:
        def match() -> EventOut | None:
            self.items.extend(self.outbox.drain())
            return next(
                (
                    it
                    for it in self.items
                    if isinstance(it, EventOut) and it.payload["event"] == event and it.payload["job"] == job
                ),
                None,
            )

        return wait_until(
            match,
            timeout_s,
            f"{event} for {job}",
            lambda: [getattr(i, "payload", None) for i in self.items],
            0.01,
        )

    def close(self) -> None:
        self.scheduler.close()
        self.worker.stopping.set()
        self.worker.join(10)
        self.outbox.close()
        self.ctx.term()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def test_private_job_is_made_while_a_line_plays(harness: Harness) -> None:
    """A line holds the sound card for seconds; a private job asked meanwhile is done long
    before that line (and the chat queued after it) has been heard, and it never reaches the card."""
    speaker = [Job(id=f"chat{i}", text=LINE, priority="text", source="chat") for i in range(3)]
    for j in speaker:
        harness.scheduler.submit(j)
    harness.wait_for("started", "chat0")
    wait_until(lambda: harness.device.playing == "chat0", 10, "chat0 to play")
    private = Job(id="api1", text=LINE, play=False, peer=b"client", want_pcm=True)
    harness.scheduler.submit(private)
    done = harness.wait_for("done", "api1")
    assert "chat0" not in harness.device.played  # still playing when the private job was done
    assert not done.publish and done.peer == b"client"  # to its requester, not on the PUB
    audio = [i for i in harness.items if isinstance(i, PcmOut) and i.job == "api1"]
    assert audio and all(not a.publish and a.peer == b"client" for a in audio)
    pcm = np.frombuffer(b"".join(a.payload for a in audio), dtype="<i2")
    assert asr.wer(LINE, asr.transcribe(pcm, 22050)) <= 0.1
    harness.wait_for("done", "chat2", timeout_s=30)
    assert harness.device.played == ["chat0", "chat1", "chat2"]  # never "api1"


# -- the daemon, through the asyncio client ------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    # Paced: the PUB is the speaker (real time, as for an OBS overlay), so queued chat takes
    # as long to get through as it takes to hear.
    with running_daemon({"queue": {"max_jobs": 500}, "audio": {"pace": "on"}}) as d:
        yield d


async def _say_private(client: DaemonClient, text: str, **kw: Any) -> tuple[list[PcmFrame], dict[str, Any]]:
    async with client.say(text, play=False, **kw) as speech:
        await speech.accepted()
        frames = [f async for f in speech]
        assert speech.result is not None
        return frames, speech.result


def test_private_say_completes_while_100_chat_lines_are_spoken(daemon: Daemon) -> None:
    sub = daemon.subscribe()
    bot = daemon.bot()

    async def run() -> tuple[list[PcmFrame], dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with DaemonClient(daemon.control, timeout=20) as client:
            assert await client.ready()
            assert [v.id for v in await client.voices()]
            for i, line in enumerate(chat_lines(100)):
                bot.send_multipart([b"chat", json.dumps({"text": line, "user": f"u{i}"}).encode()])
            for _ in range(100):
                before = await client.status()
                if before["queue"]["jobs"] >= 90 and before["current"] is not None:
                    break
                await asyncio.sleep(0.05)
            frames, done = await _say_private(client, LINE)
            after = await client.status()
            with pytest.raises(DaemonError) as bad:
                await _say_private(client, "hello", voice="nobody")
            assert bad.value.code == "unknown_voice" and "known:" in bad.value.reason
            await client.pause()  # private jobs go on while the speaker is paused
            frames2, _ = await _say_private(client, "Paused but still here.")
            assert frames2[-1].final
            await client.cancel()  # the speaker's queue
            await client.resume()
            return frames, done, before, after

    frames, done, before, after = asyncio.run(run())
    # The chat lines were being spoken (about 2 s each, in real time) the whole time: the private
    # job waited for none of them.
    assert before["queue"]["jobs"] >= 90 and before["current"] is not None
    assert after["queue"]["jobs"] >= before["queue"]["jobs"] - 2
    assert done["event"] == "done" and frames[-1].final
    pcm = np.frombuffer(b"".join(f.samples for f in frames), dtype="<i2")
    assert asr.wer(LINE, asr.transcribe(pcm, frames[0].rate)) <= 0.1
    sub.pump(0.5)
    job = done["job"]
    assert job not in sub.pcm  # no audio on the PUB
    assert not [e for e in sub.events if e.get("job") == job]  # nor its events (no overlay caption)
    assert any(e.get("event") == "started" for e in sub.events)  # while the chat's were published
    assert sub.pcm  # and the chat's audio


def test_slow_reader_is_cut_off_and_its_job_cancelled(daemon: Daemon) -> None:
    async def run() -> tuple[DaemonError, list[dict[str, Any]]]:
        async with DaemonClient(daemon.control, timeout=20, max_buffered_s=0.5) as client:
            speech = client.say(LINE + " " + LINE + " " + LINE, play=False)
            async with speech:
                await speech.accepted()
                await asyncio.sleep(2.0)  # reads nothing while the audio arrives
                with pytest.raises(DaemonError) as e:
                    async for _ in speech:
                        pass
            return e.value, speech.events

    err, events = asyncio.run(run())
    assert err.code == "slow_reader"
    assert sum(1 for e in events if e["event"] == "pcm") <= 3  # 0.25 s frames: cut at 0.5 s unread
