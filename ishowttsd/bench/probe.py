# ruff: noqa: B023  (each lambda is timed at once, inside its loop iteration)
"""Where the fast path's time goes (GPU): attention and conv micro-benchmarks, and a profile of
one compiled sampling loop. ``python -m ishowttsd.bench.probe``; prints tables (for
docs/PERFORMANCE.md), not a record."""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ishowttsd.engine.f5 import fast


def bench_ms(fn: Any, reps: int = 50) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(g):
            for _ in range(10):
                fn()
    except Exception:
        g = None
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        s.record()
        if g is not None:
            g.replay()
        else:
            for _ in range(10):
                fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 10)
    times.sort()
    return times[len(times) // 2]


def attention(n: int = 1024, valid: int = 998) -> None:
    dev = torch.device("cuda")
    for b2 in (2, 32):
        q, k, v = (torch.randn(b2, 16, n, 64, device=dev, dtype=torch.bfloat16) for _ in range(3))
        kb = torch.zeros(b2, n, device=dev)
        kb[:, valid:] = fast.MASKED_LOGIT
        rows = {}
        for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                         ("efficient", SDPBackend.EFFICIENT_ATTENTION)):  # fmt: skip
            try:
                with sdpa_kernel([be]):
                    rows[f"{name} nomask"] = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v))
            except Exception as ex:
                rows[f"{name} nomask"] = f"n/a ({type(ex).__name__})"
            try:
                with sdpa_kernel([be]):
                    rows[f"{name} augment"] = bench_ms(lambda: fast._attention(q, k, v, kb, "augment"))
            except Exception as ex:
                rows[f"{name} augment"] = f"n/a ({type(ex).__name__})"
            try:
                with sdpa_kernel([be]):
                    rows[f"{name} mask"] = bench_ms(lambda: fast._attention(q, k, v, kb, "sdpa"))
            except Exception as ex:
                rows[f"{name} mask"] = f"n/a ({type(ex).__name__})"
        rows["default augment"] = bench_ms(lambda: fast._attention(q, k, v, kb, "augment"))
        rows["default mask"] = bench_ms(lambda: fast._attention(q, k, v, kb, "sdpa"))
        rows["default nomask"] = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v))
        fl = 4 * b2 * 16 * n * n * 64
        print(f"attention B*2={b2} N={n}:")
        for kname, val in rows.items():
            extra = f"  {fl / val / 1e9:.0f} TFLOP/s" if isinstance(val, float) else ""
            print(f"  {kname:20s} {val if isinstance(val, str) else f'{val:.4f} ms'}{extra}")


def conv(n: int = 1024) -> None:
    dev = torch.device("cuda")
    for b2 in (2, 32):
        x = torch.randn(b2, 1024, n, device=dev, dtype=torch.bfloat16)
        w = torch.randn(1024, 64, 31, device=dev, dtype=torch.bfloat16) * 0.02
        bias = torch.zeros(1024, device=dev, dtype=torch.bfloat16)
        for bench_mode in (False, True):
            torch.backends.cudnn.benchmark = bench_mode
            ms = bench_ms(lambda: F.conv1d(x, w, bias, padding=15, groups=16))
            print(f"conv pos-embed B*2={b2}: cudnn.benchmark={bench_mode}: {ms:.4f} ms")


def profile(size: str = "full") -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    from ishowttsd.bench import measure, workload

    b = measure.setup(measure.Plan(size=size, device="cuda"), print)
    for variant, texts in (
        ("bf16", [workload.LINE]),
        ("bf16", [workload.LINE] * 16),
        ("fp8", [workload.LINE]),
    ):
        fs = measure._fast(b, **measure.variant_options(variant), graph=False)
        jobs = [b.job(t, i) for i, t in enumerate(texts)]
        for _ in range(2):
            fs.sample(jobs, slots=len(jobs))
        torch.cuda.synchronize()
        with prof(activities=[ProfilerActivity.CUDA]) as p:
            fs.sample(jobs, slots=len(jobs))
            torch.cuda.synchronize()
        print(f"--- profile {variant} x{len(texts)} (one 8-step loop, compiled, no graph)")
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))


if __name__ == "__main__":
    what = sys.argv[1:] or ["attention", "conv", "profile"]
    if "attention" in what:
        attention()
    if "conv" in what:
        conv()
    if "profile" in what:
        profile()
