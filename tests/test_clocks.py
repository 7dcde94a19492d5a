"""ishowtts-clocks against a fake Jetson root, with fake ``nvpmodel``/``jetson_clocks`` on PATH.

The fakes are the system edge: small shell scripts that append each call to a log file and
change the fake sysfs the way the real tools change the real one (``jetson_clocks`` pins the
GPU's cur_freq to max_freq; ``--store`` refuses, like the real prompt does, when its file exists).
The product (mode resolution, ordering, store-once, verification) runs for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ishowttsd.jetson import cli, clocks

REPO = Path(__file__).resolve().parents[1]

NVPMODEL_CONF = """\
< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online
< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=25W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=3 NAME=7W >
CPU_ONLINE CORE_0 1
< PM_CONFIG DEFAULT=0 >
"""

FAKE_NVPMODEL = r"""#!/bin/sh
echo "nvpmodel${*:+ $*}" >> "$FAKE_LOG"
state="$FAKE_ROOT/var/lib/nvpmodel/status"
case "$1" in
  -q) id=$(cat "$state")
      name=$(grep -o "ID=$id NAME=[^ >]*" "$FAKE_ROOT/etc/nvpmodel.conf" | cut -d= -f3)
      echo "NV Power Mode: $name"; echo "$id" ;;
  -m) [ -n "$FAKE_NVPMODEL_FAIL" ] && { echo "NVPM ERROR: failed"; exit 1; }; echo "$2" > "$state" ;;
esac
"""

FAKE_JETSON_CLOCKS = r"""#!/bin/sh
echo "jetson_clocks${*:+ $*}" >> "$FAKE_LOG"
gpu="$FAKE_ROOT/sys/class/devfreq/17000000.gpu"
case "$1" in
  --store)
    if [ -e "$2" ]; then
      printf 'File %s already exists. Overwrite it? [y/N] ' "$2"; read answer || exit 1
    fi
    cat "$gpu/cur_freq" > "$2" ;;
  --restore) cat "$2" > "$gpu/cur_freq" ;;
  "") [ -n "$FAKE_CLOCKS_STUCK" ] || cat "$gpu/max_freq" > "$gpu/cur_freq" ;;
esac
"""


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with only the fake tools (and the shell utilities they use)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in (("nvpmodel", FAKE_NVPMODEL), ("jetson_clocks", FAKE_JETSON_CLOCKS)):
        exe = bindir / name
        exe.write_text(body)
        exe.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    return bindir


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.log").read_text().splitlines()


@pytest.fixture
def jetson(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_bin: Path) -> Path:
    """A fake Orin Nano root: release file, nvpmodel.conf (MAXN_SUPER is id 2), GPU devfreq at 306 MHz."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    (root / "etc/nvpmodel.conf").write_text(NVPMODEL_CONF)
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    (root / "var/lib/nvpmodel/status").write_text("0\n")
    gpu = root / "sys/class/devfreq/17000000.gpu"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text("306000000\n")
    (gpu / "max_freq").write_text("1020000000\n")
    (gpu / "min_freq").write_text("306000000\n")
    # A non-GPU devfreq node that must not be mistaken for the GPU.
    other = root / "sys/class/devfreq/15340000.vic"
    other.mkdir(parents=True)
    (other / "cur_freq").write_text("115200000\n")
    (other / "max_freq").write_text("729600000\n")
    monkeypatch.setenv("FAKE_ROOT", str(root))
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    rc = cli.main([*argv, "--json", "--verify-timeout", "0.3"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_lock_order_mode_and_verification(
    jetson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, rep = run_cli(capsys, "lock", "--root", str(jetson))
    state = jetson / "var/lib/ishowtts-clocks"
    assert rc == 0, rep
    assert rep["ok"] is True
    assert rep["mode"] == {"id": 2, "name": "MAXN_SUPER"}
    assert calls(tmp_path) == [
        "nvpmodel -q",
        "nvpmodel -m 2",
        f"jetson_clocks --store {state}/l4t_dfs.conf",
        "jetson_clocks",
    ]
    gpu = rep["gpu"]
    assert isinstance(gpu, dict)
    assert gpu["node"].endswith("17000000.gpu")
    assert gpu["cur_hz"] == gpu["max_hz"] == 1020000000
    # The pre-lock state, kept for restore.
    assert (state / "l4t_dfs.conf").read_text().strip() == "306000000"
    assert (state / "nvpmodel.prev").read_text().strip() == "0"


def test_store_happens_once(jetson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "lock", "--root", str(jetson))[0] == 0
    # A second lock (e.g. the unit restarted without a restore): no second --store, which would
    # prompt (the fake fails on EOF like the real one waits) and would overwrite the pre-lock clocks.
    rc, rep = run_cli(capsys, "lock", "--root", str(jetson))
    assert rc == 0, rep
    stores = [c for c in calls(tmp_path) if c.startswith("jetson_clocks --store")]
    assert len(stores) == 1
    state = jetson / "var/lib/ishowtts-clocks"
    assert (state / "l4t_dfs.conf").read_text().strip() == "306000000"
    assert (state / "nvpmodel.prev").read_text().strip() == "0"  # not the MAXN id of the second run


def test_restore_undoes_lock(jetson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "lock", "--root", str(jetson))[0] == 0
    before = len(calls(tmp_path))
    rc, rep = run_cli(capsys, "restore", "--root", str(jetson))
    state = jetson / "var/lib/ishowtts-clocks"
    assert rc == 0, rep
    assert calls(tmp_path)[before:] == [f"jetson_clocks --restore {state}/l4t_dfs.conf", "nvpmodel -m 0"]
    assert (jetson / "sys/class/devfreq/17000000.gpu/cur_freq").read_text().strip() == "306000000"
    assert (jetson / "var/lib/nvpmodel/status").read_text().strip() == "0"
    assert rep["mode"] == {"id": 0, "name": "15W"}
    # Stored files are consumed, so the next lock stores afresh.
    assert not (state / "l4t_dfs.conf").exists()
    assert not (state / "nvpmodel.prev").exists()
    # Restoring again has nothing to do and runs nothing.
    n = len(calls(tmp_path))
    rc, rep = run_cli(capsys, "restore", "--root", str(jetson))
    assert rc == 0 and calls(tmp_path)[n:] == []


def test_verification_failure_is_reported(
    jetson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLOCKS_STUCK", "1")
    rc, rep = run_cli(capsys, "lock", "--root", str(jetson))
    assert rc == 1
    assert rep["ok"] is False
    problems = rep["problems"]
    assert isinstance(problems, list) and len(problems) == 1
    assert "not at maximum" in problems[0] and "cur_freq=306000000" in problems[0]
    assert "max_freq=1020000000" in problems[0]


def test_nvpmodel_failure_reported_but_clocks_still_locked(
    jetson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NVPMODEL_FAIL", "1")
    rc, rep = run_cli(capsys, "lock", "--root", str(jetson))
    assert rc == 1
    assert any("nvpmodel -m 2 failed" in p for p in rep["problems"])  # type: ignore[attr-defined]
    assert calls(tmp_path)[-1] == "jetson_clocks"


def test_missing_tool_changes_nothing(
    jetson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_bin: Path
) -> None:
    (fake_bin / "jetson_clocks").unlink()
    rc, rep = run_cli(capsys, "lock", "--root", str(jetson))
    assert rc == 1
    assert "jetson_clocks: not found on PATH" in rep["problems"][0]  # type: ignore[index]
    assert calls(tmp_path) == []


def test_no_maxn_mode(jetson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (jetson / "etc/nvpmodel.conf").write_text("< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=7W >\n")
    rc, rep = run_cli(capsys, "lock", "--root", str(jetson))
    assert rc == 1
    assert "no MAXN mode (modes: 0=15W, 1=7W)" in rep["problems"][0]  # type: ignore[index]
    assert calls(tmp_path) == []


def test_maxn_preferred_names() -> None:
    assert clocks.max_mode({0: "MAXN", 1: "15W"}) == (0, "MAXN")
    assert clocks.max_mode({0: "MAXN", 2: "MAXN_SUPER"}) == (2, "MAXN_SUPER")
    assert clocks.max_mode({0: "15W"}) is None


def test_status_on_jetson(jetson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, rep = run_cli(capsys, "status", "--root", str(jetson))
    assert rc == 0
    assert rep["mode"] == {"id": 0, "name": "15W"}
    assert rep["stored"] is False
    assert rep["gpu"]["at_max"] is False  # type: ignore[index]
    assert calls(tmp_path) == ["nvpmodel -q"]


def test_jetson_detected_by_device_tree(tmp_path: Path) -> None:
    root = tmp_path / "dt"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/compatible").write_bytes(b"nvidia,p3768-0000+p3767-0005\0nvidia,tegra234\0")
    assert clocks.is_jetson(root)[0] is True
    (root / "proc/device-tree/compatible").write_bytes(b"raspberrypi,5-model-b\0brcm,bcm2712\0")
    assert clocks.is_jetson(root)[0] is False


@pytest.mark.parametrize("action", ["lock", "restore", "status"])
def test_not_a_jetson_runs_nothing(
    action: str, tmp_path: Path, fake_bin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """This host (the real root) and an empty root: say so, exit 0, and run no command at all."""
    assert not Path("/etc/nv_tegra_release").exists(), "this test expects a non-Jetson host"
    empty = tmp_path / "empty"
    empty.mkdir()
    for root in ("/", str(empty)):
        rc = cli.main([action, "--root", root, "--state-dir", str(tmp_path / "state")])
        out = capsys.readouterr().out
        assert rc == 0
        assert out.startswith("not a Jetson")
    assert calls(tmp_path) == []
    assert not (tmp_path / "state").exists()


def test_console_entry_point_on_this_host(tmp_path: Path, fake_bin: Path) -> None:
    """The module as the unit runs it (a real process, the real root): nothing to do, exit 0."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run(
        [sys.executable, "-m", "ishowttsd.jetson.cli", "lock"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "not a Jetson" in p.stdout
    assert calls(tmp_path) == []


def test_gpu_node_found_by_device_tree_name(tmp_path: Path) -> None:
    """A devfreq directory with an unfamiliar name but of_node/name "gpu" (how jetson_clocks finds it)."""
    node = tmp_path / "sys/class/devfreq/57000000.host"
    (node / "device/of_node").mkdir(parents=True)
    (node / "cur_freq").write_text("76800000\n")
    (node / "max_freq").write_text("921600000\n")
    assert clocks.gpu_devfreq(tmp_path) is None
    (node / "device/of_node/name").write_bytes(b"gpu\0")
    assert clocks.gpu_devfreq(tmp_path) == node
    g = clocks.read_gpu_freq(tmp_path)
    assert g is not None and g.at_max is False
