# ruff: noqa: B023  (each lambda is timed at once, inside its loop iteration)
"""Kernel probes for the fp8 path (GPU): fp8gemm's Triton GEMM (epilogue included) against
cuBLASLt in bf16 and fp8 at the DiT's linear shapes, and attention: SDPA's own choice against
SageAttention's int8-QK Triton kernel where that package is installed.
``python -m ishowttsd.bench.kprobe``; prints tables (for docs/perf-log.md), not a record."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ishowttsd.bench import cudnn_attn
from ishowttsd.bench.probe import bench_ms
from ishowttsd.engine.f5 import attention as attn
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


def fp8_attention() -> None:
    """cuDNN's fp8 attention (cudnn_attn.py) against bf16 SDPA at the DiT's shapes: time, error
    against fp32 attention, the padding mask, and a CUDA-graph replay."""
    dev = torch.device("cuda")
    if not cudnn_attn.available(dev):
        print("fp8 attention: the cuDNN frontend is not importable here")
        return
    torch.manual_seed(0)
    for b2, n, lens in ((2, 580, None), (2, 998, None), (32, 998, None), (4, 998, (998, 998, 700, 700))):
        qkv = torch.randn(b2, n, 3, 16, 64, device=dev, dtype=torch.bfloat16)
        qkv[:, :, 0] *= 3.0  # q and k larger than v, as a trained model's are
        q, k, v = qkv.unbind(2)  # [B, N, H, D] views of the QKV output
        klen = None if lens is None else torch.tensor(lens, device=dev, dtype=torch.int32)
        scales = [quant.static_scale(t.abs().amax().reshape(1)) for t in (q, k, v)]
        q8, k8, v8 = (
            (t.float() / s).clamp(-448, 448).to(torch.float8_e4m3fn)
            for t, s in zip((q, k, v), scales, strict=True)
        )
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        mask = None
        if klen is not None:
            valid = torch.arange(n, device=dev)[None, :] < klen[:, None]
            mask = torch.where(valid, 0.0, -5000.0)[:, None, None, :]
        want = F.scaled_dot_product_attention(qt.float(), kt.float(), vt.float(), attn_mask=mask)
        mask = None if mask is None else mask.to(torch.bfloat16)
        so = quant.static_scale(want.abs().amax().reshape(1))
        fl = 4 * b2 * 16 * n * n * 64
        args = (q8, k8, v8, scales[0], scales[1], scales[2], 1.0 / so, klen)
        try:
            got = cudnn_attn.fp8_sdpa(*args)
            t8 = bench_ms(lambda: cudnn_attn.fp8_sdpa(*args))
        except Exception as e:  # a probe reports what failed and goes on
            print(f"fp8 attention B*2={b2} N={n} lens={lens}: failed: {type(e).__name__}: {e}")
            continue
        tb = bench_ms(lambda: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask))
        gotf = got.float().transpose(1, 2) * so
        ref = cudnn_attn.fp8_sdpa_reference(*args)
        rows = slice(None) if klen is None else slice(0, 700)
        err = rel(gotf[..., rows, :], want[..., rows, :])
        err_ref = rel(got.float()[:, rows], ref.float()[:, rows])
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = cudnn_attn.fp8_sdpa(*args)
        g.replay()
        torch.cuda.synchronize()
        replay = rel(out.float(), got.float())
        print(f"fp8 attention B*2={b2} N={n} lens={lens}: bf16 sdpa {tb * 1e3:6.1f} us"
              f" {fl / tb / 1e9:4.0f} TFLOP/s  fp8 cudnn {t8 * 1e3:6.1f} us {fl / t8 / 1e9:4.0f} TFLOP/s"
              f"  err vs fp32 {err:.1e}  vs reference {err_ref:.1e}  graph replay {replay:.1e}")  # fmt: skip


def masked() -> None:
    """Padded batches (the daemon's length groups): SDPA with the additive mask on each backend,
    the ``augment`` mode, and cuDNN's padding mask through the frontend, against the same batch
    unmasked; error against fp32 on the valid rows."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device("cuda")
    torch.manual_seed(1)
    for b2, n, lens in (
        (4, 998, (998, 998, 700, 700)),
        (16, 768, tuple(768 - 24 * (i // 2) for i in range(16))),
        (32, 998, tuple(998 if i % 2 == 0 else 620 for i in range(32))),
    ):
        qkv = torch.randn(b2, n, 3, 16, 64, device=dev, dtype=torch.bfloat16)
        qkv[:, :, 0] *= 3.0
        q, k, v = qkv.unbind(2)
        klen = torch.tensor(lens, device=dev, dtype=torch.int32)
        valid = torch.arange(n, device=dev)[None, :] < klen[:, None]
        kbias = torch.where(valid, 0.0, attn.MASKED_LOGIT).to(torch.bfloat16)
        mask = kbias[:, None, None, :]
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        want = F.scaled_dot_product_attention(qt.float(), kt.float(), vt.float(), attn_mask=mask.float())
        runs = {
            "unmasked": lambda: F.scaled_dot_product_attention(qt, kt, vt),
            "mask": lambda: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask),
            "augment": lambda: attn.attention(qt, kt, vt, kbias, "augment"),
        }
        for name, backend in (
            ("mask cudnn", SDPBackend.CUDNN_ATTENTION),
            ("mask eff", SDPBackend.EFFICIENT_ATTENTION),
        ):

            def forced(backend: SDPBackend = backend) -> torch.Tensor:
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)

            runs[name] = forced
        cu = torch.arange(0, (b2 + 1) * n, n, device=dev, dtype=torch.int32)

        def flash_used() -> torch.Tensor:
            # FA2's varlen entry with every sequence N long and only klen keys used per sequence
            q2, k2, v2 = (t.reshape(b2 * n, 16, 64) for t in (q, k, v))
            out = torch.ops.aten._flash_attention_forward(
                q2, k2, v2, cu, cu, n, n, 0.0, False, False, seqused_k=klen
            )
            return out[0].view(b2, n, 16, 64).transpose(1, 2)

        def eff_seqlen() -> torch.Tensor:
            out = torch.ops.aten._efficient_attention_forward(q, k, v, None, None, None, n, n, 0.0, 0, False,
                                                              seqlen_k=klen)  # fmt: skip
            return out[0].transpose(1, 2)

        runs["flash seqused_k"] = flash_used
        runs["eff seqlen_k"] = eff_seqlen
        if cudnn_attn.available(dev):
            runs["frontend padded"] = lambda: cudnn_attn.bf16_sdpa(q, k, v, klen).transpose(1, 2)
        fl = 4 * 16 * 64 * sum(x * x for x in lens)
        cells = []
        for name, fn in runs.items():
            try:
                t = bench_ms(fn)
                got = fn().float()
                e = rel(got * valid[:, None, :, None], want * valid[:, None, :, None])
                cells.append(f"{name} {t * 1e3:.1f} us {fl / t / 1e9:.0f} ({e:.0e})")
            except Exception as ex:  # a probe reports what failed and goes on
                cells.append(f"{name} failed: {type(ex).__name__}: {str(ex)[:120]}")
        print(f"masked attention B*2={b2} N={n}: " + "  ".join(cells))


SWEEP = [
    (bm, bn, bk, w, st)
    for bm, bn, bk, w, st in (
        (64, 64, 128, 4, 4), (64, 64, 128, 4, 6), (64, 128, 128, 4, 3), (64, 128, 128, 4, 4),
        (64, 128, 128, 4, 5), (64, 128, 64, 4, 6), (64, 256, 128, 8, 3), (64, 256, 64, 4, 4),
        (128, 64, 128, 4, 4), (128, 64, 128, 4, 5), (128, 128, 128, 4, 3), (128, 128, 128, 4, 4),
        (128, 128, 128, 8, 3), (128, 128, 128, 8, 4), (128, 128, 64, 4, 5), (128, 128, 64, 8, 6),
        (128, 256, 128, 8, 3), (128, 256, 64, 8, 4),
    )
]  # fmt: skip
"""Tiles swept at one line's rows: (BM, BN, BK, warps, stages)."""


def _operands(m: int, k: int, n: int, name: str) -> tuple[torch.Tensor, ...]:
    """One layer's fp8 GEMM operands at ``m`` rows for the sweeps: (xq, wq_t, y, x_scale,
    w_global, w_scale, bias, out_inv); FF1 writes fp8 (its epilogue quantises FF2's input)."""
    dev = torch.device("cuda")
    x = torch.randn(m, k, device=dev)
    w = torch.randn(n, k, device=dev) / math.sqrt(k)
    b = 0.1 * torch.randn(n, device=dev)
    wq, ws = quant.quantize_weight(w, "fp8")
    wg = ws.amax().reshape(())
    xs = quant.static_scale(x.abs().amax(dim=0))
    xq = (x / xs).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
    y = torch.empty(m, n, device=dev, dtype=torch.float8_e4m3fn if name == "ff1" else torch.bfloat16)
    return xq, wq, y, xs, wg, ws / wg, b, torch.tensor(0.5, device=dev)


def sweep(rows: tuple[int, ...] = (1160, 1996)) -> None:
    """The plain kernel at every tile in :data:`SWEEP`, per layer and row count (best three)."""
    kern = fp8gemm._kernel().fn
    for m in rows:
        for name, (k, n) in LAYERS.items():
            xq, wq, y, xs, wg, wr, b, oi = _operands(m, k, n, name)
            gelu = name == "ff1"
            res = []
            for bm, bn, bk, warps, stages in SWEEP:
                grid = (-(-m // bm) * -(-n // bn),)

                def run() -> None:
                    kern[grid](xq, wq, y, xs, wg, wr, b, oi, m, n, fp8gemm.rows_key(m), xq.stride(0),
                               wq.stride(1), y.stride(0), K=k, BM=bm, BN=bn, BK=bk, GROUP_M=8, HAS_BIAS=True,
                               GELU=gelu, OUT_FP8=gelu, num_warps=warps, num_stages=stages)  # fmt: skip

                try:
                    res.append((bench_ms(run), (bm, bn, bk, warps, stages)))
                except Exception as e:  # a tile that does not fit is skipped
                    print(f"  skip {(bm, bn, bk, warps, stages)}: {type(e).__name__}")
            res.sort()
            fl = 2 * m * n * k
            cur = bench_ms(lambda: fp8gemm._triton_fp8_gemm(xq, wq, xs, wg, wr, b, gelu, oi if gelu else None,
                                                           torch.bfloat16, tma=False))  # fmt: skip
            best = "  ".join(f"{c} {t * 1e3:.1f} us {fl / t / 1e9:.0f}" for t, c in res[:3])
            print(f"sweep M={m} {name}: autotuned {cur * 1e3:.1f} us | best {best}")


TMA_SWEEP = ((128, 256, 8, 3), (128, 128, 4, 4), (128, 128, 8, 4), (128, 128, 4, 5), (256, 128, 8, 3),
             (64, 256, 4, 4), (128, 128, 8, 3), (64, 128, 4, 4))  # fmt: skip
"""TMA kernel tiles swept at 16 lines' rows: (BM, BN, warps, stages); BK is 128."""


def sweep_tma(m: int = 31936) -> None:
    """The persistent TMA kernel at every tile in :data:`TMA_SWEEP`, per layer, at ``m`` rows."""
    dev = torch.device("cuda")
    kern = fp8gemm._tma_kernel().fn
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    for name, (k, n) in LAYERS.items():
        xq, wq, y, xs, wg, wr, b, oi = _operands(m, k, n, name)
        gelu = name == "ff1"
        res = []
        for bm, bn, warps, stages in TMA_SWEEP:
            grid = (min(sms, -(-m // bm) * -(-n // bn)),)

            def run() -> None:
                kern[grid](xq, wq, y, xs, wg, wr, b, oi, m, n, fp8gemm.rows_key(m), K=k, BM=bm, BN=bn, BK=128,
                           GROUP_M=8, HAS_BIAS=True, GELU=gelu, OUT_FP8=gelu, NUM_SMS=sms, FLATTEN=True,
                           num_warps=warps, num_stages=stages)  # fmt: skip

            try:
                res.append((bench_ms(run), (bm, bn, warps, stages)))
            except Exception as e:  # a tile that does not fit is skipped
                print(f"  skip {(bm, bn, warps, stages)}: {type(e).__name__}")
        fl = 2 * m * n * k
        cells = "  ".join(f"{c} {t * 1e3:.1f} us {fl / t / 1e9:.0f}" for t, c in sorted(res))
        print(f"tma sweep M={m} {name}: {cells}")


if __name__ == "__main__":
    import sys

    if "--fp8-attention" in sys.argv:
        fp8_attention()
    if "--masked" in sys.argv:
        masked()
    if "--sweep-tma" in sys.argv:
        sweep_tma()
    if "--sweep" in sys.argv:
        sweep()
    if "--no-gemms" not in sys.argv:
        gemms()
    if "--no-attention" not in sys.argv:
        attention()
