"""Low-precision linear layers for the fast path: fp8 (Hopper) and int8 W8A8 (Ampere, the Orin).

Both keep the same shape of work, so the quantisation costs no pass of its own:

* **Weights** are quantised once, at load, per output channel (symmetric: fp8 e4m3 with
  ``amax / 448``, int8 with ``amax / 127``), and kept as the GEMM wants them (``[in, out]``,
  a column-major view of the row-major ``[out, in]`` weight).
* **Activations** are quantised per token (row) by :func:`quantize_rows`, written as plain tensor
  code so that ``torch.compile`` (the fast path compiles one transformer block) fuses it into the
  kernel that already produces the activation: the layer-norm + AdaLN modulation kernel in front
  of QKV and FF1, the GELU kernel in front of FF2, the attention-output transpose in front of the
  output projection. The row's absolute maximum is one more reduction in a kernel that already
  reduces over that row (the layer norm), and the activation is written in 1 byte instead of 2.
* **Dequantisation and bias** happen in the GEMM's epilogue: fp8 through ``torch._scaled_mm``
  with row-wise scales and its ``bias`` argument (CUTLASS on Hopper); int8 through the Triton
  kernel below (int32 accumulation, then ``acc * s_row * s_col + bias``, optionally GELU, written
  in the activation dtype). Where Triton is missing (CPU in CI, a JetPack torch without it),
  ``torch._int_mm`` and the same epilogue in torch compute the same numbers.
* **fp8 with static activation scales** (``fp8_static``): one scale per layer input, calibrated
  on a few real inputs (like int8's smoothing) with headroom, so quantising an activation is a
  multiply and a cast that fuse into the producing kernel with no row reduction; the GEMM is
  tensor-wise scaled (cuBLASLt), and the per-output-channel weight scale and the bias are applied
  in the elementwise code after it, which fuses into the kernel that consumes the output (RoPE,
  the GELU + next quantisation, the residual).
* **int8 smoothing** (SmoothQuant, Xiao et al. 2023): per input channel ``j`` a factor
  ``s_j = max|X_j|^a / max|W_j|^(1-a)`` moves activation outliers into the weights
  (``X W^T = (X / s)(W s)^T``); ``max|X_j|`` is calibrated on a few real inputs
  (:func:`smooth_factors`), and ``1 / s`` is folded into the activation quantisation (one multiply
  in the producing kernel).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

FP8_MAX = 448.0  # largest finite float8_e4m3fn
INT8_MAX = 127.0
QUANTS = ("none", "fp8", "fp8_static", "int8")
FP8 = ("fp8", "fp8_static")
"""The precisions with fp8 GEMMs: they need fp8 tensor cores on CUDA and write bf16."""
CALIBRATED = ("int8", "fp8_static")
"""The precisions whose layers are quantised only after a calibration has seen a few inputs."""
STATIC_HEADROOM = 2.0
"""``fp8_static``: the calibrated activation maximum times this is what maps to 448. e4m3 is a
float format (3 mantissa bits at every magnitude), so the headroom costs precision only for
values ~2^15 below the maximum, and a line louder than the calibration lines is not clipped."""
SMOOTH_ALPHA = 0.5
"""SmoothQuant's migration strength (the paper's default for most models)."""


def quantize_weight(w: Tensor, kind: str, smooth: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``w`` [out, in] (times ``smooth`` per input channel) to (q [in, out] column-major view,
    scale fp32 [1, out]): symmetric, per output channel."""
    wf = w.float()
    if smooth is not None:
        wf = wf * smooth.float()[None, :]
    amax = wf.abs().amax(dim=1, keepdim=True).clamp(min=1e-8)  # [out, 1]
    if kind == "fp8":
        scale = amax / FP8_MAX
        q = (wf / scale).to(torch.float8_e4m3fn)
    elif kind == "int8":
        scale = amax / INT8_MAX
        q = (wf / scale).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    else:
        raise ValueError(f"unknown weight quantisation {kind!r}")
    return q.t(), scale.t().contiguous()


def quantize_rows(x: Tensor, kind: str, inv_smooth: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-token symmetric quantisation of ``x`` [M, K] (times ``inv_smooth`` [K]): (q, scale
    fp32 [M, 1]). Plain tensor code on purpose: compiled, it fuses into the producer's kernel."""
    xf = x.float()
    if inv_smooth is not None:
        xf = xf * inv_smooth
    amax = xf.abs().amax(dim=-1, keepdim=True).clamp(min=1e-6)
    if kind == "fp8":
        return (xf * (FP8_MAX / amax)).to(torch.float8_e4m3fn), amax * (1.0 / FP8_MAX)
    q = (xf * (INT8_MAX / amax)).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, amax * (1.0 / INT8_MAX)


def static_scale(x_absmax: Tensor, headroom: float = STATIC_HEADROOM) -> Tensor:
    """``fp8_static``: one fp32 scale (a 0-d tensor) for a layer's input, from the per-channel
    ``max |x|`` seen in calibration."""
    return (x_absmax.float().amax().clamp(min=1e-6) * (headroom / FP8_MAX)).reshape(())


def fp8_mm(
    xq: Tensor, wq_t: Tensor, x_scale: Tensor, w_scale: Tensor, fast_accum: bool, out_dtype: torch.dtype
) -> Tensor:
    """``(xq @ wq_t) * x_scale * w_scale`` with per-tensor (0-d) scales, in ``out_dtype``: on CUDA
    one cuBLASLt fp8 GEMM (``torch._scaled_mm`` tensor-wise; the per-channel part of the weight
    scale is the caller's, in fused elementwise code); elsewhere the same arithmetic on the fp8
    values in fp32 (CPU tests)."""
    if xq.is_cuda:
        return torch._scaled_mm(xq, wq_t, scale_a=x_scale, scale_b=w_scale, out_dtype=out_dtype,
                                use_fast_accum=fast_accum)  # fmt: skip
    return ((xq.float() @ wq_t.float()) * (x_scale * w_scale)).to(out_dtype)


def smooth_factors(x_absmax: Tensor, w: Tensor, alpha: float = SMOOTH_ALPHA) -> Tensor:
    """SmoothQuant's per-input-channel factor from the calibrated ``max|X_j|`` and the weight."""
    wmax = w.float().abs().amax(dim=0).clamp(min=1e-5)
    s = x_absmax.float().clamp(min=1e-5).pow(alpha) / wmax.pow(1.0 - alpha)
    return s.clamp(min=1e-4, max=1e4)


def gelu_tanh(y: Tensor) -> Tensor:
    return torch.nn.functional.gelu(y, approximate="tanh")


# --------------------------------------------------------------------------------------------
# The int8 GEMM with its epilogue: a custom op, so torch.compile keeps it whole and the
# producing kernel before it (quantize_rows) and the consumer after it fuse around it.


@torch.library.custom_op("ishowttsd::int8_mm", mutates_args=())
def int8_mm(
    xq: Tensor,
    wq_t: Tensor,
    x_scale: Tensor,
    w_scale: Tensor,
    bias: Tensor | None,
    gelu: bool,
    out_dtype: torch.dtype,
) -> Tensor:
    """``(xq @ wq_t) * x_scale * w_scale + bias`` (then tanh-GELU), in ``out_dtype``: int8
    operands, int32 accumulation. xq [M, K] int8, wq_t [K, N] int8, x_scale [M, 1], w_scale [1, N]."""
    if xq.is_cuda and triton_available():
        return _triton_int8_mm(xq, wq_t, x_scale, w_scale, bias, gelu, out_dtype)
    return int8_mm_reference(xq, wq_t, x_scale, w_scale, bias, gelu, out_dtype)


@int8_mm.register_fake
def _int8_mm_fake(
    xq: Tensor,
    wq_t: Tensor,
    x_scale: Tensor,
    w_scale: Tensor,
    bias: Tensor | None,
    gelu: bool,
    out_dtype: torch.dtype,
) -> Tensor:
    return xq.new_empty(xq.shape[0], wq_t.shape[1], dtype=out_dtype)


def int8_mm_reference(
    xq: Tensor,
    wq_t: Tensor,
    x_scale: Tensor,
    w_scale: Tensor,
    bias: Tensor | None,
    gelu: bool,
    out_dtype: torch.dtype,
) -> Tensor:
    """The same numbers through ``torch._int_mm`` (exact int32 products) and a torch epilogue."""
    # shapes _int_mm refuses (tiny test models): exact in float64 for |K| * 127^2 < 2^53
    exact = torch._int_mm(xq, wq_t) if _int_mm_ok(xq, wq_t) else xq.double() @ wq_t.double()
    acc = exact.float()
    y = acc * x_scale * w_scale
    if bias is not None:
        y = y + bias.float()
    if gelu:
        y = gelu_tanh(y)
    return y.to(out_dtype)


def _int_mm_ok(a: Tensor, b: Tensor) -> bool:
    m, k = a.shape
    n = b.shape[1]
    if a.is_cuda:
        return m > 16 and k % 8 == 0 and n % 8 == 0
    return True


def triton_available() -> bool:
    from ishowttsd.engine.f5 import posconv

    return posconv.triton_available()


def _config(m: int, n: int) -> tuple[int, int, int, int, int]:
    """(BM, BN, BK, warps, stages): 128x128 tiles once the grid fills the card (132 SMs on an
    H200), 64-row tiles for one line's ~2000 rows so more programs run."""
    if m * n >= 132 * 128 * 128 * 2:
        return 128, 128, 64, 8, 4
    return 64, 128, 64, 4, 4


def _triton_int8_mm(
    xq: Tensor, wq_t: Tensor, x_scale: Tensor, w_scale: Tensor, bias: Tensor | None, gelu: bool,
    out_dtype: torch.dtype, config: tuple[int, int, int, int, int] | None = None,
) -> Tensor:  # fmt: skip
    m, k = xq.shape
    n = wq_t.shape[1]
    y = torch.empty((m, n), dtype=out_dtype, device=xq.device)
    bm, bn, bk, warps, stages = config or _config(m, n)
    b = bias if bias is not None else w_scale  # any pointer: not read without HAS_BIAS
    kern = _kernel()
    grid = (-(-m // bm) * -(-n // bn),)
    kern[grid](
        xq, wq_t, y, x_scale, w_scale, b, m, n,
        xq.stride(0), xq.stride(1), wq_t.stride(0), wq_t.stride(1), y.stride(0), y.stride(1),
        K=k, BM=bm, BN=bn, BK=bk, GROUP_M=8, HAS_BIAS=bias is not None, GELU=gelu,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return y


@functools.cache
def _kernel() -> Any:
    """Build the Triton kernel on first use (Triton may be absent; importing it is slow)."""
    import triton
    import triton.language as tl

    @triton.jit  # type: ignore[untyped-decorator]
    def int8_mm_kernel(  # type: ignore[no-untyped-def]
        A, B, Y, SA, SB, Bias, M, N,
        sam, sak, sbk, sbn, sym, syn,
        K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
        HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        grid_m = (M + BM - 1) // BM  # not tl.cdiv: a jit helper, which the interpreter may not patch
        grid_n = (N + BN - 1) // BN
        # grouped order: GROUP_M row-tiles share each column of B while it is in L2
        per_group = GROUP_M * grid_n
        first_m = (pid // per_group) * GROUP_M
        size_m = tl.minimum(grid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % size_m
        pid_n = (pid % per_group) // size_m
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        acc = tl.zeros((BM, BN), dtype=tl.int32)
        for k0 in range(0, K, BK):  # K is a constexpr: the DiT has two (1024, 2048)
            kk = k0 + rk
            a = tl.load(A + rm[:, None] * sam + kk[None, :] * sak, mask=(rm[:, None] < M) & (kk[None, :] < K),
                        other=0)  # fmt: skip
            b = tl.load(B + kk[:, None] * sbk + rn[None, :] * sbn, mask=(kk[:, None] < K) & (rn[None, :] < N),
                        other=0)  # fmt: skip
            acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        sa = tl.load(SA + rm, mask=rm < M, other=0.0)
        sb = tl.load(SB + rn, mask=rn < N, other=0.0)
        y = acc.to(tl.float32) * sa[:, None] * sb[None, :]
        if HAS_BIAS:
            y = y + tl.load(Bias + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        if GELU:  # tanh-approximate GELU; tanh(u) = 2 sigmoid(2u) - 1
            u = 0.7978845608028654 * (y + 0.044715 * y * y * y)
            y = y * (1.0 - 1.0 / (1.0 + tl.exp(2.0 * u)))
        out = Y + rm[:, None] * sym + rn[None, :] * syn
        tl.store(out, y.to(Y.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))

    return int8_mm_kernel
