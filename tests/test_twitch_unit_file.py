"""systemd/ishowtts-twitch@.service: what it must say, ``systemd-analyze verify`` on an instance,
and its security exposure score.

``verify`` runs on a staging root with stub executables at the units' paths: it fails on a missing
ExecStart binary and only *warns* (rc 0) on a misspelt key, so any output fails the check.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from unitfiles import one, staging_root, unit_items

from ishowttsd import paths
from ishowttsd.twitch.client import EXIT_CONFIG, EXIT_LOGIN_REFUSED

REPO = Path(__file__).resolve().parents[1]
UNIT = "ishowtts-twitch@.service"
INSTANCE = "ishowtts-twitch@somechannel.service"
ALL_UNITS = (UNIT, "ishowtts.service", "ishowtts-clocks.service")
EXPOSURE_GOAL = 2.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")


def test_unit_says_what_the_bridge_needs() -> None:
    u = unit_items(UNIT)
    assert "ishowtts.service" in one(u, "Wants").split() and "ishowtts.service" in one(u, "After").split()
    assert one(u, "User") == "ishowtts" and one(u, "Group") == "ishowtts"
    exec_start = one(u, "ExecStart").split()
    assert exec_start[0] == "/opt/ishowtts/venv/bin/ishowtts-twitch"
    assert exec_start[exec_start.index("--channel") + 1] == "%i"
    assert one(u, "Type") == "notify" and one(u, "WatchdogSec")
    assert set(one(u, "RestartPreventExitStatus").split()) == {str(EXIT_CONFIG), str(EXIT_LOGIN_REFUSED)}
    # The ingest socket lives in the daemon's RuntimeDirectory, where its default endpoint points.
    d = unit_items("ishowtts.service")
    runtime = "/run/" + one(d, "RuntimeDirectory")
    env = dict(e.split("=", 1) for e in u["Environment"])
    assert env["ISHOWTTS_INGEST"] == paths.default_endpoint("ingest", {"RUNTIME_DIRECTORY": runtime})
    assert "RuntimeDirectory" not in u, "stopping the bridge would delete the daemon's sockets"
    for key in (
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "RestrictAddressFamilies",
        "SystemCallFilter",
    ):
        assert key in u


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}", INSTANCE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_analyze
def test_instance_verifies_cleanly_and_the_check_can_fail(tmp_path: Path) -> None:
    root = staging_root(tmp_path / "ok", ALL_UNITS)
    p = analyze(root, "verify")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p.stdout + p.stderr
    unit = root / "etc/systemd/system" / UNIT
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    assert "WatchdogSecs" in analyze(root, "verify").stderr
    bare = staging_root(tmp_path / "bare", ALL_UNITS, with_executables=False)
    p = analyze(bare, "verify")
    assert p.returncode != 0 and "ishowtts-twitch" in p.stderr


@needs_analyze
def test_security_exposure(tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    p = analyze(staging_root(tmp_path, ALL_UNITS), "security", "--offline=yes")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout + p.stderr)
    assert m, p.stdout[-2000:] + p.stderr
    score = float(m.group(1))
    record_property("exposure", score)
    print(f"systemd-analyze security {INSTANCE}: exposure {score}")
    assert score <= EXPOSURE_GOAL
