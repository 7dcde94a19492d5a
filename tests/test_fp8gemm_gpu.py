"""fp8gemm's Triton kernels (plain and TMA) against the op's fp32 reference on the GPU: every
epilogue (bias, GELU, fp8 output), row counts that are not a multiple of any tile, and the
rows-bucketed autotuning. Runs on the lent GPU (``-m gpu``); the CPU suite checks the reference
arithmetic itself (tests/test_fast_paths.py)."""

from __future__ import annotations

import pytest
import torch

from ishowttsd.engine.f5 import fp8gemm, quant

pytestmark = pytest.mark.gpu


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("m,n,k", [(70, 64, 128), (1996, 3072, 1024), (1160, 1024, 2048), (8200, 2048, 1024)])
@pytest.mark.parametrize("tma", [False, True])
def test_triton_fp8_gemm_equals_its_reference(m: int, n: int, k: int, tma: bool) -> None:
    if tma and not fp8gemm.use_tma(torch.device("cuda")):
        pytest.skip("TMA needs Hopper")
    dev = torch.device("cuda")
    torch.manual_seed(m + n)
    x = torch.randn(m, k, device=dev)
    w = torch.randn(n, k, device=dev) / k**0.5
    b = 0.1 * torch.randn(n, device=dev)
    wq, ws = quant.quantize_weight(w, "fp8")
    wg = ws.amax().reshape(())
    xs = quant.static_scale(x.abs().amax(dim=0))
    xq = (x / xs).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
    for bias, gelu, out_inv in (
        (b, False, None),
        (b, True, torch.tensor(2.0, device=dev)),
        (None, False, None),
    ):
        args = (xq, wq, xs, wg, ws / wg, bias, gelu, out_inv, torch.bfloat16)
        got = fp8gemm._triton_fp8_gemm(*args, tma=tma)
        want = fp8gemm.fp8_gemm_reference(*args)
        assert got.dtype == want.dtype and got.shape == (m, n)
        # bf16 output rounding; an fp8 output may land one e4m3 step away (~6 %) where the
        # fp32 sums differ in their last bits, which moves the norm by well under 1 %
        assert rel(got, want) < (1e-2 if out_inv is not None else 4e-3), (bias is None, gelu, tma)
