"""Control socket: every request gets an answer; bad ones get an error and the daemon keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from support import collect_until_terminal, running_daemon

from ishowttsd.daemon.sockets import TRANSPORT_MAX_BYTES

BAD = [
    (b"not json", "bad_json"),
    (b"\xff\xfe\x00garbage", "bad_encoding"),
    (b"[1, 2, 3]", "bad_request"),
    (b'{"op": 5}', "bad_request"),
    (b'{"op": "explode"}', "unknown_op"),
    (b'{"op": "say"}', "bad_request"),
    (b'{"op": "say", "text": 42}', "bad_request"),
    (b'{"op": "say", "text": "hi", "priority": "urgent"}', "bad_request"),
    (b'{"op": "say", "text": "hi", "voice": ["x"]}', "bad_request"),
    (b'{"op": "say", "text": "hi", "voice": "nobody"}', "unknown_voice"),
    (b'{"op": "say", "text": "   "}', "empty_text"),
    (b'{"op": "say", "text": NaN}', "bad_json"),
    (json.dumps({"op": "say", "text": "x" * 5000}).encode(), "text_too_long"),
    (b"[" * 20000 + b"]" * 20000, "bad_json"),
    (b'{"op": "ping", "x": ' + b"[" * 40 + b"]" * 40 + b"}", "bad_json"),
]


@pytest.fixture(scope="module")
def daemon():  # type: ignore[no-untyped-def]
    with running_daemon() as d:
        yield d


@pytest.mark.parametrize(("frame", "code"), BAD)
def test_malformed_request_gets_error(daemon, frame: bytes, code: str) -> None:  # type: ignore[no-untyped-def]
    reply = daemon.request(frame)
    assert reply["event"] == "error"
    assert reply["code"] == code, reply
    assert reply["reason"]
    assert daemon.request({"op": "ping"})["event"] == "pong"


def test_wrong_frame_count_gets_error(daemon) -> None:  # type: ignore[no-untyped-def]
    s = daemon.dealer()
    s.send_multipart([b'{"op": "ping"}', b"extra"])
    assert s.poll(5000)
    reply = json.loads(s.recv_multipart()[0])
    assert reply["code"] == "bad_frames"


def test_status_and_voices(daemon) -> None:  # type: ignore[no-untyped-def]
    st = daemon.request({"op": "status", "req": "x"})
    assert st["event"] == "status" and st["req"] == "x"
    assert st["ready"] is True and st["engine"] == "piper"
    assert st["queue"]["jobs"] == 0
    v = daemon.request({"op": "voices"})
    assert [x["id"] for x in v["voices"]] == ["joe"]
    assert v["voices"][0]["default"] is True


def test_huge_frame_is_refused_without_harm(daemon) -> None:  # type: ignore[no-untyped-def]
    s = daemon.dealer()
    s.send(b"x" * (2 << 20))  # over [zmq] max_message_bytes, within the transport bound: answered
    assert s.poll(5000)
    assert json.loads(s.recv_multipart()[0])["code"] == "too_large"
    s = daemon.dealer()
    s.send(b"x" * (TRANSPORT_MAX_BYTES + 1))  # over the transport bound: libzmq drops the connection
    assert not s.poll(500)
    assert daemon.request({"op": "ping"})["event"] == "pong"


def test_cancel_empties_queue_and_stops_current() -> None:
    with running_daemon({"debug": {"chunk_delay_s": 0.5}}) as d:
        before = d.request({"op": "status"})["jobs"]
        s = d.dealer()
        for i in range(4):
            s.send(
                json.dumps(
                    {"op": "say", "text": f"Sentence number {i}. And a second one.", "id": f"j{i}"}
                ).encode()
            )
        ev = d.subscribe()
        first = collect_until_terminal_or(s, "started")
        assert first["job"] == "j0"
        reply = d.request({"op": "cancel"})
        assert reply["event"] == "ok" and set(reply["jobs"]) == {"j0", "j1", "j2", "j3"}
        outcomes = {}
        deadline = time.monotonic() + 10
        while len(outcomes) < 4 and time.monotonic() < deadline:
            if s.poll(100):
                e = json.loads(s.recv_multipart()[0])
                if e["event"] in ("done", "cancelled", "error", "dropped"):
                    outcomes[e["job"]] = e["event"]
        assert outcomes == {f"j{i}": "cancelled" for i in range(4)}
        # every cancelled job is counted, the one the worker held and the three still waiting
        after = d.request({"op": "status"})["jobs"]
        assert after["cancelled"] - before["cancelled"] == 4 and after["done"] == before["done"], after
        ev.close()


def collect_until_terminal_or(sock, name: str, timeout_s: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(100):
            e = json.loads(sock.recv_multipart()[0])
            if e["event"] == name:
                return e
    raise AssertionError(f"no {name}")


def test_stop_only_current_then_queue_continues() -> None:
    with running_daemon({"debug": {"chunk_delay_s": 0.4}}) as d:
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": "First long line. It goes on. And on.", "id": "a"}).encode())
        s.send(json.dumps({"op": "say", "text": "Second line.", "id": "b"}).encode())
        collect_until_terminal_or(s, "started")
        assert d.request({"op": "stop"})["jobs"] == ["a"]
        seen = {}
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            if s.poll(100):
                e = json.loads(s.recv_multipart()[0])
                if e["event"] in ("done", "cancelled"):
                    seen[e["job"]] = e["event"]
        assert seen == {"a": "cancelled", "b": "done"}


def test_pause_holds_the_queue_until_resume() -> None:
    with running_daemon() as d:
        assert d.request({"op": "pause"})["event"] == "ok"
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": "Held until resumed."}).encode())
        assert json.loads(s.recv_multipart()[0])["event"] == "queued"
        assert not s.poll(800)  # nothing starts while paused
        assert d.request({"op": "status"})["paused"] is True
        assert d.request({"op": "resume"})["event"] == "ok"
        evs = collect_until_terminal(s)
        assert evs[-1]["event"] == "done"


def test_priority_order_important_first() -> None:
    with running_daemon({"debug": {"chunk_delay_s": 0.3}}) as d:
        ev = d.subscribe()
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": "Blocking line.", "id": "first"}).encode())
        collect_until_terminal_or(s, "started")
        for jid, prio in (("t", "text"), ("m", "message"), ("i", "important")):
            s.send(json.dumps({"op": "say", "text": f"Line {jid}.", "id": jid, "priority": prio}).encode())
        order = []
        while len(order) < 3:
            e = ev.wait_for(lambda e: e.get("event") == "started" and e["job"] not in [*order, "first"])
            order.append(e["job"])
        assert order == ["i", "m", "t"]


def test_say_cli_exit_codes() -> None:
    with running_daemon() as d:
        env_cmd = [sys.executable, "-m", "ishowttsd.cli.say", "--endpoint", d.control]
        r = subprocess.run([*env_cmd, "--wait", "Hello there."], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([*env_cmd, "--voice", "nobody", "Hello."], capture_output=True, timeout=60)
        assert r.returncode == 4 and b"unknown_voice" in r.stderr
        r = subprocess.run([*env_cmd, "--status"], capture_output=True, timeout=60, text=True)
        assert r.returncode == 0 and "engine: piper" in r.stdout
        r = subprocess.run(
            [*env_cmd, "--wait", "--lines"], input=b"one\n\ntwo\n", capture_output=True, timeout=60
        )
        assert r.returncode == 0
        out = d.dir / "out.wav"
        r = subprocess.run([*env_cmd, "-o", str(out), "Write me to a file."], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        import soundfile as sf

        data, rate = sf.read(out, dtype="int16")
        assert rate == 22050 and len(data) > rate // 2


def test_say_cli_no_daemon_exits_unreachable_within_timeout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ishowttsd.cli.say",
            "--endpoint",
            f"ipc://{tmp_path}/none.sock",
            "--timeout",
            "2",
            "--wait",
            "hello",
        ],
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 6
    assert time.monotonic() - t0 < 10
