"""The real daemon, real sockets, the embedded Piper voice, and Whisper listening to the result."""

from __future__ import annotations

import json

import numpy as np
from asr import transcribe, wer
from support import collect_until_terminal, running_daemon

SENTENCES = [
    "Hello chat, thanks for the follow.",
    "Welcome to the stream, enjoy your stay.",
    "The weather today is sunny and warm.",
]


def test_chat_over_pub_comes_back_as_pcm_and_whisper_understands_it() -> None:
    with running_daemon() as d:
        ev = d.subscribe()
        bot = d.bot()
        for i, text in enumerate(SENTENCES):
            bot.send_multipart(
                [b"chat", json.dumps({"text": text, "user": f"viewer{i}", "id": f"m{i}"}).encode()]
            )
        done = []
        for text in SENTENCES:
            started = ev.wait_for(lambda e, t=text: e.get("event") == "started" and e.get("text") == t)
            assert started["source"] == "chat"
            done.append(ev.wait_for(lambda e, j=started["job"]: e.get("event") == "done" and e["job"] == j))
        total_ref, errors = 0, 0.0
        for text, fin in zip(SENTENCES, done, strict=False):
            ev.pump(0.2)
            frames = sorted(ev.pcm[fin["job"]], key=lambda hf: hf[0]["seq"])
            hdrs = [h for h, _ in frames]
            assert [h["seq"] for h in hdrs] == list(range(len(hdrs)))
            assert hdrs[-1]["final"] and not any(h["final"] for h in hdrs[:-1])
            assert {h["rate"] for h in hdrs[:-1]} == {22050}
            assert all(h["format"] == "s16le" and h["channels"] == 1 for h in hdrs)
            pcm = ev.audio(fin["job"])
            assert abs(len(pcm) / 22050 - fin["audio_s"]) < 0.01
            assert np.abs(pcm).max() > 1000  # not silence
            heard = transcribe(pcm, 22050)
            n = len(text.split())
            total_ref += n
            errors += wer(text, heard) * n
        assert errors / total_ref <= 0.10, f"WER {errors / total_ref:.2f}"


def test_say_wait_reports_lifecycle_and_timings() -> None:
    with running_daemon() as d:
        s = d.dealer()
        s.send(
            json.dumps({"op": "say", "text": "Testing one two three.", "req": "r1", "id": "job-1"}).encode()
        )
        evs = collect_until_terminal(s)
        assert [e["event"] for e in evs] == ["queued", "started", "done"]
        assert all(e["req"] == "r1" and e["job"] == "job-1" for e in evs)
        done = evs[-1]
        assert done["audio_s"] > 0.5 and done["synth_s"] > 0
        assert abs(done["rtf"] - done["synth_s"] / done["audio_s"]) < 1e-3


def test_req_socket_gets_exactly_one_reply() -> None:
    import zmq

    with running_daemon() as d:
        s = d.ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(d.control)
        s.send(json.dumps({"op": "say", "text": "One reply only.", "wait": True}).encode())
        assert s.poll(30000)
        reply = json.loads(s.recv())
        assert reply["event"] == "done"
        s.send(b'{"op": "ping"}')  # a REQ socket can only send again if it got exactly one reply
        assert s.poll(5000)
        assert json.loads(s.recv())["event"] == "pong"
        s.close(0)
