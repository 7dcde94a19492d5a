# ruff: noqa: B023  (each lambda is timed at once, inside its loop iteration)
"""Where the fast path's time goes (GPU): attention and conv micro-benchmarks, and a profile of
one compiled sampling loop. ``python -m ishowttsd.bench.probe``; prints tables (for
docs/perf-log.md), not a record."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ishowttsd.bench.flops import cuda_median_ms
from ishowttsd.engine.f5 import attention as attn_ops


def bench_ms(fn: Any, reps: int = 50) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    g: torch.cuda.CUDAGraph | None = torch.cuda.CUDAGraph()
    try:
        assert g is not None
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
        kb[:, valid:] = attn_ops.MASKED_LOGIT
        rows: dict[str, float | str] = {}
        for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                         ("efficient", SDPBackend.EFFICIENT_ATTENTION)):  # fmt: skip
            try:
                with sdpa_kernel([be]):
                    rows[f"{name} nomask"] = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v))
            except Exception as ex:
                rows[f"{name} nomask"] = f"n/a ({type(ex).__name__})"
            try:
                with sdpa_kernel([be]):
                    rows[f"{name} augment"] = bench_ms(lambda: attn_ops.attention(q, k, v, kb, "augment"))
            except Exception as ex:
                rows[f"{name} augment"] = f"n/a ({type(ex).__name__})"
            try:
                with sdpa_kernel([be]):
                    rows[f"{name} mask"] = bench_ms(lambda: attn_ops.attention(q, k, v, kb, "sdpa"))
            except Exception as ex:
                rows[f"{name} mask"] = f"n/a ({type(ex).__name__})"
        rows["default augment"] = bench_ms(lambda: attn_ops.attention(q, k, v, kb, "augment"))
        rows["default mask"] = bench_ms(lambda: attn_ops.attention(q, k, v, kb, "sdpa"))
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
    from ishowttsd.bench import harness, variants, workload

    b = harness.setup(harness.Plan(size=size, device="cuda"), print)
    for variant, texts in (
        ("bf16", [workload.LINE]),
        ("bf16", [workload.LINE] * 16),
        ("fp8", [workload.LINE]),
    ):
        fs = variants.fast_sampler(b, **variants.variant_options(variant), graph=False)
        p = profiled(fs, [b.job(t, i) for i, t in enumerate(texts)])
        print(f"--- profile {variant} x{len(texts)} (one 8-step loop, compiled, no graph)")
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))


def profiled(fs: Any, jobs: list[Any]) -> Any:
    """The CUDA profile of one sampling loop over ``jobs`` (after two untimed ones)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    for _ in range(2):
        fs.sample(jobs, slots=len(jobs))
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        fs.sample(jobs, slots=len(jobs))
        torch.cuda.synchronize()
    return p


def print_kinds(p: Any, title: str) -> None:
    """A profile's kernel time summed by :func:`category`, largest first."""
    cats: dict[str, float] = {}
    counts: dict[str, int] = {}
    for ev in p.key_averages():
        cats[category(ev.key)] = cats.get(category(ev.key), 0.0) + ev.self_device_time_total / 1e3
        counts[category(ev.key)] = counts.get(category(ev.key), 0) + int(ev.count)
    total = sum(cats.values())
    print(f"kernel time by kind, {title}: {total:.2f} ms")
    for k, v in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"  {k:32s} {v:8.2f} ms  {100 * v / total:5.1f}%  {counts[k]:6d} launches")


def category(name: str) -> str:
    n = name.lower()
    if "sdpa" in n or "fmha" in n or "flash" in n or ("attention" in n and "triton" not in n):
        return "attention"
    if "fprop" in n or "conv" in n or "nchwtonhwc" in n or "nhwctonchw" in n:
        return "pos-conv"
    if "nvjet" in n or "gemm" in n or "cutlass" in n or ("scaled_mm" in n and "triton" not in n):
        return "gemm"
    if "int8_mm" in n:
        return "gemm (int8, triton)"
    if "triton" in n:
        return "fused elementwise (inductor)"
    return "other"


def replay_ms(fn: Any, reps: int = 20) -> float:
    """Median of CUDA-event times around ``fn`` (a graph replay plus a few small copies)."""
    return cuda_median_ms(fn, reps)


def matrix(dtype: str = "fp16") -> None:
    """First chunk and line, DiT loop only (graph replay, CUDA events, median of 20): attention
    mask mode x positional-conv layout; then a kernel breakdown of the winner. Prints BEST."""
    from ishowttsd.bench import harness, workload
    from ishowttsd.engine.f5.fast import FastSampler

    b = harness.setup(harness.Plan(size="full", device="cuda"), print)
    cases = {"first_chunk": workload.FIRST_CHUNK, "line": workload.LINE}
    score: dict[tuple[str, bool], float] = {}
    for attn in ("sdpa", "augment"):
        fs = FastSampler(b.m.dit, b.cfg, dtype=dtype, attn_mode=attn, bucket_frames=32)
        for name, text in cases.items():
            job = b.job(text, 1)
            bt, frames, masked = fs.shape_for([job.frames])
            for contig in (False, True):
                fs.plans.clear()
                fs.fused.conv_contiguous[(2 * bt, frames)] = contig
                ms = replay_ms(lambda: fs.sample([job]))
                score[(attn, contig)] = score.get((attn, contig), 0.0) + ms
                print(
                    f"  {name:12s} {frames} masked={masked} attn={attn:8s} contig={contig!s:5s} {ms:.3f} ms"
                )
    (attn, contig), _ = min(score.items(), key=lambda kv: kv[1])
    print(f"BEST {attn} {'contiguous' if contig else 'view'}")
    fs = FastSampler(b.m.dit, b.cfg, dtype=dtype, attn_mode=attn, bucket_frames=0, cuda_graph=False)
    job = b.job(workload.LINE, 1)
    fs.fused.conv_contiguous[(2, job.frames)] = contig
    print_kinds(profiled(fs, [job]), f"{dtype} line {job.frames} frames exact, 8 steps (no graph)")


def posconv_probe() -> None:
    """The fused Triton positional conv against cuDNN (both layouts): error and time per shape,
    and a sweep of (rows per program, warps, stages) for ``posconv.block_rows``."""
    from ishowttsd.engine.f5 import posconv

    dev = torch.device("cuda")
    g, d, k = 16, 1024, 31
    torch.manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16):
        w = (torch.randn(d, d // g, k, device=dev) / (d // g * k) ** 0.5).to(dtype)
        bias = (0.1 * torch.randn(d, device=dev)).to(dtype)
        wp = posconv.pack_weight(w, g)
        for b2, n in ((2, 608), (2, 1024), (8, 1024), (32, 672), (32, 1024)):
            x = torch.randn(b2, n, d, device=dev, dtype=dtype)
            lengths = torch.full((b2,), n, dtype=torch.int32, device=dev)
            lengths[b2 // 2 :] = n - 37  # half the rows padded, as in a mixed batch
            ref = posconv.reference(x.float(), w.float(), bias.float(), lengths, g, x.float())
            got = posconv.conv_mish(x, wp, w, bias, lengths, g, residual=x, impl="triton")
            err = ((got.float() - ref).norm() / ref.norm()).item()
            cud = posconv.reference(x, w, bias, lengths, g, x)
            err_cudnn = ((cud.float() - ref).norm() / ref.norm()).item()
            t_cudnn = bench_ms(lambda: posconv.reference(x, w, bias, lengths, g, x))
            xc = x.transpose(1, 2).contiguous()
            t_cudnn_c = bench_ms(lambda: F.mish(F.conv1d(xc, w, bias, padding=k // 2, groups=g)))
            best: tuple[float, tuple[int, int, int]] | None = None
            sweep = []
            configs = ((32, 4, 3), (64, 4, 3), (64, 4, 4), (64, 8, 3), (128, 4, 3), (128, 8, 3), (128, 8, 4))
            for cfg in configs:
                try:
                    t = bench_ms(lambda: posconv.conv_mish(x, wp, w, bias, lengths, g, residual=x,
                                                           impl="triton", config=cfg))  # fmt: skip
                except Exception as ex:  # a config that does not fit shared memory
                    sweep.append(f"{cfg}: n/a ({type(ex).__name__})")
                    continue
                sweep.append(f"{cfg}: {t:.4f}")
                if best is None or t < best[0]:
                    best = (t, cfg)
            t_default = bench_ms(
                lambda: posconv.conv_mish(x, wp, w, bias, lengths, g, residual=x, impl="triton")
            )
            flops = 2 * b2 * n * d * (d // g) * k
            print(f"{str(dtype)[6:]} B2={b2} N={n}: rel err triton {err:.2e} cudnn {err_cudnn:.2e} | "
                  f"cudnn {t_cudnn:.4f} ms (contig in {t_cudnn_c:.4f}) | triton default "
                  f"{posconv.block_rows(b2, n)} rows {t_default:.4f} ms "
                  f"({flops / t_default / 1e9:.0f} TFLOP/s)"
                  f" | best {best}")  # fmt: skip
            print("   sweep " + "; ".join(sweep))


def breakdown(dtype: str = "fp16") -> None:
    """Kernel time by kind for the daemon's defaults (exact shapes, fused conv, GELU epilogue,
    deferred residual): the line, the first chunk, and 16 x the line, one 8-step loop each
    (compiled, no graph, so the profiler sees every kernel)."""
    from ishowttsd.bench import harness, variants, workload

    b = harness.setup(harness.Plan(size="full", device="cuda"), print)
    fs = variants.fast_sampler(b, dtype, graph=False, bucket_frames=0)
    for name, texts in (("line", [workload.LINE]), ("first_chunk", [workload.FIRST_CHUNK]),
                        ("16 x line", [workload.LINE] * 16)):  # fmt: skip
        jobs = [b.job(t, i) for i, t in enumerate(texts)]
        print_kinds(profiled(fs, jobs), f"{dtype} {name} ({jobs[0].frames} frames, exact), 8 steps")


def quant_probe() -> None:
    """The low-precision linears at the DiT's shapes (one line, 16 lines; CFG rows): fp16
    ``F.linear``, fp8 ``_scaled_mm`` row-wise with bias (fast accumulation on/off), the int8
    Triton kernel (error against ``torch._int_mm``); then kernel time by kind for one 8-step loop
    of the line in fp16, fp8 and int8 (did the quantisation fuse into the producing kernels?)."""
    from ishowttsd.bench import harness, variants, workload
    from ishowttsd.engine.f5 import quant

    dev = torch.device("cuda")
    shapes = (("qkv", 1024, 3072), ("out", 1024, 1024), ("ff1", 1024, 2048), ("ff2", 2048, 1024))
    for m in (1996, 31936):
        for name, k, n in shapes:
            x = torch.randn(m, k, device=dev, dtype=torch.float16)
            w = torch.randn(n, k, device=dev, dtype=torch.float16) / k**0.5
            bias = torch.randn(n, device=dev, dtype=torch.float16)
            row: dict[str, float | str] = {"fp16": bench_ms(lambda: F.linear(x, w, bias))}
            w8, s8 = quant.quantize_weight(w, "fp8")
            xb, bb = x.bfloat16(), bias.bfloat16()
            xq, xs = quant.quantize_rows(xb, "fp8")
            for acc in (True, False):
                bf = torch.bfloat16
                row[f"fp8 acc={acc}"] = bench_ms(
                    lambda: torch._scaled_mm(xq, w8, xs, s8, bias=bb, out_dtype=bf, use_fast_accum=acc)
                )
            row["fp8 quant x"] = bench_ms(lambda: quant.quantize_rows(xb, "fp8"))
            wi, si = quant.quantize_weight(w, "int8")
            xi, xsi = quant.quantize_rows(x, "int8")
            got = quant.int8_mm(xi, wi, xsi, si, bias, False, torch.float16)
            ref = quant.int8_mm_reference(xi, wi, xsi, si, bias, False, torch.float16)
            row["int8 err"] = f"{float((got.float() - ref.float()).norm() / ref.float().norm()):.1e}"
            row["int8 triton"] = bench_ms(lambda: quant.int8_mm(xi, wi, xsi, si, bias, False, torch.float16))
            row["int8 _int_mm"] = bench_ms(lambda: torch._int_mm(xi, wi))
            cells = "  ".join(
                f"{kk} {v:.4f}" if isinstance(v, float) else f"{kk} {v}" for kk, v in row.items()
            )
            print(f"M={m} {name} {k}->{n}: {cells}", flush=True)
    b = harness.setup(harness.Plan(size="full", device="cuda"), print)
    for variant in ("fp16_exact", "fp8_exact", "int8_exact"):
        fs = variants.fast_sampler(b, **variants.variant_options(variant), graph=False)
        jobs = [b.job(workload.LINE, 1)]
        print_kinds(profiled(fs, jobs), f"{variant} line ({jobs[0].frames} frames), 8 steps")
        del fs


PROBES: dict[str, Callable[[], None]] = {
    "matrix": matrix,
    "attention": attention,
    "conv": conv,
    "posconv": posconv_probe,
    "breakdown": breakdown,
    "quant": quant_probe,
    "profile": profile,
}
"""The probes by name, in the order they run (whatever the order asked)."""

if __name__ == "__main__":
    what = sys.argv[1:] or ["attention", "conv", "profile"]
    for name, probe in PROBES.items():
        if name in what:
            probe()
