# ruff: noqa: B023  (each lambda is timed at once, inside its loop iteration)
"""Kernel probes for the fp8 path (GPU): fp8gemm's Triton GEMM (epilogue included) against
cuBLASLt in bf16 and fp8 at the DiT's linear shapes, and attention: SDPA's own choice against
SageAttention's int8-QK Triton kernel where that package is installed.
``python -m ishowttsd.bench.kprobe``; prints tables (for docs/perf-log.md), not a record."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ishowttsd.bench.probe import bench_ms
from ishowttsd.engine.f5 import fp8gemm, quant

LAYERS = {"qkv": (1024, 3072), "out": (1024, 1024), "ff1": (1024, 2048), "ff2": (2048, 1024)}
"""(K, N) of the DiT's four linears (F5TTS_v1_Base: dim 1024, feed-forward 2048)."""
ROWS = {"first chunk": 1160, "line": 1996, "16 lines": 31936}
"""M: tokens with CFG (both halves) for the bench's first chunk, line and 16 x the line."""


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


def gemms() -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    bf = torch.bfloat16
    for rows, m in ROWS.items():
        print(f"linears, M={m} ({rows}): ms, TFLOP/s; triton's error vs its fp32 reference")
        for name, (k, n) in LAYERS.items():
            x = torch.randn(m, k, device=dev, dtype=bf)
            w = (torch.randn(n, k, device=dev) / math.sqrt(k)).to(bf)
            b = 0.1 * torch.randn(n, device=dev)
            wq, ws = quant.quantize_weight(w, "fp8")
            wg = ws.amax().reshape(())
            xs = quant.static_scale(x.abs().amax(dim=0).float())
            xq = (x.float() / xs).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
            gelu = name == "ff1"
            out_inv = torch.tensor(0.5, device=dev) if gelu else None  # FF1 writes FF2's fp8 input
            wr, bb = ws / wg, b.to(bf)

            def cublas8() -> torch.Tensor:
                return torch._scaled_mm(xq, wq, scale_a=xs, scale_b=wg, out_dtype=bf, use_fast_accum=True)

            def triton8(tma: bool) -> torch.Tensor:
                return fp8gemm._triton_fp8_gemm(xq, wq, xs, wg, wr, b, gelu, out_inv, bf, tma=tma)

            times = {
                "bf16 F.linear": bench_ms(lambda: F.linear(x, w, bb)),
                "fp8 _scaled_mm": bench_ms(cublas8),
                "fp8 triton": bench_ms(lambda: triton8(False)),
                "fp8 triton tma": bench_ms(lambda: triton8(True)),
            }
            want = fp8gemm.fp8_gemm_reference(xq, wq, xs, wg, wr, b, gelu, out_inv, bf)
            errs = " ".join(f"{rel(triton8(t), want):.1e}" for t in (False, True))
            fl = 2 * m * n * k
            cells = "  ".join(f"{kk} {v * 1e3:6.1f} us {fl / v / 1e9:4.0f}" for kk, v in times.items())
            print(f"  {name:4s} {cells}  err {errs}")
    for key, cfg in fp8gemm.best_configs().items():
        print(f"  tuned {key}: {cfg}")


def attention() -> None:
    dev = torch.device("cuda")
    try:
        from sageattention import sageattn  # type: ignore[import-not-found]  # optional, not a dependency
    except ImportError:
        sageattn = None
    for b2, n in ((2, 580), (2, 998), (32, 998)):
        q, k, v = (torch.randn(b2, 16, n, 64, device=dev, dtype=torch.bfloat16) for _ in range(3))
        fl = 4 * b2 * 16 * n * n * 64
        row = {"sdpa": bench_ms(lambda: F.scaled_dot_product_attention(q, k, v))}
        err = ""
        if sageattn is not None:
            kk = k.clone()  # sageattn subtracts k's mean in place
            row["sage"] = bench_ms(lambda: sageattn(q, kk, v, tensor_layout="HND", is_causal=False))
            want = F.scaled_dot_product_attention(q, k, v)
            got = sageattn(q, k.clone(), v, tensor_layout="HND", is_causal=False)
            err = f"  sage err {rel(got, want):.1e}"
        cells = "  ".join(f"{kk2} {t * 1e3:7.1f} us {fl / t / 1e9:4.0f} TFLOP/s" for kk2, t in row.items())
        print(f"attention B*2={b2} N={n}: {cells}{err}")


if __name__ == "__main__":
    import sys

    gemms()
    if "--no-attention" not in sys.argv:
        attention()
