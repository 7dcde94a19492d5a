"""Telemetry from a fake Orin root's sysfs, and through a stand-in for the jtop service's client."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from waits import wait_until

from ishowttsd.jetson import telemetry
from ishowttsd.jetson.telemetry import Telemetry, read_sysfs


def fake_orin(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    (root / "etc/nvpmodel.conf").write_text(
        "< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n"
    )
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    (root / "var/lib/nvpmodel/status").write_text("pmode:0002 fmode:quiet\n")
    gpu = root / "sys/class/devfreq/17000000.gpu"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text("1020000000\n")
    (gpu / "max_freq").write_text("1020000000\n")
    for i, (kind, milli) in enumerate(
        [("cpu-thermal", "48500"), ("gpu-thermal", "51250"), ("tj-thermal", "52000")]
    ):
        z = root / f"sys/class/thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(milli + "\n")
    other = root / "sys/class/hwmon/hwmon0"  # a non-INA sensor that must be skipped
    other.mkdir(parents=True)
    (other / "name").write_text("pwmfan\n")
    hw = root / "sys/class/hwmon/hwmon1"
    hw.mkdir(parents=True)
    (hw / "name").write_text("ina3221\n")
    for n, label, mv, ma in [
        (1, "VDD_IN", 5000, 1500),
        (2, "VDD_CPU_GPU_CV", 5000, 600),
        (3, "VDD_SOC", 5000, 300),
    ]:
        (hw / f"in{n}_label").write_text(label + "\n")
        (hw / f"in{n}_input").write_text(f"{mv}\n")
        (hw / f"curr{n}_input").write_text(f"{ma}\n")
    (hw / "in7_label").write_text("sum of shunt voltages\n")
    (hw / "in7_input").write_text("40\n")
    return root


def test_sysfs_reading(tmp_path: Path) -> None:
    root = fake_orin(tmp_path / "root")
    assert read_sysfs(root) == {
        "source": "sysfs",
        "gpu_freq_mhz": 1020.0,
        "gpu_max_freq_mhz": 1020.0,
        "gpu_temp_c": 51.2,
        "power_rails_mw": {"VDD_IN": 7500.0, "VDD_CPU_GPU_CV": 3000.0, "VDD_SOC": 1500.0},
        "power_mw": 7500.0,
        "nvpmodel": {"id": 2, "name": "MAXN_SUPER"},
    }


def test_offline_gpu_zone_and_missing_files(tmp_path: Path) -> None:
    root = fake_orin(tmp_path / "root")
    (root / "sys/class/thermal/thermal_zone1/temp").write_text("-256000\n")
    (root / "var/lib/nvpmodel/status").unlink()
    got = read_sysfs(root)
    assert "gpu_temp_c" not in got
    assert "nvpmodel" not in got
    assert got["gpu_freq_mhz"] == 1020.0


def test_not_a_jetson_is_empty(tmp_path: Path) -> None:
    made: list[int] = []

    def factory() -> Any:
        made.append(1)
        raise AssertionError("jtop must not be tried off a Jetson")

    assert Telemetry(tmp_path, jtop_factory=factory).read() == {}
    assert Telemetry(Path("/"), jtop_factory=factory).read() == {}  # this host
    assert made == []


class FakeJtop:
    """The jtop client's surface as the service reports it (kHz, °C, mW)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.closed = False
        self.gpu = {
            "gpu": {
                "type": "integrated",
                "freq": {"governor": "nvhost_podgov", "cur": 918000, "max": 1020000},
            }
        }
        self.temperature = {"cpu": {"online": True, "temp": 47.0}, "gpu": {"online": True, "temp": 49.5}}
        self.power = {
            "rail": {"VDD_IN": {"online": True, "power": 7200}, "VDD_SOC": {"online": True, "power": 1400}},
            "tot": {"power": 7200},
        }
        self.nvpmodel = SimpleNamespace(id=2, name="MAXN_SUPER")

    def start(self) -> None:
        if self.fail:
            raise RuntimeError("The jtop.service is not active. Please run:\nsudo jtop --install-service")

    def ok(self, spin: bool = False) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def wait_source(t: Telemetry, source: str, timeout_s: float = 5.0) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        got = t.read()
        return got if got.get("source") == source else None

    return wait_until(read, timeout_s, f"the telemetry source to become {source}", poll_s=0.02)


def test_jtop_preferred_when_its_socket_exists(tmp_path: Path) -> None:
    root = fake_orin(tmp_path / "root")
    j = FakeJtop()
    t = Telemetry(root, jtop_factory=lambda: j)
    assert t.read()["source"] == "sysfs"  # no socket: no attempt
    (root / "run").mkdir()
    (root / "run/jtop.sock").touch()
    got = wait_source(t, "jtop")
    assert got == {
        "source": "jtop",
        "gpu_freq_mhz": 918.0,
        "gpu_max_freq_mhz": 1020.0,
        "gpu_temp_c": 49.5,
        "power_rails_mw": {"VDD_IN": 7200.0, "VDD_SOC": 1400.0},
        "power_mw": 7200.0,
        "nvpmodel": {"id": 2, "name": "MAXN_SUPER"},
    }
    t.close()
    assert j.closed


def test_jtop_failure_falls_back_and_retries_later(tmp_path: Path) -> None:
    root = fake_orin(tmp_path / "root")
    (root / "run").mkdir()
    (root / "run/jtop.sock").touch()
    now = [0.0]
    tries: list[FakeJtop] = []

    def factory() -> FakeJtop:
        j = FakeJtop(fail=len(tries) == 0)
        tries.append(j)
        return j

    t = Telemetry(root, jtop_factory=factory, clock=lambda: now[0])
    assert t.read()["source"] == "sysfs"  # starts the first (failing) attempt, answers at once
    wait_until(lambda: tries and not t._connecting, 5, "the failed attempt to finish", poll_s=0.01)
    for _ in range(5):
        assert t.read()["source"] == "sysfs"
    assert len(tries) == 1  # no retry before JTOP_RETRY_S
    now[0] += telemetry.JTOP_RETRY_S + 1
    assert wait_source(t, "jtop")["power_mw"] == 7200.0
    assert len(tries) == 2
