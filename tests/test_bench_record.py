"""The bench record, its history and the regression flag (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ishowttsd.bench import plot, record


def raw(rtf: float, ttfa: float, x16: float, device: str = "NVIDIA H100 80GB HBM3") -> dict[str, Any]:
    return {
        "device": device,
        "mode": "gpu",
        "nfe": 8,
        "timestamp": "2026-11-25T18:00:00Z",
        "unix_time": 1795000000.0,
        "git_commit": "abc",
        "main_variant": "bf16",
        "stock": {"rtf": 0.05},
        "fast": {"bf16": {"rtf": rtf, "ttfa_ms": ttfa, "concurrency": {"16": {"x_realtime": x16}}}},
        "fidelity": {"bf16": 6e-3},
    }


def test_summary_has_the_required_keys() -> None:
    s = record.summarise(raw(0.005, 20.0, 120.0))
    assert set(record.REQUIRED_KEYS) <= set(s)
    assert s["speedup"] == pytest.approx(10.0)
    assert s["rel_error"] == 6e-3
    assert record.targets_met(s) == {
        "rtf": False,
        "ttfa_ms": False,
        "x_realtime_16": False,
        "rel_error": True,
    }


def test_grouped_throughput_counts_when_better() -> None:
    r = raw(0.005, 20.0, 100.0)
    r["fast"]["bf16"]["concurrency"]["16"]["grouped_x_realtime"] = 150.0
    assert record.summarise(r)["x_realtime_16"] == 150.0


def test_regression_against_best_of_same_device(tmp_path: Path) -> None:
    rec1 = record.write(raw(0.0050, 20.0, 120.0), tmp_path, 0.10)
    assert rec1["regressions"] == []
    rec2 = record.write(raw(0.0052, 20.5, 118.0), tmp_path, 0.10)  # within 10%
    assert rec2["regressions"] == []
    rec3 = record.write(raw(0.0070, 20.0, 60.0), tmp_path, 0.10)
    assert any(r.startswith("rtf") for r in rec3["regressions"])
    assert any(r.startswith("x_realtime_16") for r in rec3["regressions"])
    other = record.write(raw(0.0500, 90.0, 5.0, device="cpu"), tmp_path, 0.10)
    assert other["regressions"] == []  # another device is not compared
    hist = record.read_history(tmp_path / "history.jsonl")
    assert len(hist) == 4 and hist[2]["regressions"]
    latest = json.loads((tmp_path / "latest-gpu.json").read_text())
    assert set(record.REQUIRED_KEYS) <= set(latest)


def test_bad_history_line_names_file_and_line(tmp_path: Path) -> None:
    h = tmp_path / "history.jsonl"
    h.write_text('{"rtf": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"history.jsonl:2"):
        record.read_history(h)


def test_png_is_drawn_when_matplotlib_is_there(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = raw(0.005, 20.0, 120.0)
    r["stock"]["nfe_sweep_ms"] = {"8": 300.0, "32": 700.0}
    r["fast_nfe_sweep_ms"] = {"8": 30.0, "32": 110.0}
    rec = record.write(r, tmp_path, 0.1)
    assert plot.draw(record.read_history(tmp_path / "history.jsonl"), rec, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
