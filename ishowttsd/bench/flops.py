"""FLOP counts of the real forward, the floor they imply, and the Jetson AGX Orin projection.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one step of the reference
sampler's ``velocity`` (matmuls, convolutions, attention) at each job's exact, unpadded shape:
work that padding adds is waste, not part of the floor. The floor is FLOPs over the matmul rate
measured on the same GPU in the same run.
"""

from __future__ import annotations

from typing import Any

import torch

ORIN_DENSE_FP16_TFLOPS = 42.5
"""Jetson AGX Orin 64 GB GPU, dense fp16/bf16 tensor rate (half of the datasheet's 170 sparse INT8
TOPS for the GPU, which is 85 dense INT8 TOPS). A datasheet figure, not a measurement."""
ORIN_DENSE_INT8_TOPS = 85.0


def step_flops(dit: Any, cfg: Any, ref_mel: torch.Tensor, text: torch.Tensor, frames: int) -> int:
    """FLOPs of one guided sampling step (one DiT forward of batch 2) for one job."""
    from torch.utils.flop_counter import FlopCounterMode

    from ishowttsd.engine.f5 import sampler

    with torch.no_grad():
        c = sampler.prepare(dit, ref_mel[None], text, frames, cfg)
        x = torch.zeros(1, frames, ref_mel.shape[-1], device=ref_mel.device, dtype=ref_mel.dtype)
        counter = FlopCounterMode(display=False)
        with counter:
            sampler.velocity(x, c.t[0], c)
        dit.clear_cache()
    return int(counter.get_total_flops())


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    """Measured dense matmul rate (TFLOP/s) on random data, median of ``reps`` timed products."""
    if device.type != "cuda":
        return 0.0
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return _time_rate(lambda: a @ b, 2 * n**3, reps)


def fp8_tflops(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """Measured rowwise-scaled fp8 (e4m3) ``torch._scaled_mm`` rate, or 0 where it cannot run."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        return 0.0
    a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
    b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()
    sa = torch.ones(n, 1, device=device)
    sb = torch.ones(1, n, device=device)
    return _time_rate(
        lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16), 2 * n**3, reps
    )


def cuda_median_ms(fn: Any, reps: int = 20) -> float:
    """Median of CUDA-event times around ``fn``, in milliseconds, after 3 untimed calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return float(times[len(times) // 2])


def _time_rate(fn: Any, flops: int, reps: int) -> float:
    return flops / (cuda_median_ms(fn, reps) / 1e3) / 1e12


def floor_ms(flops: float, tflops: float) -> float | None:
    return None if tflops <= 0 else flops / (tflops * 1e12) * 1e3


def orin_projection(
    flops: float, fraction: float | None, audio_s: float, device: str = "GPU"
) -> dict[str, Any]:
    """Time on AGX Orin if it reached the same fraction of its (datasheet) floor as measured here."""
    if not fraction:
        return {"note": "no GPU measurement to project from"}
    ms = flops / (ORIN_DENSE_FP16_TFLOPS * 1e12) * 1e3 / fraction
    return {
        "label": f"PROJECTION (not measured): the {device}'s fraction of its floor applied to "
        "Orin's datasheet fp16 rate",
        "orin_dense_fp16_tflops": ORIN_DENSE_FP16_TFLOPS,
        "fraction_of_floor_used": round(fraction, 4),
        "projected_ms": round(ms, 1),
        "projected_rtf": round(ms / 1e3 / audio_s, 4) if audio_s else None,
        "int8_floor_ms": round(flops / (ORIN_DENSE_INT8_TOPS * 1e12) * 1e3, 1),
    }
