"""The OpenAI-compatible API, through the official ``openai`` package, against the real
``ishowtts-web`` subprocess in front of the real daemon (Piper, paced PUB as for an overlay)."""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import av
import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from ishowttsd.client.aio import DaemonError, DaemonUnreachable
from ishowttsd.web.openai_api import BadRequest, _daemon_error, parse_speech
from tests import asr
from tests.support import Daemon, running_daemon
from tests.waits import wait_until
from tests.websupport import Gateway, chat_lines, running_gateway

LINE = "Hello chat, thanks for the follow and welcome to the stream."
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon({"queue": {"max_jobs": 500}, "audio": {"pace": "on"}}) as d:
        yield d


@pytest.fixture(scope="module")
def gateway(daemon: Daemon) -> Iterator[Gateway]:
    with running_gateway(daemon, {"max_speech_requests": 4, "rate_per_min": 6000, "rate_burst": 200}) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.token, max_retries=0, timeout=60)


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Mono int16 samples and their rate, read back with soundfile (wav) or PyAV."""
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2"), 24000
    if fmt == "wav":  # streamed: its sizes are 0xFFFFFFFF (unknown when the header left)
        x, rate = sf.read(io.BytesIO(data), dtype="int16")
        return np.asarray(x), int(rate)
    # (libsndfile cannot read a streamed FLAC, whose STREAMINFO has no total: FFmpeg can.)
    with av.open(io.BytesIO(data)) as c:
        frames = [f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    x = np.concatenate(frames)
    if x.dtype.kind == "f":
        x = np.clip(x * 32767, -32768, 32767)
    return x.astype(np.int16), int(rate)


# -- every format, both ways the client reads it -------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_and_speaks(client: openai.OpenAI, fmt: str) -> None:
    whole = client.audio.speech.create(model="tts-1", voice="alloy", input=LINE, response_format=fmt)  # type: ignore[arg-type]
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="joe",
        input=LINE,
        response_format=fmt,  # type: ignore[arg-type]
    ) as streamed:
        assert streamed.headers["content-type"].startswith("audio/")
        parts = list(streamed.iter_bytes(chunk_size=None))  # as they came off the wire
    for data in (whole.content, b"".join(parts)):
        pcm, rate = decode(data, fmt)
        seconds = len(pcm) / rate
        assert 2.0 < seconds < 6.0, seconds
        assert np.abs(pcm.astype(np.int32)).max() > 1000  # speech, not silence
        if fmt in ("wav", "pcm"):
            assert rate == 24000
            assert asr.wer(LINE, asr.transcribe(pcm, rate)) <= 0.1


def test_audio_streams_while_it_is_made(client: openai.OpenAI) -> None:
    text = " ".join([LINE] * 6)  # several chunks of speech
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="joe", input=text, response_format="pcm"
    ) as r:
        parts = list(r.iter_bytes(chunk_size=None))
        timing = r.headers["server-timing"]
    assert "prep;dur=" in timing and "first_audio;dur=" in timing
    assert len(parts) > 3  # sent as it was made, not as one body at the end
    assert len(b"".join(parts)) / 2 / 24000 > 10


def test_speed_changes_the_length(client: openai.OpenAI) -> None:
    normal, _ = decode(
        client.audio.speech.create(model="tts-1", voice="joe", input=LINE, response_format="pcm").content,
        "pcm",
    )
    fast, _ = decode(
        client.audio.speech.create(
            model="tts-1", voice="joe", input=LINE, response_format="pcm", speed=2.0
        ).content,
        "pcm",
    )
    assert 0.4 < len(fast) / len(normal) < 0.6


def test_models_and_voices(client: openai.OpenAI, gateway: Gateway) -> None:
    assert "tts-1" in [m.id for m in client.models.list()]
    r = httpx.get(gateway.url + "/v1/audio/voices", headers=gateway.auth)
    assert r.status_code == 200 and r.json() == {"voices": ["joe"], "default": "joe"}


# -- the API job is for its caller only ------------------------------------------------------------------


def test_api_job_is_neither_played_nor_published_and_skips_the_chat_queue(
    daemon: Daemon, client: openai.OpenAI
) -> None:
    sub = daemon.subscribe()
    bot = daemon.bot()
    for i, line in enumerate(chat_lines(100)):
        bot.send_multipart([b"chat", json.dumps({"text": line, "user": f"v{i}"}).encode()])
    sub.wait_for(lambda e: e.get("event") == "started" and e.get("source") == "chat")
    # the daemon serves control requests between slices of the incoming chat
    before = wait_until(
        lambda: st if (st := daemon.request({"op": "status"}))["queue"]["jobs"] >= 90 else None,
        10,
        "90 chat lines queued",
    )
    raw = client.audio.speech.with_raw_response.create(
        model="tts-1", voice="joe", input=LINE, response_format="wav"
    )
    audio, rate = decode(raw.content, "wav")
    after = daemon.request({"op": "status"})
    job = raw.headers["x-job"]
    # 100 lines of about 2 s each are being spoken in real time: the API job waited for none of them.
    assert before["queue"]["jobs"] >= 90 and after["queue"]["jobs"] >= before["queue"]["jobs"] - 2
    assert asr.wer(LINE, asr.transcribe(audio, rate)) <= 0.1
    sub.pump(0.5)
    assert job not in sub.pcm  # its audio is not on the PUB (the overlay's source)
    assert not [e for e in sub.events if e.get("job") == job]  # nor its events (no caption)
    assert sub.pcm and any(e.get("source") == "chat" for e in sub.events)  # chat's are
    assert daemon.request({"op": "cancel"})["event"] == "ok"


# -- bad input --------------------------------------------------------------------------------------------


def test_wrong_or_missing_token_is_401_without_detail(gateway: Gateway) -> None:
    for key in ("wrong-token-1234567890", gateway.overlay_key):
        c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            c.audio.speech.create(model="tts-1", voice="joe", input=LINE)
        assert e.value.status_code == 401
        assert key not in json.dumps(e.value.body) and gateway.token not in json.dumps(e.value.body)
    r = httpx.post(gateway.url + "/v1/audio/speech", json={"model": "tts-1", "input": LINE})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(gateway.url + "/v1/models").status_code == 401


def test_bad_requests_get_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", voice="nobody", input=LINE)
    err: Any = e.value.body
    assert err["param"] == "voice" and "joe" in err["message"]  # names the voices there are
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", voice="joe", input="x" * 10_000)
    err = e.value.body
    assert err["param"] == "input" and "10000 characters" in err["message"] and "2000" in err["message"]
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="joe", input=LINE, response_format="ogg")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="joe", input=LINE, speed=5.0)


def test_oversized_body_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.audio.speech.create(model="tts-1", voice="joe", input="word " * 20_000)  # 100 KB of JSON
    assert e.value.status_code == 413


def test_warming_up_is_503_and_healthz_says_so() -> None:
    with running_daemon({"debug": {"warmup_delay_s": 120}}, ready=False) as d, running_gateway(d) as gw:
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0)
        r = wait_until(  # until the daemon answers pings (it loads first)
            lambda: r if (r := httpx.get(gw.url + "/healthz")).json()["daemon"] != "unreachable" else None,
            30,
            "the daemon to answer the gateway",
            poll_s=0.2,
        )
        assert r.status_code == 503 and r.json() == {"status": "unavailable", "daemon": "warming_up"}
        with pytest.raises(openai.InternalServerError) as e:
            c.audio.speech.create(model="tts-1", voice="joe", input=LINE)
        assert e.value.status_code == 503 and e.value.response.headers["retry-after"]
        assert isinstance(e.value.body, dict) and e.value.body["code"] == "warming_up"


def test_daemon_refusals_map_to_http_statuses() -> None:
    for code, status in (("queue_full", 429), ("unknown_voice", 400), ("text_too_long", 400),
                         ("engine_error", 500), ("not_ready", 503)):  # fmt: skip
        r = _daemon_error(DaemonError(code, "why"))
        assert r.status_code == status, code
        assert json.loads(bytes(r.body))["error"]["code"] == code
    r = _daemon_error(DaemonUnreachable("gone"))
    assert r.status_code == 503 and r.headers["retry-after"] == "5"


def test_parse_speech_rules() -> None:
    p = parse_speech({"model": "m", "input": "hi", "voice": {"id": "joe"}}, 100)
    assert p.voice == "joe" and p.response_format == "mp3" and p.speed == 1.0  # OpenAI's defaults
    for body, param in (
        ({"input": "hi"}, "model"),
        ({"model": "m", "input": " "}, "input"),
        ({"model": "m", "input": "hi", "speed": True}, "speed"),
        ({"model": "m", "input": "hi", "stream_format": "sse"}, "stream_format"),
    ):
        with pytest.raises(BadRequest) as e:
            parse_speech(body, 100)
        assert e.value.param == param


# -- clients that never read ------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_clients_that_never_read_cost_bounded_memory(
    daemon: Daemon, gateway: Gateway, client: openai.OpenAI
) -> None:
    """``max_speech_requests`` (4 here) responses are served at once; each holds at most its
    audio (≤ ``max_unread_s``) for a client that does not read; the rest get 429. Measured."""
    body = json.dumps(
        {"model": "tts-1", "voice": "joe", "input": " ".join([LINE] * 12), "response_format": "wav"}
    )
    request = (
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gateway.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    rss0 = _rss_kib(gateway.proc.pid)
    st0 = daemon.request({"op": "status"})
    socks = []
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(request)
        socks.append(s)  # and never read

    def taken() -> int:  # the four have reached the daemon, so they hold the gateway's four slots
        st = daemon.request({"op": "status"})
        ended = sum(st["jobs"][k] - st0["jobs"][k] for k in ("done", "cancelled", "error", "dropped"))
        return int(st["queue"]["private"] + ended >= 4)

    wait_until(taken, 30, "the four requests to reach the daemon")
    with pytest.raises(openai.RateLimitError) as e:
        client.audio.speech.create(model="tts-1", voice="joe", input=LINE)
    assert e.value.status_code == 429

    def all_four_made() -> bool:  # the daemon makes all four (each ~40 s of audio) meanwhile
        assert httpx.get(gateway.url + "/healthz").json()["status"] == "ok"  # the gateway still serves
        return not daemon.request({"op": "status"})["queue"]["private"]

    wait_until(all_four_made, 90, "the daemon to make the four", poll_s=0.5)
    grown_mib = (_rss_kib(gateway.proc.pid) - rss0) / 1024
    for s in socks:
        s.close()
    print(f"gateway RSS growth with 4 non-reading clients of ~40 s wav each: {grown_mib:.1f} MiB")
    assert grown_mib < 80  # 4 x 40 s of 24 kHz wav is 7.7 MB; bounded well below the process size
    # The slots come back once those clients are gone.

    def served() -> bool:
        try:
            client.audio.speech.create(model="tts-1", voice="joe", input=LINE, response_format="pcm")
        except openai.RateLimitError:
            return False
        return True

    wait_until(served, 20, "the slots to be released after the clients left", poll_s=0.5)
    assert os.path.exists(f"/proc/{gateway.proc.pid}")
