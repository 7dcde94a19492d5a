"""``ishowtts-wyoming`` against the real daemon (Piper), driven by the wyoming package's own client.

Nothing of ours stands in for either side: the server is the real subprocess, the daemon the real
daemon, and the client is ``wyoming.client.AsyncTcpClient`` — what Home Assistant uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asr import transcribe, wer
from support import Daemon, running_daemon
from waits import wait_until
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, daemon: Daemon) -> None:
        self.port = _free_port()
        self.log = daemon.dir / "wyoming.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ishowttsd.wyoming_server",
                    "--config",
                    str(daemon.config),
                    "--uri",
                    f"tcp://127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def listening() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
            return False

        wait_until(listening, 30, "ishowtts-wyoming to listen", self.log.read_text)

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.port)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon() as d:
        yield d


@pytest.fixture(scope="module")
def server(daemon: Daemon) -> Iterator[Server]:
    s = Server(daemon)
    yield s
    assert s.stop() == 0, s.log.read_text()


async def _next(client: AsyncTcpClient, timeout_s: float = 30.0) -> Event:
    event = await asyncio.wait_for(client.read_event(), timeout_s)
    assert event is not None, "the server closed the connection"
    return event


async def _audio_until(
    client: AsyncTcpClient, last: str, first: Event | None = None
) -> tuple[list[Event], np.ndarray, int]:
    """Read events until one of type ``last`` (after ``first``, if it was read already); return
    them, the audio and its rate."""
    events: list[Event] = []
    pcm: list[bytes] = []
    rate = 0
    while True:
        ev = first if first is not None else await _next(client)
        first = None
        events.append(ev)
        if AudioStart.is_type(ev.type):
            rate = AudioStart.from_event(ev).rate
        elif AudioChunk.is_type(ev.type):
            pcm.append(AudioChunk.from_event(ev).audio)
        elif Error.is_type(ev.type):
            raise AssertionError(f"error event: {ev.data}")
        if ev.type == last:
            return events, np.frombuffer(b"".join(pcm), dtype="<i2"), rate


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_describe_lists_the_daemons_voices(daemon: Daemon, server: Server) -> None:
    voices = daemon.request({"op": "voices"})["voices"]

    async def go() -> Info:
        async with server.client() as c:
            await c.write_event(Describe().event())
            return Info.from_event(await _next(c))

    info = _run(go())
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.supports_synthesize_streaming
    assert {v.name for v in program.voices} == {v["id"] for v in voices}
    for v in program.voices:
        assert v.installed and v.languages and v.attribution.name and v.description


def test_synthesize_returns_audio_that_transcribes(server: Server) -> None:
    text = "Welcome home. The front door is open."

    async def go() -> tuple[list[Event], np.ndarray, int]:
        async with server.client() as c:
            await c.write_event(Synthesize(text=text).event())
            return await _audio_until(c, AudioStop().event().type)

    events, audio, rate = _run(go())
    assert AudioStart.is_type(events[0].type)
    assert rate == 22050 and audio.size > rate  # over a second of speech
    assert wer(text, transcribe(audio, rate)) <= 0.10


def test_streaming_synthesis_speaks_before_the_last_chunk_is_sent(server: Server) -> None:
    sentences = ["The kitchen lights are on.", "The garage door is closed.", "Good night, sleep well."]

    async def go() -> tuple[bool, list[Event], np.ndarray, int]:
        async with server.client() as c:
            await c.write_event(SynthesizeStart().event())
            await c.write_event(SynthesizeChunk(text=sentences[0] + " The garage").event())
            await c.write_event(SynthesizeChunk(text=" door is closed. Good").event())
            # The first sentence is complete: its audio must come before we send the rest.
            first = await _next(c)
            early = AudioStart.is_type(first.type)
            await c.write_event(SynthesizeChunk(text=" night, sleep well.").event())
            await c.write_event(SynthesizeStop().event())
            # Streaming clients also send the whole text once, for servers that cannot stream.
            await c.write_event(Synthesize(text=" ".join(sentences)).event())
            events, audio, rate = await _audio_until(c, SynthesizeStopped().event().type, first)
            return early, events, audio, rate

    early, events, audio, rate = _run(go())
    assert early, "no audio before the last text chunk was sent"
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types.count("audio-start") == 1
    assert types[-2:] == ["audio-stop", "synthesize-stopped"]
    heard = transcribe(audio, rate)
    assert wer(" ".join(sentences), heard) <= 0.10, heard


def test_bad_requests_get_error_events_and_the_connection_stays(server: Server) -> None:
    async def go() -> list[Error]:
        errors = []
        async with server.client() as c:
            for request in (
                Synthesize(text="hello", voice=SynthesizeVoice(name="no-such-voice")),
                Synthesize(text="   "),
                Synthesize(text="word " * 20_000),  # 100 KB
            ):
                await c.write_event(request.event())
                ev = await _next(c)
                assert Error.is_type(ev.type), ev
                errors.append(Error.from_event(ev))
            await c.write_event(SynthesizeChunk(text="no start").event())
            ev = await _next(c)
            errors.append(Error.from_event(ev))
            # Still served after all that.
            await c.write_event(Describe().event())
            assert Info.is_type((await _next(c)).type)
        return errors

    errors = _run(go())
    assert [e.code for e in errors] == ["unknown_voice", "empty_text", "text_too_long", "bad_request"]
    assert "joe" in errors[0].text  # names the voices there are
    assert "20000" in errors[2].text


def test_a_client_that_leaves_mid_stream_cancels_its_job() -> None:
    # A daemon whose engine takes 3 s per chunk (the [debug] slow-GPU knob), so the job is surely
    # still being synthesised when the client leaves. Private jobs' events go to the requester only
    # (here: the Wyoming server), so the daemon's own counters tell what became of the job.
    with running_daemon({"debug": {"chunk_delay_s": 3.0}}) as slow:
        server = Server(slow)
        try:
            before = slow.request({"op": "status"})["jobs"]

            async def go() -> None:
                c = server.client()
                await c.connect()
                await c.write_event(Synthesize(text="First sentence here. And a second one.").event())
                deadline = time.monotonic() + 20
                while slow.request({"op": "status"})["queue"]["private"] == 0:
                    assert time.monotonic() < deadline, "the job never started"
                    await asyncio.sleep(0.05)
                await c.disconnect()

            _run(go())
            wait_until(
                lambda: slow.request({"op": "status"})["jobs"]["cancelled"] > before["cancelled"],
                20,
                "the job to be cancelled",
                lambda: (
                    f"{slow.request({'op': 'status'})}\nwyoming:\n{server.log.read_text()[-3000:]}"
                    f"\ndaemon:\n{slow.log_text()[-4000:]}"
                ),
                0.1,
            )
            time.sleep(4.0)  # longer than a chunk (3 s): time for the second sentence not to start
            after = slow.request({"op": "status"})
            assert after["jobs"]["cancelled"] == before["cancelled"] + 1, (before, after)
            assert after["jobs"]["done"] == before["done"], (before, after)
            assert after["queue"]["private"] == 0 and after["queue"]["in_flight"] == 0, after["queue"]
        finally:
            assert server.stop() == 0, server.log.read_text()


def test_twenty_concurrent_clients(server: Server) -> None:
    async def one(i: int) -> np.ndarray:
        async with server.client() as c:
            await c.write_event(Synthesize(text=f"Client {i} is speaking now.").event())
            _, audio, _ = await _audio_until(c, AudioStop().event().type)
            return audio

    async def go() -> list[np.ndarray]:
        return list(await asyncio.gather(*(one(i) for i in range(20))))

    audios = _run(go())
    assert len(audios) == 20 and all(a.size > 10_000 for a in audios)


def test_bad_uri_and_port_in_use_exit_codes(tmp_path: Path, server: Server) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "ishowttsd.wyoming_server", "--uri", "http://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--uri" in bad.stderr
    busy = subprocess.run(
        [sys.executable, "-m", "ishowttsd.wyoming_server", "--uri", f"tcp://127.0.0.1:{server.port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert busy.returncode == 3 and str(server.port) in busy.stderr
