"""``install.sh --root DIR``: the staged system install, for real (bash, systemd-sysusers,
systemd-tmpfiles, offline ``systemctl --root enable``), into a temp dir.

The fast tests pass ``--skip-venv``: everything but the Python environment. The ``long`` test
builds the venv too (minutes; run with ``-m long``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = ("ishowtts.service", "ishowtts-clocks.service")

needs_systemd_tools = pytest.mark.skipif(
    not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles") and shutil.which("systemctl")),
    reason="systemd-sysusers, systemd-tmpfiles and systemctl are needed to stage the install",
)


def install(
    root: Path, *args: str, skip_venv: bool = True, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ISHOWTTS_SKIP_VENV"}
    argv = [str(REPO / "install.sh"), "--root", str(root), *args]
    if skip_venv:
        argv.append("--skip-venv")
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def manifest(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every path with (content hash or link target, mode, uid, gid)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            what = "-> " + os.readlink(p)
        elif p.is_dir():
            what = "dir"
        else:
            what = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        out[str(p.relative_to(root))] = (what, st.st_mode, st.st_uid, st.st_gid)
    return out


def passwd(root: Path, name: str) -> list[str]:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":")
    raise AssertionError(f"no user {name} in {root}/etc/passwd")


def group_members(root: Path, name: str) -> tuple[int, list[str]]:
    for line in (root / "etc/group").read_text().splitlines():
        f = line.split(":")
        if f[0] == name:
            return int(f[2]), [m for m in f[3].split(",") if m]
    raise AssertionError(f"no group {name}")


@needs_systemd_tools
def test_staged_install_tree(tmp_path: Path) -> None:
    root = tmp_path / "r"
    p = install(root)
    assert "ishowtts-models fetch" in p.stderr  # tells the user; never fetches weights itself
    # Units, verbatim; the daemon enabled through its [Install] section (an offline .wants link),
    # the clocks unit pulled in by the daemon's Wants= only.
    for u in UNITS:
        assert (root / "etc/systemd/system" / u).read_bytes() == (REPO / "systemd" / u).read_bytes()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "ishowtts.service") == "/etc/systemd/system/ishowtts.service"
    assert sorted(p.name for p in wants.iterdir()) == ["ishowtts.service"]
    # Config: the documented default, readable by the daemon's group only.
    conf = root / "etc/ishowtts/ishowtts.toml"
    assert conf.read_bytes() == (REPO / "etc/ishowtts.toml").read_bytes()
    assert conf.stat().st_mode & 0o777 == 0o640
    # User and groups (the unit's User= and SupplementaryGroups=).
    user = passwd(root, "ishowtts")
    assert user[5] == "/var/lib/ishowtts" and user[6].endswith("nologin")
    uid = int(user[2])
    gid, _ = group_members(root, "ishowtts")
    assert conf.stat().st_gid == gid
    for g in ("audio", "video", "render"):
        assert "ishowtts" in group_members(root, g)[1]
    # State (weights, journal) and cache dirs owned by the user; the clocks' state root-only.
    for d in ("var/lib/ishowtts", "var/cache/ishowtts"):
        st = (root / d).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o750)
    assert (root / "var/lib/ishowtts-clocks").stat().st_mode & 0o777 == 0o700
    # The web gateway's two writable paths (its unit's ReadWritePaths=): its secrets and the voices.
    st = (root / "var/lib/ishowtts/web").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o750)
    st = (root / "var/lib/ishowtts/voices").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, 0o2770)
    web = root / "etc/systemd/system/ishowtts-web.service"
    assert web.read_bytes() == (REPO / "systemd/ishowtts-web.service").read_bytes()
    assert (root / "opt/ishowtts/share/WEB.md").is_file()
    assert (root / "opt/ishowtts/share/DASHBOARD.md").is_file()
    assert "ISHOWTTS_CONTROL" in (root / "etc/profile.d/ishowtts.sh").read_text()
    assert (root / "opt/ishowtts/share/APPLIANCE.md").is_file()
    # Nothing outside the staging root: the host's own files are untouched.
    assert not Path("/etc/systemd/system/ishowtts.service").exists()


@needs_systemd_tools
def test_install_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "r"
    install(root)
    first = manifest(root)
    install(root)
    assert manifest(root) == first


@needs_systemd_tools
def test_edited_config_is_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "r"
    install(root)
    conf = root / "etc/ishowtts/ishowtts.toml"
    edited = conf.read_text() + '\n[engine]\nkind = "piper"\n'
    conf.write_text(edited)
    install(root)
    assert conf.read_text() == edited
    assert not (root / "etc/ishowtts/ishowtts.toml.new").exists()  # the default did not change
    # A new version ships a different default: the edit stays, the new default lands beside it.
    (root / "opt/ishowtts/share/ishowtts.toml.default").write_text("# an older default\n")
    p = install(root)
    assert conf.read_text() == edited
    assert (root / "etc/ishowtts/ishowtts.toml.new").read_bytes() == (REPO / "etc/ishowtts.toml").read_bytes()
    assert "kept your edited" in p.stderr


@needs_systemd_tools
def test_unedited_old_default_is_updated(tmp_path: Path) -> None:
    root = tmp_path / "r"
    install(root)
    old = "# the default of an older version\n"
    (root / "etc/ishowtts/ishowtts.toml").write_text(old)
    (root / "opt/ishowtts/share/ishowtts.toml.default").write_text(old)
    install(root)
    assert (root / "etc/ishowtts/ishowtts.toml").read_bytes() == (REPO / "etc/ishowtts.toml").read_bytes()
    assert not (root / "etc/ishowtts/ishowtts.toml.new").exists()


@needs_systemd_tools
def test_uninstall_keeps_config_and_weights_purge_removes_them(tmp_path: Path) -> None:
    root = tmp_path / "r"
    install(root)
    weights = root / "var/lib/ishowtts/models/model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    (root / "usr/local/bin/ishowtts-say").symlink_to("/opt/ishowtts/venv/bin/ishowtts-say")
    (root / "usr/local/bin/ishowtts-other").symlink_to("/usr/bin/true")  # not ours: stays
    install(root, "--uninstall", skip_venv=False)
    for u in UNITS:
        assert not (root / "etc/systemd/system" / u).exists()
        assert not (root / "etc/systemd/system/multi-user.target.wants" / u).is_symlink()
    assert not (root / "opt/ishowtts").exists()
    assert not (root / "usr/local/bin/ishowtts-say").is_symlink()
    assert (root / "usr/local/bin/ishowtts-other").is_symlink()
    assert (root / "etc/ishowtts/ishowtts.toml").exists()
    assert weights.read_bytes() == b"weights"
    install(root, "--uninstall", "--purge", skip_venv=False)
    assert not (root / "etc/ishowtts").exists()
    assert not (root / "var/lib/ishowtts").exists()
    assert not (root / "var/cache/ishowtts").exists()
    assert not (root / "usr/lib/sysusers.d/ishowtts.conf").exists()


def test_unknown_option_fails() -> None:
    p = subprocess.run([str(REPO / "install.sh"), "--bogus"], capture_output=True, text=True, check=False)
    assert p.returncode != 0 and "unknown option --bogus" in p.stderr


@pytest.mark.long
@pytest.mark.timeout(1800)
@needs_systemd_tools
def test_staged_install_with_venv(tmp_path: Path) -> None:
    """The whole thing, venv included: the commands the units name exist and run."""
    root = tmp_path / "r"
    install(root, skip_venv=False, timeout=1800)
    venv_bin = root / "opt/ishowtts/venv/bin"
    for exe in ("ishowttsd", "ishowtts-clocks", "ishowtts-say"):
        assert os.access(venv_bin / exe, os.X_OK), exe
        assert os.readlink(root / "usr/local/bin" / exe) == f"/opt/ishowtts/venv/bin/{exe}"
    conf = root / "etc/ishowtts/ishowtts.toml"
    p = subprocess.run(
        [str(venv_bin / "ishowttsd"), "--check-config", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    p = subprocess.run(
        [str(venv_bin / "ishowtts-clocks"), "status"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0 and "not a Jetson" in p.stdout
    first = manifest(root)
    install(root, skip_venv=False, timeout=1800)  # the venv is up to date: nothing changes
    assert manifest(root) == first
    # The installed units verify against the installed executables (only kill is a stub).
    if shutil.which("systemd-analyze"):
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        (root / "bin").mkdir(exist_ok=True)
        (root / "bin/kill").write_text("#!/bin/sh\n")
        (root / "bin/kill").chmod(0o755)
        p = subprocess.run(
            ["systemd-analyze", "verify", f"--root={root}", *(f"/etc/systemd/system/{u}" for u in UNITS)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert p.returncode == 0 and p.stderr == "", p.stderr
