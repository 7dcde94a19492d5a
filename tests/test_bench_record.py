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
    met = record.targets_met(s)
    assert {k: met[k] for k in record.TARGETS} == {
        "rtf": False,
        "ttfa_ms": False,
        "x_realtime_16": False,
        "rel_error": True,
    }
    # round two's keys are present and unmeasured (no fp8/int8 variant, no daemon section)
    assert set(record.PATH_KEYS) <= set(s) and all(s[k] is None for k in record.PATH_KEYS)
    assert all(met[k] is None for k in record.PATH_TARGETS)


def test_round_two_keys_from_variants_and_the_daemon_section() -> None:
    r = raw(0.005, 20.0, 120.0)
    r["fast"]["fp8_exact"] = {"line_ms": 16.5, "rtf": 0.0029, "ttfa_ms": 12.0,
                              "concurrency": {"16_same": {"x_realtime": 390.0}}}  # fmt: skip
    r["fast"]["int8_exact"] = {"line_ms": 30.0}
    r["fidelity"].update(fp8_exact=1e-2, int8_exact=4e-2)
    r["daemon"] = {"none": {"line": {"total_ms": 40.0, "ttfa_ms": 16.0}, "mixed_16": {"x_realtime": 200.0}},
                   "fp8": {"line": {"total_ms": 18.0, "ttfa_ms": 18.0}, "mixed_16": {"x_realtime": 260.0}}}  # fmt: skip
    r.update(daemon_main="fp8", daemon_oneshot="fp8_exact")
    s = record.summarise(r)
    assert (s["fp8_rtf"], s["fp8_ttfa_ms"], s["fp8_x_realtime_16_same"], s["fp8_rel_error"]) == (
        0.0029,
        12.0,
        390.0,
        1e-2,
    )
    assert s["int8_rel_error"] == 4e-2
    assert (s["daemon_line_ms"], s["daemon_ttfa_ms"], s["daemon_x_realtime_16"]) == (18.0, 18.0, 260.0)
    assert s["daemon_line_vs_oneshot"] == pytest.approx(18.0 / 16.5)
    met = record.targets_met(s)
    assert met["fp8_rtf"] and met["fp8_ttfa_ms"] and met["fp8_x_realtime_16_same"] and met["fp8_rel_error"]
    assert not met["int8_rel_error"] and not met["daemon_ttfa_ms"]
    assert met["daemon_line_vs_oneshot"] and met["daemon_x_realtime_16"]
    # an idle worker splits the line for first audio: its cost is the whole line from a backlog
    r["daemon"]["fp8"]["line"].update(total_ms=34.0, queued_ms=17.5, ttfa_ms=15.0)
    s2 = record.summarise(r)
    assert (s2["daemon_line_ms"], s2["daemon_ttfa_ms"]) == (17.5, 15.0)
    assert s2["daemon_line_vs_oneshot"] == pytest.approx(17.5 / 16.5)
    assert record.targets_met(s2)["daemon_ttfa_ms"]
    # regression detection covers them: a slower fp8 line and a slower daemon than the history's best
    hist = [{**s, "mode": "gpu"}]
    worse = {**s, "mode": "gpu", "fp8_rtf": 0.0035, "daemon_x_realtime_16": 200.0}
    found = record.regressions(worse, hist, 0.10)
    assert any(f.startswith("fp8_rtf") for f in found) and any(
        f.startswith("daemon_x_realtime_16") for f in found
    )


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


def test_a_slower_or_faster_stock_path_alone_is_not_a_regression(tmp_path: Path) -> None:
    """The stock path's spread moves ``speedup`` by tens of percent between runs; only the fast
    path's own figures are judged."""
    record.write(raw(0.0050, 20.0, 120.0), tmp_path, 0.10)
    fast_stock = raw(0.0050, 20.0, 120.0)
    fast_stock["stock"] = {"rtf": 0.025}  # the stock path ran twice as fast: speedup halves
    rec = record.write(fast_stock, tmp_path, 0.10)
    assert rec["speedup"] == pytest.approx(5.0)
    assert rec["regressions"] == []


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
