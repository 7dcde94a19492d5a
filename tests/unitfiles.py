"""Reading systemd unit files, and a staging root for ``systemd-analyze --root`` (shared by the
unit tests of the daemon, clocks and Twitch bridge units)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def unit_items(name: str) -> dict[str, list[str]]:
    """``Key -> [values]`` over all sections (keys are unique across our units' sections)."""
    out: dict[str, list[str]] = {}
    for raw in (REPO / "systemd" / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def one(items: dict[str, list[str]], key: str) -> str:
    assert key in items, f"missing {key}="
    return items[key][-1]


def exec_paths(name: str) -> list[str]:
    paths = []
    for key, values in unit_items(name).items():
        if key.startswith("Exec"):
            for v in values:
                paths.append(v.lstrip("-@:+!").split()[0])
    return paths


def staging_root(tmp: Path, units: Iterable[str], with_executables: bool = True) -> Path:
    """A copy of /usr/lib/systemd/system, our units in /etc/systemd/system, and (unless told
    otherwise) stub executables at exactly the paths the units name: ``verify`` fails on a
    missing ExecStart binary."""
    root = tmp / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in units:
        shutil.copy(REPO / "systemd" / name, root / "etc/systemd/system" / name)
        if with_executables:
            for exe in exec_paths(name):
                stub = root / exe.lstrip("/")
                stub.parent.mkdir(parents=True, exist_ok=True)
                stub.write_text("#!/bin/sh\nexit 0\n")
                stub.chmod(0o755)
    return root


def analyze(root: Path, unit: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze ARGS --root=ROOT UNIT`` (a unit name or a path inside the root)."""
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}", unit],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def exposure(root: Path, unit: str) -> float:
    """``systemd-analyze security --offline=yes``'s overall exposure score of ``unit``."""
    p = analyze(root, unit, "security", "--offline=yes")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout + p.stderr)
    assert m, p.stdout[-2000:] + p.stderr
    return float(m.group(1))
