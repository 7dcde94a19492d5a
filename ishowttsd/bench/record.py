"""The bench's JSON record, its history file, and the regression check. Torch-free.

A record is one JSON object with (at least) the top-level keys tools read: ``device``, ``nfe``,
``stock_rtf``, ``rtf``, ``speedup``, ``ttfa_ms``, ``x_realtime_16``, ``rel_error``. The history
(``history.jsonl``) holds one summary line per run; a run is flagged when a figure is worse than
the best earlier run of the same device and mode by more than the threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

REQUIRED_KEYS = ("device", "nfe", "stock_rtf", "rtf", "speedup", "ttfa_ms", "x_realtime_16", "rel_error")
PATH_KEYS = (
    "fp8_rtf", "fp8_ttfa_ms", "fp8_x_realtime_16_same", "fp8_rel_error", "int8_rel_error",
    "daemon_line_ms", "daemon_ttfa_ms", "daemon_x_realtime_16", "daemon_line_vs_oneshot",
)  # fmt: skip
"""The low-precision paths and the daemon's own engine, beside the required keys (None where
that section did not run)."""
LOWER_IS_BETTER = (
    "rtf", "ttfa_ms", "fp8_rtf", "fp8_ttfa_ms", "fp8_rel_error", "int8_rel_error", "daemon_line_ms",
    "daemon_ttfa_ms",
)  # fmt: skip
HIGHER_IS_BETTER = ("x_realtime_16", "fp8_x_realtime_16_same", "daemon_x_realtime_16")
"""``speedup`` is not judged: its denominator is the stock path, host-bound Python whose line time
moved 345–646 ms between runs on one H200, so against the best-ever ratio it raised a false alarm in
most runs; the fast path's own figures (``rtf`` and the rest) are what a regression is about."""
TARGETS = {"rtf": 0.0035, "ttfa_ms": 15.0, "x_realtime_16": 400.0, "rel_error": 1e-2}
"""The issue's targets (H100, NFE 8, this workload); rel_error is the bf16/fp16 bound."""
PATH_TARGETS = {
    "fp8_rtf": 0.0030, "fp8_ttfa_ms": 13.0, "fp8_x_realtime_16_same": 380.0, "fp8_rel_error": 2e-2,
    "int8_rel_error": 3e-2, "daemon_line_vs_oneshot": 1.15, "daemon_x_realtime_16": 250.0,
    "daemon_ttfa_ms": 17.0,
}  # fmt: skip
"""Round two's targets (H200, NFE 8): the fp8 path, int8's fidelity, the daemon's engine."""


def git_commit(repo: Path) -> str:
    """HEAD (short), ``-dirty`` with uncommitted changes; ``ISHOWTTS_GIT_COMMIT`` overrides (a
    lent GPU gets a copy of the working tree whose .git may not be the one it came from)."""
    if os.environ.get("ISHOWTTS_GIT_COMMIT"):
        return os.environ["ISHOWTTS_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip() or "unknown"
    return sha + ("-dirty" if dirty.stdout.strip() else "")


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """The required top-level keys, from the measurements (None where a section did not run)."""
    stock = raw.get("stock") or {}
    main = raw.get("main_variant", "bf16")
    fast = (raw.get("fast") or {}).get(main) or {}
    conc = fast.get("concurrency") or {}
    fid = raw.get("fidelity") or {}
    stock_rtf = stock.get("rtf")
    rtf = fast.get("rtf")
    return {
        "device": raw.get("device"),
        "nfe": raw.get("nfe"),
        "stock_rtf": stock_rtf,
        "rtf": rtf,
        "speedup": (stock_rtf / rtf) if stock_rtf and rtf else None,
        "ttfa_ms": fast.get("ttfa_ms"),
        "x_realtime_16": _best_16(conc.get("16") or {}),
        "rel_error": fid.get(main),
        **path_keys(raw),
    }


def path_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """The round-two keys: ``fp8_*`` from the fp8 variant (``fp8_variant``, default the first
    variant named fp8...), ``int8_rel_error`` from the int8 one, ``daemon_*`` from the daemon's
    engine with the quantisation the daemon defaults to (``daemon_main``), the line's time
    against the same run's one-shot figure of the matching bench variant (``daemon_oneshot``)."""
    fast = raw.get("fast") or {}
    fid = raw.get("fidelity") or {}

    def pick(prefix: str, named: str | None) -> str | None:
        if named in fast:
            return named
        return next((k for k in fast if k.split("_")[0] == prefix), None)

    out: dict[str, Any] = dict.fromkeys(PATH_KEYS)
    f8 = pick("fp8", raw.get("fp8_variant"))
    if f8 is not None:
        v = fast[f8]
        out.update(fp8_rtf=v.get("rtf"), fp8_ttfa_ms=v.get("ttfa_ms"), fp8_rel_error=fid.get(f8))
        out["fp8_x_realtime_16_same"] = ((v.get("concurrency") or {}).get("16_same") or {}).get("x_realtime")
    i8 = pick("int8", raw.get("int8_variant"))
    if i8 is not None:
        out["int8_rel_error"] = fid.get(i8)
    daemon = raw.get("daemon") or {}
    d = daemon.get(raw.get("daemon_main") or "") or next(iter(daemon.values()), None)
    if d:
        line = d.get("line") or {}
        # The line's cost is its whole synthesis as the worker runs it from a backlog; alone, an
        # idle worker may split it so the first audio comes sooner (that is daemon_ttfa_ms).
        # Records before session 7 timed only the line alone, which was then spoken whole.
        whole = line.get("queued_ms", line.get("total_ms"))
        out.update(daemon_line_ms=whole, daemon_ttfa_ms=line.get("ttfa_ms"),
                   daemon_x_realtime_16=(d.get("mixed_16") or {}).get("x_realtime"))  # fmt: skip
        one = (fast.get(raw.get("daemon_oneshot") or "") or {}).get("line_ms")
        if one and whole:
            out["daemon_line_vs_oneshot"] = whole / one
    return out


def _best_16(c: dict[str, Any]) -> float | None:
    """16 concurrent mixed lines: the better of one padded batch and length groups (the daemon
    runs whichever its config says; both are in the record)."""
    vals = [v for v in (c.get("x_realtime"), c.get("grouped_x_realtime")) if isinstance(v, (int, float))]
    return max(vals) if vals else None


def targets_met(summary: dict[str, Any]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for k, bound in {**TARGETS, **PATH_TARGETS}.items():
        v = summary.get(k)
        if v is None:
            out[k] = None
        elif k in HIGHER_IS_BETTER:
            out[k] = v >= bound
        else:
            out[k] = v <= bound
    return out


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON line ({e})") from e
    return rows


def regressions(summary: dict[str, Any], history: list[dict[str, Any]], threshold: float) -> list[str]:
    """Figures worse than the best earlier run (same device and mode) by more than ``threshold``."""
    same = [
        h
        for h in history
        if h.get("device") == summary.get("device") and h.get("mode") == summary.get("mode")
    ]
    found = []
    for k in LOWER_IS_BETTER + HIGHER_IS_BETTER:
        v = summary.get(k)
        prev = [h[k] for h in same if isinstance(h.get(k), (int, float))]
        if not isinstance(v, (int, float)) or not prev:
            continue
        if k in LOWER_IS_BETTER:
            best = min(prev)
            if v > best * (1 + threshold):
                found.append(f"{k} {v:.4g} vs best {best:.4g} (+{(v / best - 1) * 100:.0f}%)")
        else:
            best = max(prev)
            if v < best * (1 - threshold):
                found.append(f"{k} {v:.4g} vs best {best:.4g} (-{(1 - v / best) * 100:.0f}%)")
    return found


def write(
    raw: dict[str, Any], results: Path, threshold: float, *, history_name: str = "history.jsonl"
) -> dict[str, Any]:
    """Complete the record, write ``<results>/<stamp>-<mode>.json`` and ``latest-<mode>.json``,
    append the history and return the record (with ``regressions`` filled in)."""
    results.mkdir(parents=True, exist_ok=True)
    summary = summarise(raw)
    record = {**summary, **{k: v for k, v in raw.items() if k not in summary}}
    record["targets"] = {**TARGETS, **PATH_TARGETS}
    record["targets_met"] = targets_met(summary)
    hist_path = results / history_name
    history = read_history(hist_path)
    line = {
        **summary,
        "mode": raw.get("mode"),
        "timestamp": raw.get("timestamp"),
        "git_commit": raw.get("git_commit"),
    }
    record["regression_threshold"] = threshold
    record["regressions"] = regressions(line, history, threshold)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(raw.get("unix_time", time.time())))
    for name in (f"{stamp}-{raw.get('mode')}.json", f"latest-{raw.get('mode')}.json"):
        (results / name).write_text(json.dumps(record, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    line["regressions"] = record["regressions"]
    with hist_path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    return record
