"""``ishowtts-say``'s failures: usage errors are rc 2 before anything is sent, a bad ``-o`` is
caught before speaking, a daemon that dies or hangs mid ``--wait`` is noticed with the audio so
far kept, and "did not answer" says where it looked. Real client (a subprocess), real daemon."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import pytest
from support import running_daemon
from waits import wait_until

SAY = [sys.executable, "-m", "ishowttsd.cli.say"]


def _say(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [*SAY, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


@pytest.fixture(scope="module")
def daemon():  # type: ignore[no-untyped-def]
    with running_daemon() as d:
        yield d


def _jobs_seen(d: Any) -> int:
    return int(d.request({"op": "status"})["counters"].get("requests", 0))


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (["--timeout", "nan", "hi"], None, "positive, finite"),
        (["--timeout", "inf", "hi"], None, "positive, finite"),
        (["--timeout", "1e400", "hi"], None, "positive, finite"),
        (["--timeout", "0", "hi"], None, "positive, finite"),
        (["--timeout", "-1", "hi"], None, "positive, finite"),
        (["--timeout", "soon", "hi"], None, "not a number"),
        (["--connect-timeout", "0", "hi"], None, "positive, finite"),
        (["--connect-timeout", "0", "--status"], None, "positive, finite"),
        ([""], None, "text is empty"),
        (["   ", "\t"], None, "text is empty"),
        (["--voice", "", "hi"], None, "--voice is empty"),
        (["--voice", "  ", "hi"], None, "--voice is empty"),
        ([], b"", "nothing to say"),
        ([], b"  \n\n\t\n", "nothing to say"),
        (["--lines"], b"\n  \n", "nothing to say"),
        ([], b"caf\xe9 au lait\n", "not UTF-8"),
        ([], b"\xff\xfe" + "hello".encode("utf-16-le"), "not UTF-8"),
        ([], b"hello\x00\x01\x02binary", "NUL bytes"),
    ],
)
def test_usage_errors_are_rc2_and_nothing_is_sent(
    daemon, args: list[str], stdin: bytes | None, says: str
) -> None:  # type: ignore[no-untyped-def]
    before = _jobs_seen(daemon)
    r = _say("--endpoint", daemon.control, *args, stdin=stdin)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr
    assert _jobs_seen(daemon) == before + 1  # only our status request reached the daemon


def test_utf8_stdin_with_a_bom_is_spoken(daemon) -> None:  # type: ignore[no-untyped-def]
    r = _say("--endpoint", daemon.control, "--wait", stdin="\ufeffCafé au lait.".encode())
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("target", ["missing/dir/out.wav", "adir", "/dev/full"])
def test_bad_output_is_refused_before_speaking(daemon, tmp_path: Path, target: str) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "adir").mkdir()
    path = target if target.startswith("/") else str(tmp_path / target)
    before = _jobs_seen(daemon)
    r = _say("--endpoint", daemon.control, "-o", path, "Never spoken.")
    assert r.returncode == 2, r.stderr
    assert path in r.stderr and "Traceback" not in r.stderr
    why = {"missing/dir/out.wav": "does not exist", "adir": "is a directory", "/dev/full": "No space left"}
    assert why[target] in r.stderr
    assert _jobs_seen(daemon) == before + 1  # the job was never sent


def test_no_daemon_names_the_endpoint_and_the_missing_file(tmp_path: Path) -> None:
    ep = f"ipc://{tmp_path}/none.sock"
    t0 = time.monotonic()
    r = _say("--endpoint", ep, "--connect-timeout", "1", "--wait", "hello")
    assert r.returncode == 6 and time.monotonic() - t0 < 15
    assert ep in r.stderr and "no socket file" in r.stderr and "ISHOWTTS_CONTROL" in r.stderr
    r = _say("--endpoint", ep, "--connect-timeout", "1", "--status")
    assert r.returncode == 6 and ep in r.stderr and "no socket file" in r.stderr


def test_stale_socket_file_is_named_as_existing(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))  # bound, never listening: what a killed daemon leaves behind
    s.close()
    r = _say("--endpoint", f"ipc://{path}", "--connect-timeout", "1", "hello")
    assert r.returncode == 6
    assert f"the socket file {path} exists" in r.stderr


def _wav_frames(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 22050 and w.getsampwidth() == 2
        return w.getnframes()


def _start_slow_say(d: Any, out: Path) -> subprocess.Popen[bytes]:
    text = " ".join(f"This is sentence number {i} of a long story." for i in range(60))
    return subprocess.Popen(
        [*SAY, "--endpoint", d.control, "--wait", "-o", str(out), text],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_audio(out: Path, proc: subprocess.Popen[bytes]) -> None:
    def arrived() -> bool:
        assert proc.poll() is None, proc.communicate()
        return out.exists() and out.stat().st_size > 44 + 22050  # header + half a second of audio

    wait_until(arrived, 60, "audio in the output file", poll_s=0.1)


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_daemon_dying_mid_wait_is_noticed_and_audio_kept(tmp_path: Path, how: str) -> None:
    """kill -9 (the connection closes) or SIGSTOP (it stops answering) while a slow job speaks:
    ishowtts-say notices within its ping bound, says so, and the -o file holds the audio so far."""
    with running_daemon({"debug": {"chunk_delay_s": 0.5}}) as d:
        out = tmp_path / "partial.wav"
        proc = _start_slow_say(d, out)
        _wait_for_audio(out, proc)
        assert d.proc is not None
        t0 = time.monotonic()
        if how == "killed":
            d.proc.kill()
        else:
            d.signal(signal.SIGSTOP)
        try:
            _, err = proc.communicate(timeout=30)
            noticed = time.monotonic() - t0
        finally:
            if how == "hung":
                d.signal(signal.SIGCONT)
        stderr = err.decode()
        assert proc.returncode == 6, stderr
        assert ("went away" if how == "killed" else "stopped answering") in stderr
        assert "audio received so far" in stderr and str(out) in stderr
        assert noticed < (5 if how == "killed" else 12)
        assert _wav_frames(out) > 22050 // 2
