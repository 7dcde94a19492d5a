"""``sudo ./install.sh`` on the real root — inside a private mount namespace.

/etc, /opt, /usr/lib, /usr/local, /var and /run are overlaid with temp dirs, so the install takes
its real-root branches (``systemd-sysusers``/``systemd-tmpfiles`` on /, chgrp by name, systemd
detection through /run/systemd/system) while every write lands in the overlay's upper dir and the
host stays untouched. ``systemctl`` and ``apt-get`` are fake executables that log their calls
(there is no systemd to talk to here; the fake apt-get keeps a CI box's /usr as it is).
``--skip-venv`` as in test_install.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OVERLAID = ("etc", "opt", "usr/lib", "usr/local", "var", "run")


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    p = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return (
        p.returncode == 0
        and bool(shutil.which("systemd-sysusers"))
        and bool(shutil.which("systemd-tmpfiles"))
    )


pytestmark = pytest.mark.skipif(
    not _namespaces_work(), reason="needs root, unshare -m, overlayfs, systemd-sysusers"
)

FAKE = """#!/bin/sh
echo "$(basename "$0")${*:+ $*}" >> "$FAKE_LOG"
"""


class Box:
    """Overlay upper dirs that persist across runs: each run sees what the previous ones wrote."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name in ("systemctl", "apt-get"):
            (self.bin / name).write_text(FAKE)
            (self.bin / name).chmod(0o755)
        self.log = tmp / "calls.log"
        self.log.touch()

    def upper(self, d: str) -> Path:
        return self.tmp / (d.replace("/", "_") + ".u")

    def run(self, *args: str, systemd: bool) -> subprocess.CompletedProcess[str]:
        mounts = []
        for d in OVERLAID:
            u, w = self.upper(d), self.tmp / (d.replace("/", "_") + ".w")
            u.mkdir(exist_ok=True)
            shutil.rmtree(w, ignore_errors=True)
            w.mkdir()
            mounts.append(f"mount -t overlay overlay -o lowerdir=/{d},upperdir={u},workdir={w} /{d}")
        pid1 = "mkdir -p /run/systemd/system" if systemd else "rm -rf /run/systemd/system"
        script = " && ".join([*mounts, pid1, f'exec "{REPO}/install.sh" "$@"'])
        env = {
            **{k: v for k, v in os.environ.items() if k != "ISHOWTTS_SKIP_VENV"},
            "PATH": f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin",
            "FAKE_LOG": str(self.log),
        }
        return subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "install.sh", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


def test_real_root_install_with_systemd_then_uninstall(tmp_path: Path) -> None:
    box = Box(tmp_path)
    p = box.run("--skip-venv", systemd=True)
    assert p.returncode == 0, p.stderr
    etc = box.upper("etc")
    assert (etc / "ishowtts/ishowtts.toml").read_bytes() == (REPO / "etc/ishowtts.toml").read_bytes()
    assert (etc / "systemd/system/ishowtts.service").is_file()
    assert (etc / "systemd/system/ishowtts-clocks.service").is_file()
    assert (box.upper("usr/lib") / "sysusers.d/ishowtts.conf").is_file()
    passwd = (etc / "passwd").read_text()
    user = next(ln.split(":") for ln in passwd.splitlines() if ln.startswith("ishowtts:"))
    assert user[5] == "/var/lib/ishowtts"
    groups = {ln.split(":")[0]: ln.split(":") for ln in (etc / "group").read_text().splitlines()}
    for g in ("audio", "video", "render"):
        assert "ishowtts" in groups[g][3].split(","), g
    conf_gid = (etc / "ishowtts/ishowtts.toml").stat().st_gid
    assert conf_gid == int(groups["ishowtts"][2])
    var = box.upper("var")
    assert (var / "lib/ishowtts").stat().st_uid == int(user[2])
    assert (var / "cache/ishowtts").stat().st_uid == int(user[2])
    # systemd as PID 1: reload, then enable the daemon (the clocks unit comes with it).
    assert box.calls() == ["systemctl daemon-reload", "systemctl enable ishowtts.service"]
    # Nothing on the host itself.
    assert not Path("/etc/ishowtts").exists()
    assert "ishowtts:" not in Path("/etc/passwd").read_text()

    # Idempotent: the second run changes no file and makes the same two calls.
    before = sorted(str(q.relative_to(tmp_path)) for q in tmp_path.rglob("*") if ".w" not in q.parts[-1])
    p = box.run("--skip-venv", systemd=True)
    assert p.returncode == 0, p.stderr
    after = sorted(str(q.relative_to(tmp_path)) for q in tmp_path.rglob("*") if ".w" not in q.parts[-1])
    assert after == before
    assert box.calls()[2:] == ["systemctl daemon-reload", "systemctl enable ishowtts.service"]

    # Uninstall: stop and disable both in one transaction (daemon first, then the clock restore),
    # remove the units, reload; config and the user stay.
    p = box.run("--uninstall", systemd=True)
    assert p.returncode == 0, p.stderr
    calls = box.calls()[4:]
    assert calls[0] == "systemctl disable --now ishowtts-clocks.service ishowtts.service"
    assert calls[-1] == "systemctl daemon-reload"
    assert not (etc / "systemd/system/ishowtts.service").exists()
    assert (etc / "ishowtts/ishowtts.toml").exists()
    assert "ishowtts:" in (etc / "passwd").read_text()


def test_real_root_without_systemd_installs_but_does_not_enable(tmp_path: Path) -> None:
    box = Box(tmp_path)
    p = box.run("--skip-venv", systemd=False)
    assert p.returncode == 0, p.stderr
    assert "systemd is not running" in p.stderr
    assert (box.upper("etc") / "systemd/system/ishowtts.service").is_file()
    assert [c for c in box.calls() if c.startswith("systemctl")] == []
