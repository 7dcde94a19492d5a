"""Start-up failures, SIGTERM drain and the second start: the daemon's lifecycle, for real."""

from __future__ import annotations

import json
import signal
import time

from support import Daemon, base_settings, deep_merge, running_daemon, short_tmpdir


def _drain(sock, until: int, timeout_s: float = 30.0) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while len(out) < until and time.monotonic() < deadline:
        if sock.poll(100):
            e = json.loads(sock.recv_multipart()[0])
            if e["event"] in ("done", "cancelled", "dropped", "error"):
                out[e["job"]] = f"{e['event']}:{e.get('reason', '')}"
    return out


def test_sigterm_lets_the_current_job_finish_and_cancels_the_queue() -> None:
    with running_daemon({"debug": {"chunk_delay_s": 0.3}}) as d:
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": "Finish me. Please. Thanks.", "id": "cur"}).encode())
        s.send(json.dumps({"op": "say", "text": "Never said.", "id": "q"}).encode())
        while True:
            assert s.poll(10000)
            if json.loads(s.recv_multipart()[0])["event"] == "started":
                break
        d.signal(signal.SIGTERM)
        assert _drain(s, 2) == {"cur": "done:", "q": "cancelled:shutdown"}
        assert d.proc is not None and d.proc.wait(15) == 0


def test_sigterm_drain_is_bounded() -> None:
    settings = {"debug": {"chunk_delay_s": 2.0}, "daemon": {"drain_timeout_s": 0.5}}
    with running_daemon(settings) as d:
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": "One. Two. Three. Four. Five.", "id": "long"}).encode())
        while json.loads(s.recv_multipart()[0])["event"] != "started":
            pass
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        assert _drain(s, 1) == {"long": "cancelled:shutdown"}
        assert d.proc is not None and d.proc.wait(15) == 0
        assert time.monotonic() - t0 < 5


def test_missing_voice_model_fails_startup_with_the_path() -> None:
    tmp = short_tmpdir()
    settings = deep_merge(base_settings(tmp), {"piper": {"model": str(tmp / "missing.onnx")}})
    d = Daemon(tmp, settings)
    d.start()
    assert d.proc is not None
    assert d.proc.wait(60) == 3
    assert str(tmp / "missing.onnx") in d.log_text()
    d.close()


def test_second_daemon_on_the_same_sockets_refuses_to_start() -> None:
    with running_daemon() as d:
        twin = Daemon(d.dir, d.settings)
        twin.log = d.dir / "twin.log"
        twin.start()
        assert twin.proc is not None and twin.proc.wait(60) == 3
        assert "in use" in twin.log_text()
        assert d.request({"op": "ping"})["event"] == "pong"  # the first one still owns them
        twin.close()


def test_ping_answers_during_warmup_and_jobs_queue_until_ready() -> None:
    # Jobs sent before READY wait in the queue and are spoken once the engine is warm.
    with running_daemon(ready=False) as d:
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": "Queued before ready."}).encode())
        assert list(_drain(s, 1, timeout_s=60).values()) == ["done:"]


def test_sighup_with_a_broken_config_keeps_serving() -> None:
    with running_daemon() as d:
        good = d.config.read_text()
        d.config.write_text(good + "\n[engine]\nkind = 'nope'\n")
        d.signal(signal.SIGHUP)
        d.wait_log("reload failed")
        assert "engine" in d.log_text()
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": "Still here."}).encode())
        assert list(_drain(s, 1).values()) == ["done:"]
