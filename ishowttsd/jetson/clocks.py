"""Jetson clock lock: MAXN power mode + ``jetson_clocks``, verified from sysfs, and undone on stop.

Why: with DVFS left on, the GPU clock follows load and F5's real-time factor varies by about
±16% from one line to the next; locked at the maximum it is steady, which the RTF watchdog
relies on.

Everything read from the file system goes through ``root`` (``--root DIR``), so tests run
against a fake Jetson tree; the two NVIDIA tools (``nvpmodel``, ``jetson_clocks``) are found
on ``PATH``. On a host that is not a Jetson nothing is run at all: no NVIDIA tool, and never
``nvidia-smi`` clock changes on a desktop GPU.

Order (lock): ``nvpmodel -m <MAXN id>``, then ``jetson_clocks --store FILE`` once (only when
FILE does not exist yet: the tool prompts otherwise, and a second store would overwrite the
pre-lock clocks with the locked ones), then ``jetson_clocks``. The store comes *after* the mode
change because the stored file holds that mode's frequency ranges; restoring it under another
mode would be wrong. Restore is the mirror image: ``jetson_clocks --restore FILE`` while still
in MAXN, then ``nvpmodel -m <previous id>``, then both stored files are removed so the next
lock stores afresh.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ishowttsd import log

_log = log.get(__name__)

MAX_MODE_NAMES = ("MAXN_SUPER", "MAXN")
"""Preferred first: Orin Nano/NX with the "super" firmware call their top mode MAXN_SUPER."""
DEFAULT_STATE_DIR = Path("/var/lib/ishowtts-clocks")
STORE_FILE = "l4t_dfs.conf"
PREV_MODE_FILE = "nvpmodel.prev"
FREQ_TOLERANCE = 0.005
"""cur_freq counts as "at maximum" within 0.5% (some boards round the reported rate)."""
COMMAND_TIMEOUT_S = 60.0

_GPU_NODE = re.compile(r"(^|\.)(gpu|ga10b|gv11b|gp10b|gm20b|gb10b)$")
"""devfreq node names of Jetson GPUs: Orin 17000000.gpu / .ga10b, Xavier .gv11b, TX2 .gp10b, Nano ..."""
_POWER_MODEL = re.compile(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)\s*>")
_QUERY_NAME = re.compile(r"NV Power Mode:\s*(\S+)")


class ClocksError(RuntimeError):
    """Lock/restore cannot proceed (a missing tool or file); the message names it."""


# -- reading the (possibly fake) root ---------------------------------------------------------


def _under(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


def is_jetson(root: Path) -> tuple[bool, str]:
    """Whether ``root`` is a Jetson, and the evidence (or what was looked for)."""
    release = _under(root, "/etc/nv_tegra_release")
    if release.is_file():
        return True, str(release)
    compat = _under(root, "/proc/device-tree/compatible")
    try:
        # NUL-separated list of strings, e.g. b"nvidia,p3768-0000+p3767-0005\0nvidia,tegra234\0"
        names = compat.read_bytes().split(b"\0")
    except OSError:
        names = []
    if any(n.startswith(b"nvidia,tegra") for n in names):
        return True, str(compat)
    return False, f"neither {release} nor an nvidia,tegra entry in {compat}"


def read_modes(root: Path) -> dict[int, str]:
    """nvpmodel power modes ``{id: name}`` from ``<root>/etc/nvpmodel.conf``."""
    conf = _under(root, "/etc/nvpmodel.conf")
    try:
        text = conf.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ClocksError(f"{conf}: cannot read the nvpmodel modes: {e}") from None
    return {int(m.group(1)): m.group(2) for m in _POWER_MODEL.finditer(text)}


def max_mode(modes: dict[int, str]) -> tuple[int, str] | None:
    """The MAXN mode by name (ids differ per module: AGX Orin 0, Orin Nano MAXN_SUPER 2)."""
    for wanted in MAX_MODE_NAMES:
        for mid, name in sorted(modes.items()):
            if name.upper() == wanted:
                return mid, name
    return None


def gpu_devfreq(root: Path) -> Path | None:
    """The GPU's node under ``<root>/sys/class/devfreq/`` (None when there is none)."""
    base = _under(root, "/sys/class/devfreq")
    try:
        nodes = sorted(base.iterdir())
    except OSError:
        return None
    for node in nodes:
        if not (node / "cur_freq").exists():
            continue
        # jetson_clocks itself goes by the device-tree node name (NUL-terminated in sysfs).
        try:
            of_name = (node / "device/of_node/name").read_bytes().rstrip(b"\0").decode("ascii", "replace")
        except OSError:
            of_name = ""
        if _GPU_NODE.search(node.name.lower()) or _GPU_NODE.search(of_name.lower()):
            return node
    return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class GpuFreq:
    node: str
    cur_hz: int | None
    max_hz: int | None
    min_hz: int | None

    @property
    def at_max(self) -> bool:
        if self.cur_hz is None or self.max_hz is None or self.max_hz <= 0:
            return False
        return self.cur_hz >= self.max_hz * (1.0 - FREQ_TOLERANCE)


def read_gpu_freq(root: Path) -> GpuFreq | None:
    node = gpu_devfreq(root)
    if node is None:
        return None
    return GpuFreq(
        node=str(node),
        cur_hz=_read_int(node / "cur_freq"),
        max_hz=_read_int(node / "max_freq"),
        min_hz=_read_int(node / "min_freq"),
    )


# -- running the NVIDIA tools -----------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    output: str


class Tools:
    """Finds and runs ``nvpmodel`` and ``jetson_clocks`` (stdin closed: both may prompt)."""

    def __init__(self, path: str | None = None, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self._path = path if path is not None else os.environ.get("PATH", os.defpath)
        self._timeout_s = timeout_s
        self.history: list[CommandResult] = []

    def which(self, name: str) -> str:
        exe = shutil.which(name, path=self._path)
        if exe is None:
            raise ClocksError(
                f"{name}: not found on PATH ({self._path}); it ships with JetPack (nvidia-l4t-tools)"
            )
        return exe

    def run(self, name: str, *args: str) -> CommandResult:
        argv = (self.which(name), *args)
        try:
            p = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=self._timeout_s,
                check=False,
            )
            res = CommandResult(tuple(argv), p.returncode, p.stdout.strip())
        except subprocess.TimeoutExpired:
            res = CommandResult(tuple(argv), -1, f"timed out after {self._timeout_s:g} s")
        except OSError as e:
            res = CommandResult(tuple(argv), -1, f"cannot run: {e}")
        self.history.append(res)
        _log.info("ran", argv=list(argv), rc=res.returncode, output=res.output[-500:])
        return res


def query_mode(tools: Tools) -> tuple[int | None, str | None]:
    """The current nvpmodel mode from ``nvpmodel -q`` (prints the name, then the id)."""
    res = tools.run("nvpmodel", "-q")
    if res.returncode != 0:
        return None, None
    m = _QUERY_NAME.search(res.output)
    ids = [ln.strip() for ln in res.output.splitlines() if ln.strip().isdigit()]
    return (int(ids[-1]) if ids else None), (m.group(1) if m else None)


# -- the three actions ------------------------------------------------------------------------


@dataclass
class Report:
    """What an action found and did; ``ok`` decides the exit status."""

    action: str
    jetson: bool
    evidence: str
    ok: bool = True
    mode: dict[str, Any] = field(default_factory=dict)
    gpu: dict[str, Any] | None = None
    stored: bool = False
    steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)
        _log.warning("clocks problem", action=self.action, problem=problem)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        if not self.jetson:
            return [f"not a Jetson ({self.evidence}): nothing to do"]
        out = [f"{self.action}: {'ok' if self.ok else 'FAILED'}"]
        if self.mode:
            out.append("nvpmodel: " + ", ".join(f"{k}={v}" for k, v in self.mode.items()))
        if self.gpu is not None:
            g = self.gpu
            out.append(f"gpu: cur={g['cur_hz']} Hz max={g['max_hz']} Hz at_max={g['at_max']} ({g['node']})")
        out.append(f"stored clocks: {'yes' if self.stored else 'no'}")
        out += [f"did: {s}" for s in self.steps]
        out += [f"problem: {p}" for p in self.problems]
        return out


@dataclass(frozen=True)
class Clocks:
    root: Path = Path("/")
    state_dir: Path = DEFAULT_STATE_DIR
    """Where the pre-lock clocks and mode are kept (the clocks unit's StateDirectory=)."""
    tools: Tools = field(default_factory=Tools)
    verify_timeout_s: float = 3.0
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    @property
    def store_file(self) -> Path:
        return self.state_dir / STORE_FILE

    @property
    def prev_mode_file(self) -> Path:
        return self.state_dir / PREV_MODE_FILE

    def _gpu(self) -> dict[str, Any] | None:
        g = read_gpu_freq(self.root)
        if g is None:
            return None
        return {**asdict(g), "at_max": g.at_max}

    def _start(self, action: str) -> Report:
        jetson, evidence = is_jetson(self.root)
        rep = Report(action=action, jetson=jetson, evidence=evidence)
        if not jetson:
            _log.info("not a Jetson: nothing to do", action=action, looked_for=evidence)
        return rep

    def status(self) -> Report:
        rep = self._start("status")
        if not rep.jetson:
            return rep
        rep.stored = self.store_file.exists()
        try:
            mid, name = query_mode(self.tools)
            rep.mode = {"id": mid, "name": name}
        except ClocksError as e:
            rep.fail(str(e))
        rep.gpu = self._gpu()
        return rep

    def lock(self) -> Report:
        rep = self._start("lock")
        if not rep.jetson:
            return rep
        try:
            self._lock(rep)
        except ClocksError as e:
            rep.fail(str(e))
        rep.stored = self.store_file.exists()
        return rep

    def _lock(self, rep: Report) -> None:
        modes = read_modes(self.root)
        target = max_mode(modes)
        if target is None:
            names = ", ".join(f"{i}={n}" for i, n in sorted(modes.items())) or "none"
            raise ClocksError(f"{_under(self.root, '/etc/nvpmodel.conf')}: no MAXN mode (modes: {names})")
        mid, name = target
        self.tools.which("jetson_clocks")  # fail before changing anything if half the tools are missing
        self.state_dir.mkdir(parents=True, exist_ok=True)

        cur_id, _ = query_mode(self.tools)
        if cur_id is not None and not self.prev_mode_file.exists():
            # Store-once, like the clocks: after a crash the file still holds the pre-lock mode.
            self.prev_mode_file.write_text(f"{cur_id}\n")
        res = self.tools.run("nvpmodel", "-m", str(mid))
        if res.returncode != 0:
            rep.fail(f"nvpmodel -m {mid} failed (rc {res.returncode}): {res.output[-300:]}")
        else:
            rep.steps.append(f"nvpmodel -m {mid} ({name})")
        rep.mode = {"id": mid, "name": name}

        if self.store_file.exists():
            rep.steps.append(f"kept the clocks stored earlier in {self.store_file}")
        else:
            res = self.tools.run("jetson_clocks", "--store", str(self.store_file))
            if res.returncode != 0:
                rep.fail(f"jetson_clocks --store failed (rc {res.returncode}): {res.output[-300:]}")
            else:
                rep.steps.append(f"jetson_clocks --store {self.store_file}")

        res = self.tools.run("jetson_clocks")
        if res.returncode != 0:
            rep.fail(f"jetson_clocks failed (rc {res.returncode}): {res.output[-300:]}")
        else:
            rep.steps.append("jetson_clocks")

        rep.gpu = self._verify()
        if rep.gpu is None:
            rep.fail(f"cannot verify: no GPU node under {_under(self.root, '/sys/class/devfreq')}")
        elif not rep.gpu["at_max"]:
            rep.fail(
                f"GPU clock not at maximum after {self.verify_timeout_s:g} s: "
                f"cur_freq={rep.gpu['cur_hz']} max_freq={rep.gpu['max_hz']} ({rep.gpu['node']})"
            )

    def _verify(self) -> dict[str, Any] | None:
        """Poll the GPU's cur_freq until it reaches max_freq (the change is not instantaneous)."""
        deadline = self.monotonic() + self.verify_timeout_s
        while True:
            g = self._gpu()
            if g is None or g["at_max"] or self.monotonic() >= deadline:
                return g
            self.sleep(0.1)

    def restore(self) -> Report:
        rep = self._start("restore")
        if not rep.jetson:
            return rep
        try:
            self._restore(rep)
        except ClocksError as e:
            rep.fail(str(e))
        rep.stored = self.store_file.exists()
        rep.gpu = self._gpu()
        return rep

    def _restore(self, rep: Report) -> None:
        if self.store_file.exists():
            res = self.tools.run("jetson_clocks", "--restore", str(self.store_file))
            if res.returncode != 0:
                # Keep the file: it is the only copy of the pre-lock clocks.
                rep.fail(f"jetson_clocks --restore failed (rc {res.returncode}): {res.output[-300:]}")
            else:
                rep.steps.append(f"jetson_clocks --restore {self.store_file}")
                self.store_file.unlink()
        else:
            rep.steps.append(f"no stored clocks in {self.store_file}")
        prev = _read_int(self.prev_mode_file)
        if prev is not None:
            res = self.tools.run("nvpmodel", "-m", str(prev))
            if res.returncode != 0:
                rep.fail(f"nvpmodel -m {prev} failed (rc {res.returncode}): {res.output[-300:]}")
            else:
                rep.steps.append(f"nvpmodel -m {prev}")
                rep.mode = {"id": prev, "name": read_modes(self.root).get(prev)}
                self.prev_mode_file.unlink()
        else:
            rep.steps.append(f"no stored power mode in {self.prev_mode_file}")


def default_state_dir(root: Path, env: dict[str, str] | None = None) -> Path:
    """systemd's ``$STATE_DIRECTORY`` on the real root, else /var/lib/ishowtts-clocks under ``root``."""
    env = dict(os.environ) if env is None else env
    if env.get("STATE_DIRECTORY") and root == Path("/"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    return _under(root, str(DEFAULT_STATE_DIR))


def run_action(action: str, clocks: Clocks) -> Report:
    actions: dict[str, Callable[[], Report]] = {
        "lock": clocks.lock,
        "restore": clocks.restore,
        "status": clocks.status,
    }
    return actions[action]()


__all__: Sequence[str] = [
    "Clocks",
    "ClocksError",
    "GpuFreq",
    "Report",
    "Tools",
    "default_state_dir",
    "gpu_devfreq",
    "is_jetson",
    "max_mode",
    "read_gpu_freq",
    "read_modes",
    "run_action",
]
