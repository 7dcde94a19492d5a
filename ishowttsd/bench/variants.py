"""Fast-path variants by name (``bf16``, ``fp8_ff``, ``fp16_exact``, ...) and the fast sampler
each one builds on the bench's model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ishowttsd.bench import workload
from ishowttsd.bench.harness import Bench
from ishowttsd.engine.f5.fast import FastSampler
from ishowttsd.engine.f5.quant import CALIBRATED
from ishowttsd.engine.f5.settings import InferenceConfig


def variant_options(name: str) -> dict[str, Any]:
    """``bf16``, ``fp16``, ``fp32``, ``fp8`` (bf16 + fp8 GEMMs, quantisation fused, fast
    accumulation), ``fp8s`` (bf16 + fp8 GEMMs for QKV, FF1 and FF2 with calibrated per-tensor
    activation scales),
    ``int8`` (fp16 + W8A8 GEMMs, SmoothQuant-calibrated), with optional suffixes:
    ``_noacc`` (fp8 without fast accumulation), ``_ff`` (fp8 for FF1 and FF2 too, not only QKV),
    ``_all`` (and for the attention output projection),
    ``_sdpa`` (mask through SDPA's attn_mask), ``_exact`` (no length buckets), ``_dyn`` (one
    dynamic-shape compile), ``_eager`` (no compile, no graph), ``_graph`` (graph, no compile),
    ``_cudnn`` (the positional conv through cuDNN instead of the fused Triton kernel), ``_nogelu``
    (FF GELU as its own kernel), ``_nodefer`` (each block adds its own FF residual), ``_maxat``
    (compile mode max-autotune-no-cudagraphs), ``_cublas`` (fp8s through cuBLASLt with the
    scales, bias and GELU in elementwise kernels, not the Triton GEMM's epilogue), ``_pack``
    (batches packed, exact lengths, uncaptured), ``_packg`` (packed on the 1024-frame ladder,
    one captured graph per shape).
    Without suffixes, the daemon's ``[f5.fast]`` defaults."""
    base, *mods = name.split("_")
    quant = {"fp8s": "fp8_static"}.get(base, base if base in ("fp8", "int8") else "none")
    dtype = {"fp8": "bf16", "int8": "fp16", "fp8s": "bf16"}.get(base, base)
    opts: dict[str, Any] = {"dtype": dtype, "quant": quant, "fast_accum": quant.startswith("fp8")}
    for m in mods:
        if m == "noacc":
            opts["fast_accum"] = False
        elif m == "all":
            opts["fp8_layers"] = ("qkv", "out", "ff1", "ff2")
        elif m == "ff":
            opts["fp8_layers"] = ("qkv", "ff1", "ff2")
        elif m == "sdpa":
            opts["attn_mode"] = "sdpa"
        elif m == "fa2":
            opts["attn_mode"] = "flash_seqlen"
        elif m == "pack":
            opts["pack"] = True
        elif m == "packg":
            opts.update(pack=True, pack_bucket_frames=1024)
        elif m == "exact":
            opts["bucket_frames"] = 0
        elif m == "dyn":
            opts["compile_dynamic"] = True
        elif m == "cudnn":
            opts["conv_impl"] = "cudnn"
        elif m == "nogelu":
            opts["gelu_epilogue"] = False
        elif m == "nodefer":
            opts["defer_residual"] = False
        elif m == "cublas":
            opts["fp8_gemm"] = "cublas"
        elif m == "maxat":
            opts["compile_mode"] = "max-autotune-no-cudagraphs"
        elif m == "eager":
            opts.update(compile=False, graph=False)
        elif m == "graph":
            opts["compile"] = False
        else:
            raise ValueError(f"unknown variant suffix {m!r} in {name!r}")
    return opts


def fast_sampler(b: Bench, dtype: str, *, quant: str = "none", fast_accum: bool = False, compile: bool = True,
                 graph: bool = True, fp8_layers: Sequence[str] | None = None,
                 cfg: InferenceConfig | None = None, fused: Any = None, attn_mode: str | None = None,
                 bucket_frames: int | None = None, compile_dynamic: bool | None = None,
                 conv_impl: str | None = None, gelu_epilogue: bool = True, defer_residual: bool = True,
                 compile_mode: str = "default", fp8_gemm: str = "auto",
                 pack: bool = False, pack_bucket_frames: int = 0) -> FastSampler:  # fmt: skip
    fs = FastSampler(
        b.m.dit, cfg or b.cfg, dtype=dtype, quant=quant, fast_accum=fast_accum, fp8_layers=fp8_layers,
        compile=compile and b.plan.compile, cuda_graph=graph,
        bucket_frames=b.plan.bucket_frames if bucket_frames is None else bucket_frames,
        attn_mode=attn_mode or b.plan.attn_mode, fused=fused,
        compile_dynamic=b.plan.compile_dynamic if compile_dynamic is None else compile_dynamic,
        conv_layout=b.plan.conv_layout, conv_impl=conv_impl or b.plan.conv_impl,
        gelu_epilogue=gelu_epilogue, compile_mode=compile_mode, defer_residual=defer_residual,
        fp8_gemm=fp8_gemm, pack=pack, pack_bucket_frames=pack_bucket_frames,
    )  # fmt: skip
    if fs.fused.quant in CALIBRATED:  # on three chat lines that are not the measured ones
        fs.calibrate([b.job(t, 90 + i) for i, t in enumerate(CALIBRATION_LINES)])
    return fs


CALIBRATION_LINES = (workload.MIXED_LINES[5], workload.MIXED_LINES[6], workload.MIXED_LINES[11])
