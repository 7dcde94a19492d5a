"""The systemd units: required settings, ``systemd-analyze verify`` and the security exposure score.

``verify`` runs against a staging root that holds a copy of /usr/lib/systemd/system and stub
executables at exactly the paths the units name (verify fails on a missing ExecStart binary,
and only *warns* on misspelt keys, so any stderr output fails the test too).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from unitfiles import one, staging_root, unit_items

REPO = Path(__file__).resolve().parents[1]
UNITS = ("ishowtts.service", "ishowtts-clocks.service")
EXPOSURE_GOAL = 4.5

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def test_daemon_unit_settings() -> None:
    u = unit_items("ishowtts.service")
    assert one(u, "Type") == "notify"
    assert one(u, "Restart") == "on-failure"
    assert one(u, "WatchdogSec")
    assert one(u, "StartLimitIntervalSec") and one(u, "StartLimitBurst")
    assert one(u, "TimeoutStartSec") == "15min"
    assert one(u, "RuntimeDirectory") == "ishowtts"
    assert one(u, "StateDirectory") == "ishowtts"
    assert one(u, "CacheDirectory") == "ishowtts"
    assert one(u, "User") == "ishowtts"
    assert set(one(u, "SupplementaryGroups").split()) >= {"audio", "video", "render"}
    assert "ishowtts-clocks.service" in one(u, "Wants").split()
    assert "ishowtts-clocks.service" in one(u, "After").split()
    assert one(u, "ExecStart").startswith("/opt/ishowtts/venv/bin/ishowttsd ")
    assert one(u, "RestartPreventExitStatus") == "2"  # the daemon's EXIT_CONFIG
    # What must not be there: PyTorch/Triton JIT, and device lists that could hide the GPU or ALSA.
    for key in ("MemoryDenyWriteExecute", "PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert key not in u, f"{key}= would break PyTorch or device access"
    assert "PrivateUsers" not in u  # would drop the audio/video groups


def test_daemon_exit_code_matches_unit() -> None:
    from ishowttsd.daemon import lifecycle as daemon

    assert int(one(unit_items("ishowtts.service"), "RestartPreventExitStatus")) == daemon.EXIT_CONFIG


def test_clocks_unit_settings() -> None:
    u = unit_items("ishowtts-clocks.service")
    assert one(u, "Type") == "oneshot"
    assert one(u, "RemainAfterExit") == "yes"
    assert "ishowtts.service" in one(u, "Before").split()
    assert one(u, "ExecStart") == "/opt/ishowtts/venv/bin/ishowtts-clocks lock"
    assert one(u, "ExecStop") == "/opt/ishowtts/venv/bin/ishowtts-clocks restore"
    assert one(u, "StateDirectory") == "ishowtts-clocks"
    assert one(u, "PartOf") == "ishowtts.service"  # stopping the daemon restores the clocks
    assert "WantedBy" not in u  # started by the daemon's Wants= only
    assert "User" not in u  # nvpmodel/jetson_clocks need root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *(f"/etc/systemd/system/{u}" for u in units)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_analyze
def test_units_verify_cleanly(tmp_path: Path) -> None:
    root = staging_root(tmp_path, UNITS)
    p = verify(root, *UNITS)
    assert p.returncode == 0 and p.stderr == "" and p.stdout == "", p.stderr + p.stdout


@needs_analyze
def test_verify_catches_a_missing_executable_and_a_misspelt_key(tmp_path: Path) -> None:
    """The check above can fail: without the binaries, and with a typo (a warning only, rc 0)."""
    bare = staging_root(tmp_path / "a", UNITS, with_executables=False)
    p = verify(bare, "ishowtts.service")
    assert p.returncode != 0 and "ishowttsd" in p.stderr
    root = staging_root(tmp_path / "b", UNITS)
    unit = root / "etc/systemd/system/ishowtts.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    p = verify(root, "ishowtts.service")
    assert "WatchdogSecs" in p.stderr


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_security_exposure(name: str, tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    root = staging_root(tmp_path, UNITS)
    p = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", f"/etc/systemd/system/{name}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout + p.stderr)
    assert m, p.stdout[-2000:] + p.stderr
    score = float(m.group(1))
    record_property("exposure", score)
    print(f"systemd-analyze security {name}: exposure {score}")
    assert score <= EXPOSURE_GOAL
