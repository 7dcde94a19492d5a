from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ishowttsd import config, paths
from ishowttsd.config import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _load(tmp_path: Path, text: str) -> config.Settings:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return config.load(p)


def test_shipped_config_equals_builtin_defaults() -> None:
    shipped = config.load(REPO / "etc" / "ishowtts.toml")
    assert shipped == config.replace(config.load(None), file=shipped.file)


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = _load(tmp_path, '[engine]\nkind = "piper"\n')
    with pytest.raises(AttributeError):
        s.engine.kind = "f5"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[engine]\nkind = "espeak"\n', "engine.kind", "must be one of"),
        ('[audio]\nsinks = ["alsa", "hdmi"]\n', "audio.sinks", "unknown sink"),
        ("[queue]\nmax_jobs = 0\n", "queue.max_jobs", ">= 1"),
        ('[queue]\nmax_jobs = "10"\n', "queue.max_jobs", "expected an integer"),
        ('[zmq]\ncontrol = "/run/x.sock"\n', "zmq.control", "ZeroMQ endpoint"),
        ('[zmq]\ningest_connect = ["tcp://a:1", "nope"]\n', "zmq.ingest_connect[1]", "ZeroMQ endpoint"),
        ('[engine]\nknid = "piper"\n', "engine.knid", "did you mean 'kind'"),
        ("[bogus]\nx = 1\n", "bogus", "unknown key"),
        ("[audio]\ndevice = true\n", "audio.device", "device name"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text)
    assert e.value.key == key
    assert str(tmp_path / "c.toml") in str(e.value)
    assert words in str(e.value)


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, "[engine]\nkind = \n")
    assert "line 2" in str(e.value)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    s = _load(tmp_path, '[piper]\nmodel = "voices/x.onnx"\n')
    assert s.piper.model == tmp_path / "voices" / "x.onnx"


def test_runtime_dir_resolution_order() -> None:
    assert paths.runtime_dir({"RUNTIME_DIRECTORY": "/run/ishowtts", "XDG_RUNTIME_DIR": "/x"}) == Path(
        "/run/ishowtts"
    )
    assert paths.runtime_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/ishowtts")
    import os

    assert paths.runtime_dir({}) == Path(f"/tmp/ishowtts-{os.getuid()}")
    assert paths.control_endpoint({"ISHOWTTS_CONTROL": "tcp://127.0.0.1:9"}) == "tcp://127.0.0.1:9"
    assert paths.control_endpoint({"XDG_RUNTIME_DIR": "/r"}) == "ipc:///r/ishowtts/control.sock"


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[engine]\nkind = "piper"\n')
    r = subprocess.run(
        [sys.executable, "-m", "ishowttsd.daemon", "--check-config", "--config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "configuration OK" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[audio]\nsinks = 3\n")
    r = subprocess.run(
        [sys.executable, "-m", "ishowttsd.daemon", "--check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "audio.sinks" in r.stderr and str(bad) in r.stderr
