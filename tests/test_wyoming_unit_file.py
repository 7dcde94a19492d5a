"""systemd/ishowtts-wyoming.service: what it must say, ``systemd-analyze verify`` and its security
exposure score (loopback only by default: the Wyoming protocol has no authentication)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import unitfiles
from unitfiles import one, staging_root, unit_items

from ishowttsd import paths
from ishowttsd.wyoming_server.cli import DEFAULT_URI, EXIT_CONFIG

UNIT = "ishowtts-wyoming.service"
ALL_UNITS = (UNIT, "ishowtts.service", "ishowtts-clocks.service")
EXPOSURE_GOAL = 2.5

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")


def test_unit_says_what_the_server_needs() -> None:
    u = unit_items(UNIT)
    assert "ishowtts.service" in one(u, "Wants").split() and "ishowtts.service" in one(u, "After").split()
    assert one(u, "User") == "ishowtts" and one(u, "Group") == "ishowtts"
    exec_start = one(u, "ExecStart").split()
    assert exec_start[0] == "/opt/ishowtts/venv/bin/ishowtts-wyoming"
    assert exec_start[exec_start.index("--uri") + 1] == DEFAULT_URI
    assert one(u, "Type") == "notify"
    assert one(u, "RestartPreventExitStatus").split() == [str(EXIT_CONFIG)]
    # Loopback only unless a drop-in widens it.
    assert one(u, "IPAddressDeny") == "any" and one(u, "IPAddressAllow") == "localhost"
    d = unit_items("ishowtts.service")
    runtime = "/run/" + one(d, "RuntimeDirectory")
    env = dict(e.split("=", 1) for e in u["Environment"])
    assert env["ISHOWTTS_CONTROL"] == paths.default_endpoint("control", {"RUNTIME_DIRECTORY": runtime})
    assert "RuntimeDirectory" not in u, "stopping the server would delete the daemon's sockets"


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return unitfiles.analyze(root, f"/etc/systemd/system/{UNIT}", *args)


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    p = analyze(staging_root(tmp_path, ALL_UNITS), "verify")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p.stdout + p.stderr


@needs_analyze
def test_security_exposure(tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    score = unitfiles.exposure(staging_root(tmp_path, ALL_UNITS), f"/etc/systemd/system/{UNIT}")
    record_property("exposure", score)
    print(f"systemd-analyze security {UNIT}: exposure {score}")
    assert score <= EXPOSURE_GOAL
