"""Board telemetry for the ``status`` reply: GPU clock, GPU temperature, power, nvpmodel mode.

Sources, best first: the jetson-stats service (``jtop``) when its socket is there and it accepts
us; else the kernel's sysfs files read directly under ``root``; else nothing (an empty dict: not
a Jetson). :meth:`Telemetry.read` never blocks on jtop: connecting takes about a second, so it
happens on a background thread while sysfs answers.

Keys of the returned dict (each present only when known): ``source`` (``"jtop"`` | ``"sysfs"``),
``gpu_freq_mhz``, ``gpu_max_freq_mhz``, ``gpu_temp_c``, ``power_mw`` (board input, mW),
``power_rails_mw`` ({rail: mW}), ``nvpmodel`` ({``id``, ``name``}).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ishowttsd import log
from ishowttsd.jetson.clocks import is_jetson, read_gpu_freq, read_modes

_log = log.get(__name__)

JTOP_SOCKET = "/run/jtop.sock"
"""Where jetson-stats' service listens (fixed in jtop.service)."""
JTOP_RETRY_S = 60.0
_PMODE = re.compile(r"pmode:\s*(\d+)")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_num(path: Path) -> float | None:
    text = _read_text(path)
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


# -- sysfs --------------------------------------------------------------------------------------


def gpu_temp_c(root: Path) -> float | None:
    """The GPU thermal zone (``gpu-thermal`` on Orin, ``GPU-therm`` on Xavier/Nano), in °C."""
    base = root / "sys/class/thermal"
    try:
        zones = sorted(base.glob("thermal_zone*"))
    except OSError:
        return None
    for z in zones:
        kind = (_read_text(z / "type") or "").lower()
        if kind.startswith("gpu"):
            milli = _read_num(z / "temp")
            if milli is not None and milli > -100_000:  # offline zones read -256000
                return round(milli / 1000.0, 1)
    return None


def power_rails_mw(root: Path) -> dict[str, float]:
    """INA3221 rails from hwmon (``inN_label``, ``inN_input`` mV, ``currN_input`` mA) as mW."""
    rails: dict[str, float] = {}
    for hw in sorted((root / "sys/class/hwmon").glob("hwmon*")):
        if (_read_text(hw / "name") or "") != "ina3221":
            continue
        for label_file in sorted(hw.glob("in*_label")):
            n = label_file.name[2:-6]
            label = _read_text(label_file)
            mv = _read_num(hw / f"in{n}_input")
            ma = _read_num(hw / f"curr{n}_input")
            if label and mv is not None and ma is not None and not label.lower().startswith("sum"):
                rails[label] = round(mv * ma / 1000.0, 1)
    return rails


def nvpmodel_mode(root: Path) -> dict[str, Any] | None:
    """The current mode from nvpmodel's status file (``pmode:0002 ...``), named from nvpmodel.conf."""
    text = _read_text(root / "var/lib/nvpmodel/status")
    if not text:
        return None
    m = _PMODE.search(text)
    if m is None and not text.isdigit():
        return None
    mid = int(m.group(1) if m else text)
    try:
        name = read_modes(root).get(mid)
    except Exception:  # a missing nvpmodel.conf: the id alone is still worth showing
        name = None
    return {"id": mid, "name": name}


def read_sysfs(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"source": "sysfs"}
    g = read_gpu_freq(root)
    if g is not None:
        if g.cur_hz is not None:
            out["gpu_freq_mhz"] = round(g.cur_hz / 1e6, 1)
        if g.max_hz is not None:
            out["gpu_max_freq_mhz"] = round(g.max_hz / 1e6, 1)
    temp = gpu_temp_c(root)
    if temp is not None:
        out["gpu_temp_c"] = temp
    rails = power_rails_mw(root)
    if rails:
        out["power_rails_mw"] = rails
        total = next((v for k, v in rails.items() if k.upper() in ("VDD_IN", "POM_5V_IN")), None)
        if total is not None:
            out["power_mw"] = total
    mode = nvpmodel_mode(root)
    if mode is not None:
        out["nvpmodel"] = mode
    return out


# -- jtop ---------------------------------------------------------------------------------------


def from_jtop(j: Any) -> dict[str, Any]:
    """Map a started ``jtop`` object's readings (kHz, °C, mW) to our keys."""
    out: dict[str, Any] = {"source": "jtop"}
    gpus: Mapping[str, Any] = j.gpu or {}
    for g in gpus.values():
        freq = g.get("freq", {})
        if "cur" in freq:
            out["gpu_freq_mhz"] = round(freq["cur"] / 1000.0, 1)
        if "max" in freq:
            out["gpu_max_freq_mhz"] = round(freq["max"] / 1000.0, 1)
        break
    temps: Mapping[str, Any] = j.temperature or {}
    for name, t in temps.items():
        if name.lower().startswith("gpu") and t.get("online", True) and t.get("temp", -256) > -100:
            out["gpu_temp_c"] = round(float(t["temp"]), 1)
            break
    power: Mapping[str, Any] = j.power or {}
    rails = {k: float(v["power"]) for k, v in power.get("rail", {}).items() if "power" in v}
    if rails:
        out["power_rails_mw"] = rails
    if "power" in power.get("tot", {}):
        out["power_mw"] = float(power["tot"]["power"])
    nvp = j.nvpmodel
    if nvp is not None:
        out["nvpmodel"] = {"id": getattr(nvp, "id", None), "name": getattr(nvp, "name", str(nvp))}
    return out


def _default_jtop() -> Any:
    from jtop import jtop

    return jtop()


class Telemetry:
    """Reads telemetry on demand; keeps one jtop connection when the service is there."""

    def __init__(
        self,
        root: Path = Path("/"),
        jtop_factory: Callable[[], Any] | None = _default_jtop,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.jetson, _ = is_jetson(root)
        # The real jtop reads the real board only, so it is not used under a test root.
        real = jtop_factory is _default_jtop
        self._factory = jtop_factory if (root == Path("/") or not real) else None
        self._clock = clock
        self._jtop: Any = None
        self._connecting = False
        self._next_try = 0.0
        self._lock = threading.Lock()

    def _jtop_socket(self) -> bool:
        return (self.root / JTOP_SOCKET.lstrip("/")).exists()

    def _maybe_connect(self) -> None:
        """Start a background connection attempt when jtop's socket exists and none is running."""
        if self._factory is None or self._jtop is not None or self._connecting:
            return
        if self._clock() < self._next_try or not self._jtop_socket():
            return
        self._connecting = True
        threading.Thread(target=self._connect, name="jtop-connect", daemon=True).start()

    def _connect(self) -> None:
        assert self._factory is not None
        try:
            j = self._factory()
            j.start()
        except Exception as e:  # JtopException: not active, no permission (group jtop), version
            _log.info("jtop unavailable; reading sysfs", error=str(e).splitlines()[0] if str(e) else repr(e))
            with self._lock:
                self._next_try = self._clock() + JTOP_RETRY_S
                self._connecting = False
            return
        with self._lock:
            self._jtop = j
            self._connecting = False
        _log.info("jtop connected")

    def read(self) -> dict[str, Any]:
        """A fresh reading (see the module docstring for the keys); ``{}`` off a Jetson."""
        if not self.jetson:
            return {}
        with self._lock:
            self._maybe_connect()
            j = self._jtop
        if j is not None:
            try:
                if j.ok(spin=True):  # spin=True: check the link without waiting for a sample
                    return from_jtop(j)
            except Exception as e:
                _log.warning("jtop reading failed; back to sysfs", error=str(e))
            self._drop_jtop()
        return read_sysfs(self.root)

    def _drop_jtop(self) -> None:
        with self._lock:
            j, self._jtop = self._jtop, None
            self._next_try = self._clock() + JTOP_RETRY_S
        try:
            if j is not None:
                j.close()
        except Exception:
            pass

    def close(self) -> None:
        self._drop_jtop()


__all__ = ["Telemetry", "from_jtop", "gpu_temp_c", "nvpmodel_mode", "power_rails_mw", "read_sysfs"]
