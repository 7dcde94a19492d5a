"""Settings that validated but could not work: endpoints, voices, TOML errors, the pid file.

Each case is run the way it was found: ``ishowttsd --check-config`` (exit 2, the file and the key
named) or the real daemon started from a config file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import tomlkit
import zmq
from support import base_settings, deep_merge, short_tmpdir
from waits import wait_until

from ishowttsd import config
from ishowttsd.paths import IPC_PATH_MAX

DAEMON = [sys.executable, "-m", "ishowttsd.daemon"]


def _check(d: Path, settings: dict[str, Any], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cfg = d / "check.toml"
    cfg.write_text(tomlkit.dumps(settings))
    return subprocess.run(
        [*DAEMON, "--config", str(cfg), "--check-config"],
        capture_output=True, text=True, timeout=60, cwd=cwd or d,
    )  # fmt: skip


def _refused(r: subprocess.CompletedProcess[str], d: Path, key: str, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert f"{d / 'check.toml'}: {key}: " in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


# -- endpoints (issue 16 item 3) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zmq_table", "key", "words"),
    [
        ({"control": "inproc://ishowtts"}, "zmq.control", ("inside the daemon's own process",)),
        ({"pcm": "inproc://x"}, "zmq.pcm", ("no client could reach it",)),
        ({"ingest_connect": ["inproc://bot"]}, "zmq.ingest_connect[0]", ("inproc",)),
        ({"control": "ipc:///tmp/" + "x" * 120 + ".sock"}, "zmq.control", (f"at most {IPC_PATH_MAX}",)),
        ({"ingest": "ipc://*"}, "zmq.ingest", ("wildcard",)),
        ({"pcm": "{control}"}, "zmq.pcm", ("also zmq.control's endpoint",)),
        ({"ingest_connect": ["{ingest}"]}, "zmq.ingest_connect[0]", ("also zmq.ingest's endpoint",)),
    ],
)
def test_endpoints_that_cannot_work_are_refused_by_check_config(
    zmq_table: dict[str, Any], key: str, words: tuple[str, ...]
) -> None:
    d = short_tmpdir()
    base = base_settings(d)
    filled = {
        k: ([x.format(**base["zmq"]) for x in v] if isinstance(v, list) else v.format(**base["zmq"]))
        for k, v in zmq_table.items()
    }
    _refused(_check(d, deep_merge(base, {"zmq": filled})), d, key, *words)


def test_two_tcp_sockets_on_one_port_are_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert (
        subprocess.run([sys.executable, "-m", "ishowttsd.cli.keys", "--dir", str(keys), "init"]).returncode
        == 0
    )
    d = short_tmpdir()
    s = deep_merge(
        base_settings(d),
        {
            "zmq": {"control": "tcp://*:5599", "pcm": "tcp://127.0.0.1:5599"},
            "security": {"keys_dir": str(keys)},
        },
    )
    _refused(_check(d, s), d, "zmq.pcm", "tcp://127.0.0.1:5599", "zmq.control")


def test_a_relative_ipc_path_is_relative_to_the_config_file_not_the_working_directory() -> None:
    """etc/ishowtts.toml says so; under systemd the working directory is /."""
    d = short_tmpdir()
    etc = d / "etc"
    etc.mkdir()
    s = deep_merge(base_settings(d), {"zmq": {"control": "ipc://c.sock", "pcm": "ipc://run/p.sock"}})
    cfg = etc / "ishowtts.toml"
    cfg.write_text(tomlkit.dumps(s))
    assert config.load(cfg).zmq.control == f"ipc://{etc / 'c.sock'}"
    log = d / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*DAEMON, "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT, cwd="/"
        )
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"ipc://{etc / 'c.sock'}")
        dealer.send(b'{"op": "ping"}')
        assert dealer.poll(30000), log.read_text()[-2000:]
        assert b"pong" in dealer.recv()
        assert (etc / "run" / "p.sock").exists() and not Path("/c.sock").exists()
        dealer.close(0)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        ctx.term()


# -- TOML syntax, start-up errors, pid file (item 10) -------------------------------------------------------


def test_toml_syntax_error_names_one_absolute_path_and_one_position() -> None:
    d = short_tmpdir()
    (d / "bad.toml").write_text('[engine]\nkind = "piper"\nvoice = \n')
    r = subprocess.run([*DAEMON, "--config", "bad.toml", "--check-config"], capture_output=True, text=True,
                       timeout=60, cwd=d)  # fmt: skip
    assert r.returncode == 2
    line = r.stderr.strip()
    assert line.startswith(
        f"ishowttsd: invalid configuration: {d / 'bad.toml'}: line 3 column 9: not valid TOML"
    ), line
    assert line.count("line") == 1 and " col " not in line and line.count("bad.toml") == 1, line


def test_startup_errors_name_the_config_file() -> None:
    d = short_tmpdir()
    s = deep_merge(base_settings(d), {"piper": {"model": str(d / "missing.onnx")}})
    cfg = d / "ishowtts.toml"
    cfg.write_text(tomlkit.dumps(s))
    r = subprocess.run([*DAEMON, "--config", str(cfg)], capture_output=True, text=True, timeout=120, cwd=d)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "missing.onnx" in r.stderr and str(cfg) in r.stderr, r.stderr[-2000:]


def test_pid_file_is_written_and_removed_on_a_clean_stop() -> None:
    d = short_tmpdir()
    cfg = d / "ishowtts.toml"
    cfg.write_text(tomlkit.dumps(base_settings(d)))
    pid_file = d / ".run" / "ishowttsd.pid"
    with open(d / "log", "wb") as out:
        proc = subprocess.Popen([*DAEMON, "--config", str(cfg), "--pid-file", str(pid_file)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=d)  # fmt: skip

    def written() -> bool:
        assert proc.poll() is None, (d / "log").read_text()[-2000:]
        return pid_file.exists()

    wait_until(written, 30, "the pid file", lambda: (d / "log").read_text()[-2000:])
    assert pid_file.read_text().strip() == str(proc.pid)
    ctx: zmq.Context[Any] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(base_settings(d)["zmq"]["control"])
    dealer.send(b'{"op": "ping"}')
    assert dealer.poll(30000)  # serving: its signal handlers are in place
    dealer.close(0)
    ctx.term()
    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not pid_file.exists()


# -- voices (item 4) ----------------------------------------------------------------------------------------------


def _voice_settings(d: Path, ref: Path, kind: str = "f5") -> dict[str, Any]:
    return deep_merge(
        base_settings(d),
        {
            "engine": {"kind": kind},
            "voices": [{"id": "me", "ref_audio": str(ref), "ref_text": "Hello there."}],
        },
    )


def _tone(path: Path, seconds: float, amp: float, rate: int = 24000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (amp * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate)
    return path


def _bad_ref(d: Path, what: str) -> Path:
    p = d / f"{what}.wav"
    if what == "empty":
        p.write_bytes(b"")
    elif what == "text":
        p.write_text("not audio at all\n")
    elif what == "silent":
        _tone(p, 3.0, 0.0)
    elif what == "blip":
        _tone(p, 0.2, 0.3)
    return p


@pytest.mark.parametrize(
    ("what", "words"),
    [
        ("missing", "cannot be read"),
        ("empty", "is empty"),
        ("text", "not audio"),
        ("silent", "is silent"),
        ("blip", "under 0.5 s"),
    ],
)
def test_unusable_reference_audio_is_caught_by_check_config(what: str, words: str) -> None:
    d = short_tmpdir()
    ref = _bad_ref(d, what)
    for kind in ("f5", "auto", "piper"):  # --check-config checks every voice it is given
        _refused(_check(d, _voice_settings(d, ref, kind)), d, "voices[0].ref_audio", str(ref), words)


def test_a_good_reference_passes_and_f5_without_voices_does_not() -> None:
    d = short_tmpdir()
    ok = _check(d, _voice_settings(d, _tone(d / "ok.wav", 3.0, 0.3)))
    assert ok.returncode == 0, ok.stderr
    _refused(_check(d, deep_merge(base_settings(d), {"engine": {"kind": "f5"}})), d, "voices", "kind = 'f5'")


def test_a_broken_voice_stops_an_f5_start_with_exit_2_naming_file_and_key() -> None:
    d = short_tmpdir()
    s = _voice_settings(d, d / "gone.wav")
    cfg = d / "check.toml"
    cfg.write_text(tomlkit.dumps(s))
    r = subprocess.run([*DAEMON, "--config", str(cfg)], capture_output=True, text=True, timeout=60, cwd=d)
    _refused(r, d, "voices[0].ref_audio", "gone.wav")


def test_a_long_reference_is_cut_near_max_ref_s_not_at_half_of_it() -> None:
    """A 60 s recording of steady sound with max_ref_s = 12 used to keep 6 s (the quietest frame
    of 6-12 s was the first one); now the cut lies within the last 2 s before the limit."""
    pytest.importorskip("torch")
    from ishowttsd.engine.f5.refaudio import CUT_WINDOW_S, TAIL_PAD_S, prepare_wave

    rate = 24000
    t = np.arange(60 * rate) / rate
    steady = (0.2 * np.sin(2 * np.pi * 180 * t) * (1.2 + np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)
    wave, cut = prepare_wave(steady, rate, 12.0, 0.1)
    kept = len(wave) / rate - TAIL_PAD_S
    assert cut and 12.0 - CUT_WINDOW_S - 0.01 <= kept <= 12.0, kept
