"""``ishowtts-bench``: measure the stock f5-tts path against the daemon's fast path.

  ishowtts-bench                      full-size random F5TTS_v1_Base on the GPU (the real bench)
  ishowtts-bench --smoke              tiny model on the CPU: every section runs, nothing is timed
                                      against targets (what CI runs)
  ishowtts-bench --ingest FILE.json   add a record made elsewhere (the GPU box) to bench/results,
                                      its history and PNG

Results: ``<results>/<stamp>-<mode>.json`` and ``latest-<mode>.json``, one line appended to
``<results>/history.jsonl``, ``<results>/history.png``. Exit status 0; 1 with
``--fail-on-regression`` when a figure regressed past ``--regression-threshold``; 2 on bad use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ishowttsd import log

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ishowtts-bench", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model on the CPU, few repetitions (CI)")
    p.add_argument("--device", default=None, help="torch device (default: cuda, or cpu with --smoke)")
    p.add_argument("--size", choices=("full", "tiny"), default=None)
    p.add_argument("--nfe", type=int, default=8)
    p.add_argument("--reps", type=int, default=None, help="timed runs per figure (median; default 10)")
    p.add_argument("--warmups", type=int, default=None, help="untimed runs first (default 2)")
    p.add_argument("--variants", default="bf16,fp16,fp8", help="fast-path precisions (comma list)")
    p.add_argument("--main", default="bf16", help="the variant the top-level figures report")
    p.add_argument("--sweep", default="6,7,8,12,16,32", help="NFE sweep (comma list; empty: none)")
    p.add_argument("--no-ablations", action="store_true", help="skip eager / graph-only ablations")
    p.add_argument("--attn-mode", choices=("auto", "sdpa", "augment", "flash_seqlen"), default="auto")
    p.add_argument("--conv-layout", choices=("view", "contiguous", "auto"), default="view")
    p.add_argument("--conv-impl", choices=("auto", "triton", "cudnn"), default="auto")
    p.add_argument("--bucket-frames", type=int, default=32)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results directory")
    p.add_argument("--out", type=Path, default=None, help="also write the record here")
    p.add_argument("--no-record", action="store_true", help="do not write results/history/PNG")
    p.add_argument("--regression-threshold", type=float, default=0.10, help="fraction (default 0.10)")
    p.add_argument("--fail-on-regression", action="store_true")
    p.add_argument("--warm-cache", action="store_true", help="also time warm-up with a warm compile cache")
    p.add_argument(
        "--budget-s", type=float, default=0.0, help="skip sections starting after this (0: no limit)"
    )
    p.add_argument("--ingest", type=Path, default=None, help="record JSON to add to results (no measuring)")
    p.add_argument("--warmup-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--daemon",
        default="",
        help="run the daemon's engine with these [f5.fast] quant values (quant+attn_mode: that too)",
    )
    p.add_argument("--daemon-main", default=None, help="the daemon run the daemon_* keys report")
    p.add_argument("--daemon-oneshot", default=None, help="the variant daemon_line_ms is compared with")
    p.add_argument("--fp8-variant", default=None, help="the variant the fp8_* keys report")
    p.add_argument("--int8-variant", default=None, help="the variant int8_rel_error reports")
    return p.parse_args(argv)


def plan_from(a: argparse.Namespace) -> Any:
    from ishowttsd.bench.harness import Plan

    smoke = a.smoke
    sweep = tuple(int(x) for x in a.sweep.split(",") if x.strip())
    return Plan(
        size=a.size or ("tiny" if smoke else "full"),
        device=a.device or ("cpu" if smoke else "cuda"),
        nfe=a.nfe,
        warmups=a.warmups if a.warmups is not None else (1 if smoke else 2),
        reps=a.reps if a.reps is not None else (2 if smoke else 10),
        sweep=(8,) if smoke and a.sweep == "6,7,8,12,16,32" else sweep,
        sweep_reps=1 if smoke else 5,
        variants=tuple(v for v in a.variants.split(",") if v),
        main=a.main,
        concurrency=(1, 4) if smoke else (1, 4, 16),
        bucket_frames=a.bucket_frames,
        attn_mode=a.attn_mode,
        conv_layout=a.conv_layout,
        conv_impl=a.conv_impl,
        ablations=not a.no_ablations,
        budget_s=a.budget_s,
        daemon=tuple(x for x in a.daemon.split(",") if x),
        daemon_reps=2 if smoke else 7,
    )


def environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    try:
        from importlib.metadata import version

        env["f5_tts"] = version("f5-tts")
        env["vocos"] = version("vocos")
    except Exception:
        env["f5_tts"] = "unknown"
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        env["capability"] = list(torch.cuda.get_device_capability())
    else:
        import platform

        env["device"] = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} threads)"
    return env


def finish(raw: dict[str, Any], a: argparse.Namespace) -> int:
    from ishowttsd.bench import plot, record

    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
    if a.no_record:
        rec = {**record.summarise(raw), "regressions": []}
    else:
        rec = record.write(raw, a.results, a.regression_threshold)
        hist = record.read_history(a.results / "history.jsonl")
        drew = plot.draw(hist, rec, a.results / "history.png")
        if not drew:
            print("note: matplotlib not installed (pip install 'ishowttsd[bench]'); no PNG drawn")
    print_table(rec)
    if rec.get("regressions"):
        print("REGRESSION: " + "; ".join(rec["regressions"]))
        return 1 if a.fail_on_regression else 0
    return 0


def print_table(rec: dict[str, Any]) -> None:
    def f(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    print(f"device {rec.get('device')}  nfe {rec.get('nfe')}  mode {rec.get('mode')}")
    print(
        f"  stock RTF {f(rec.get('stock_rtf'), '.4f')}   fast RTF {f(rec.get('rtf'), '.5f')}   "
        f"speedup {f(rec.get('speedup'), '.1f')}x"
    )
    print(
        f"  TTFA {f(rec.get('ttfa_ms'), '.2f')} ms   16 lines {f(rec.get('x_realtime_16'), '.0f')}x RT  "
        f"rel mel error {f(rec.get('rel_error'), '.2e')}"
    )
    paths = {k: rec.get(k) for k in record_path_keys() if rec.get(k) is not None}
    if paths:
        print("  " + "  ".join(f"{k} {v:.4g}" for k, v in paths.items()))
    fast = rec.get("fast") or {}
    if fast:
        print(
            f"  {'variant':18s} {'line ms':>8s} {'RTF':>8s} {'TTFA ms':>8s} {'x16':>6s} {'x16same':>7s}"
            f" {'err':>9s}"
        )
        fid = rec.get("fidelity") or {}
        for name, v in fast.items():
            conc = v.get("concurrency") or {}
            print(
                f"  {name:18s} {f(v.get('line_ms'), '8.2f')} {f(v.get('rtf'), '8.5f')} "
                f"{f(v.get('ttfa_ms'), '8.2f')} {f((conc.get('16') or {}).get('x_realtime'), '6.0f')} "
                f"{f((conc.get('16_same') or {}).get('x_realtime'), '7.0f')} {f(fid.get(name), '9.2e')}"
            )
    for k, v in (rec.get("errors") or {}).items():
        print(f"  ERROR in {k}: {v[:300]}")


def record_path_keys() -> tuple[str, ...]:
    from ishowttsd.bench import record

    return record.PATH_KEYS


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    log.configure("warning" if not a.warmup_probe else "error")
    if a.ingest is not None:
        try:
            raw = json.loads(a.ingest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            print(f"ishowtts-bench: --ingest {a.ingest}: {e}", file=sys.stderr)
            return 2
        return finish(raw, a)
    plan = plan_from(a)
    import torch

    if plan.device.startswith("cuda") and not torch.cuda.is_available():
        print("ishowtts-bench: no CUDA device; use --smoke for the CPU smoke mode", file=sys.stderr)
        return 2
    from ishowttsd.bench import harness, measure

    if a.warmup_probe:
        print(json.dumps(measure.warmup_probe(plan, lambda s: None)))
        return 0
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if cache is None and not a.smoke:
        # a fresh cache, so the first compile is a cold one and the probe's is a warm one
        cache = tempfile.mkdtemp(prefix="ishowtts-bench-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache

    def say(s: str) -> None:
        print(s, flush=True)

    if a.out is not None:
        out_path = a.out

        def checkpoint(out: dict[str, Any]) -> None:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.with_suffix(".partial.json").write_text(json.dumps(out, indent=1, default=str) + "\n")

        plan.checkpoint = checkpoint
    t0 = time.time()
    b = harness.setup(plan, say)
    b.out.update(_header(a, plan, b, t0))
    measure.run_all(b)
    if a.warm_cache and b.cuda:
        # the probe must warm up exactly the main variant's shapes (it once ran the default
        # --main, bf16 with buckets, and so never found the main variant's compiled graphs)
        argv_probe = ["--size", plan.size, "--device", plan.device, "--nfe", str(plan.nfe),
                      "--main", plan.main, "--bucket-frames", str(plan.bucket_frames),
                      "--attn-mode", plan.attn_mode, "--conv-layout", plan.conv_layout,
                      "--conv-impl", plan.conv_impl]  # fmt: skip
        harness.guarded(b, "warm_cache", lambda: measure.measure_warm_cache(b, argv_probe, dict(os.environ)))
    b.out["wall_s"] = time.time() - t0
    _derive(b.out)
    return finish(b.out, a)


def _header(a: argparse.Namespace, plan: Any, b: Any, t0: float) -> dict[str, Any]:
    """The record's description of the run: mode, time, variants, model, workload, plan, machine."""
    from ishowttsd.bench import workload

    return dict(
        mode="smoke" if a.smoke else "gpu",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        unix_time=t0,
        nfe=plan.nfe,
        main_variant=plan.main if b.cuda else "fp32",
        fp8_variant=a.fp8_variant,
        int8_variant=a.int8_variant,
        daemon_main=a.daemon_main,
        daemon_oneshot=a.daemon_oneshot,
        git_commit=__import__("ishowttsd.bench.record", fromlist=["git_commit"]).git_commit(REPO),
        model={
            "arch": b.m.arch_name,
            "params": b.m.params,
            "weights": "random (seeded), AdaLN/output re-randomised",
        },
        workload={
            "ref_s": 5.0,
            "ref_text": workload.REF_TEXT,
            "line": workload.LINE,
            "first_chunk": workload.FIRST_CHUNK,
            "mixed_lines": list(workload.MIXED_LINES),
            "cfg_strength": 2.0,
            "sway": -1.0,
            "epss": True,
            "warmups": plan.warmups,
            "reps": plan.reps,
        },
        plan={
            k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(plan).items() if k != "checkpoint"
        },
        **environment(plan.device),
    )


def _derive(out: dict[str, Any]) -> None:
    """FLOP floor and fraction of it for each workload, and the Orin projection."""
    from ishowttsd.bench import flops

    fl = out.get("flops")
    peaks = out.get("peaks") or {}
    main = (out.get("fast") or {}).get(out.get("main_variant", "bf16")) or {}
    if not fl or not main:
        return
    nfe = out.get("nfe", 8)
    bf16 = peaks.get("bf16_tflops") or 0.0
    line_flops = fl["per_job"]["line"]["step_flops"] * nfe
    chunk_flops = fl["per_job"]["first_chunk"]["step_flops"] * nfe
    mixed16 = sum(j["step_flops"] for j in fl["mixed"]) * nfe
    conc = main.get("concurrency") or {}
    rows = {
        "line": (line_flops, main.get("line_ms")),
        "first_chunk": (chunk_flops, main.get("ttfa_ms")),
        "mixed_16": (mixed16, (conc.get("16") or {}).get("wall_ms")),
        "same_16": (line_flops * 16, (conc.get("16_same") or {}).get("wall_ms")),
    }
    table = {}
    for k, (fl_k, ms) in rows.items():
        floor = flops.floor_ms(fl_k, bf16)
        table[k] = {
            "tflop": fl_k / 1e12,
            "floor_ms_bf16": floor,
            "measured_ms": ms,
            "fraction_of_floor": (floor / ms) if floor and ms else None,
        }
    fl["floors"] = table
    frac = table["line"]["fraction_of_floor"]
    out["orin_projection"] = flops.orin_projection(
        line_flops, frac, main.get("audio_s") or 0.0, str(out.get("device") or "GPU")
    )


if __name__ == "__main__":
    raise SystemExit(main())
