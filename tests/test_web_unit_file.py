"""systemd/ishowtts-web.service: what it must say, ``systemd-analyze verify`` (also with the LAN
drop-in documented in docs/WEB.md) and its security exposure score."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import unitfiles
from unitfiles import one, staging_root, unit_items

from ishowttsd import config, paths
from ishowttsd.web.cli import EXIT_CONFIG
from ishowttsd.web.settings import DEFAULT_LISTEN

REPO = Path(__file__).resolve().parents[1]
UNIT = "ishowtts-web.service"
ALL_UNITS = (UNIT, "ishowtts.service", "ishowtts-clocks.service")
EXPOSURE_GOAL = 2.5

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")


def lan_dropin() -> str:
    """The drop-in docs/WEB.md tells people to use for the LAN (between its markers)."""
    doc = (REPO / "docs" / "WEB.md").read_text()
    m = re.search(r"<!-- lan-dropin -->\s*```ini\n(.*?)```", doc, re.S)
    assert m, "docs/WEB.md lost its LAN drop-in"
    return m.group(1)


def test_unit_says_what_the_gateway_needs() -> None:
    u = unit_items(UNIT)
    assert "ishowtts.service" in one(u, "Wants").split() and "ishowtts.service" in one(u, "After").split()
    assert one(u, "User") == "ishowtts" and one(u, "Group") == "ishowtts"
    assert one(u, "ExecStart").split()[0] == "/opt/ishowtts/venv/bin/ishowtts-web"
    assert one(u, "RestartPreventExitStatus").split() == [str(EXIT_CONFIG)]
    assert one(u, "IPAddressDeny") == "any" and one(u, "IPAddressAllow") == "localhost"
    d = unit_items("ishowtts.service")
    runtime = "/run/" + one(d, "RuntimeDirectory")
    env = dict(e.split("=", 1) for e in u["Environment"])
    for name in ("control", "pcm"):
        assert env[f"ISHOWTTS_{name.upper()}"] == paths.default_endpoint(name, {"RUNTIME_DIRECTORY": runtime})
    assert "RuntimeDirectory" not in u, "stopping the gateway would delete the daemon's sockets"
    assert "StateDirectory" not in u
    # The secrets' default home is one of the two writable paths, inside the daemon's state dir.
    state = "/var/lib/" + one(d, "StateDirectory")
    assert env["STATE_DIRECTORY"] == state
    s = config.parse({"daemon": {"state_dir": str(paths.state_dir({"STATE_DIRECTORY": state}))}}, None)
    writable = one(u, "ReadWritePaths").split()
    assert writable == [f"{state}/web", f"{state}/voices"]
    assert s.web.token_file is not None and str(s.web.token_file.parent) in writable
    assert s.web.overlay_key_file is not None and str(s.web.overlay_key_file.parent) in writable
    assert DEFAULT_LISTEN.startswith("127.0.0.1:")


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return unitfiles.analyze(root, f"/etc/systemd/system/{UNIT}", *args)


@needs_analyze
def test_unit_and_the_lan_dropin_verify_cleanly(tmp_path: Path) -> None:
    root = staging_root(tmp_path, ALL_UNITS)
    p = analyze(root, "verify")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p.stdout + p.stderr
    dropin = root / "etc/systemd/system" / f"{UNIT}.d" / "lan.conf"
    dropin.parent.mkdir()
    dropin.write_text(lan_dropin())
    p = analyze(root, "verify")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p.stdout + p.stderr
    assert "--listen 0.0.0.0:" in lan_dropin() and "IPAddressAllow=" in lan_dropin()


@needs_analyze
def test_security_exposure(tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    score = unitfiles.exposure(staging_root(tmp_path, ALL_UNITS), f"/etc/systemd/system/{UNIT}")
    record_property("exposure", score)
    print(f"systemd-analyze security {UNIT}: exposure {score}")
    assert score <= EXPOSURE_GOAL
