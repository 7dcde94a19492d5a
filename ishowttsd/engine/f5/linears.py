"""The transformer blocks' linear layers in every precision the fast path runs: the compute
dtype (with cuBLASLt's GELU epilogue for FF1), fp8 row-wise (``torch._scaled_mm``), fp8 with
calibrated static scales (cuBLASLt, or fp8gemm's Triton GEMM that finishes the output in its
epilogue) and int8 W8A8; how each is quantised from a dtype layer; and the recording of the
activation ranges that the calibrated precisions are quantised from."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ishowttsd.engine.f5 import fp8gemm, quant


class Linear(NamedTuple):
    """A linear layer in the fast path's own layout: a weight in the compute dtype, or a
    quantised one (fp8 or int8, per output channel) with its scales.

    A NamedTuple of tensors, so torch.compile guards on shapes only and one compiled block
    serves every block's weights.
    """

    weight: Tensor  # [out, in] in the compute dtype (kept also when quantised, for checks)
    bias: Tensor | None
    wq_t: Tensor | None = None  # fp8 e4m3 or int8, [in, out] column-major view of [out, in]
    w_scale: Tensor | None = None  # fp32 [1, out]
    inv_smooth: Tensor | None = None  # int8: fp32 [in], 1 / SmoothQuant factor (folded into x)
    fast_accum: bool = False  # fp8: Hopper's fast accumulation (no periodic fp32 promotion)
    x_scale: Tensor | None = None  # fp8_static: fp32 0-d, the calibrated input scale
    w_global: Tensor | None = None  # fp8_static: fp32 0-d, the largest weight scale (``w_scale``
    # is then per channel relative to it, <= 1, and the GEMM's raw output stays near true size)
    x_inv: Tensor | None = None  # fp8_static: fp32 0-d, 1 / x_scale (the producer of x multiplies)
    epilogue: bool = False  # fp8_static: the Triton GEMM (fp8gemm.py) applies scales, bias, GELU
    # and the next layer's quantisation itself; False: cuBLASLt, with them in elementwise code


def linear(x: Tensor, lin: Linear, gelu: bool = False) -> Tensor:
    """``x @ W.T + b`` (then tanh-GELU) in the layer's precision. Quantised layers quantise ``x``
    per token here, in plain tensor code that the compiled block fuses into the kernel producing
    ``x``; dequantisation, bias (and GELU for int8) run in the GEMM's epilogue."""
    if lin.wq_t is None:
        if gelu and lin.bias is not None and x.is_cuda:
            return linear_gelu(x, lin.weight, lin.bias)
        y = F.linear(x, lin.weight, lin.bias)
        return F.gelu(y, approximate="tanh") if gelu else y
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    assert lin.w_scale is not None
    if lin.epilogue:
        return fp8_epilogue(x, lin, gelu, None, x.dtype)
    if lin.x_scale is not None:
        y = fp8_static_raw(x2, lin).float() * lin.w_scale
        if lin.bias is not None:
            y = y + lin.bias
        if gelu:
            y = F.gelu(y, approximate="tanh")
        return y.to(x.dtype).reshape(*shape[:-1], y.shape[-1])
    if lin.wq_t.dtype == torch.int8:
        if _RECORD is not None:
            raise RuntimeError("calibration runs on the unquantised weights")
        xq, xs = quant.quantize_rows(x2, "int8", lin.inv_smooth)
        y = quant.int8_mm(xq, lin.wq_t, xs, lin.w_scale, lin.bias, gelu, x.dtype)
        return y.reshape(*shape[:-1], y.shape[-1])
    xq, xs = quant.quantize_rows(x2, "fp8")
    y = torch._scaled_mm(xq, lin.wq_t, scale_a=xs, scale_b=lin.w_scale, bias=lin.bias,
                         out_dtype=torch.bfloat16, use_fast_accum=lin.fast_accum)  # fmt: skip
    if gelu:
        y = F.gelu(y, approximate="tanh")  # fuses into the next layer's quantisation kernel
    return y.reshape(*shape[:-1], y.shape[-1])


def fp8_static_raw(x2: Tensor, lin: Linear) -> Tensor:
    """fp8_static: the GEMM alone, ``x @ W.T`` divided per output channel by ``lin.w_scale``,
    in ``x``'s dtype. Quantising ``x`` is a multiply and a cast (no row maximum), fused into the
    kernel producing it; the caller applies the per-channel scale and the bias where it is cheapest
    (in the kernel that consumes the output, or folded into the next layer's weights)."""
    assert lin.wq_t is not None and lin.x_scale is not None and lin.w_global is not None
    xq = (x2 / lin.x_scale).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
    return quant.fp8_mm(xq, lin.wq_t, lin.x_scale, lin.w_global, lin.fast_accum, x2.dtype)


def fp8_epilogue(x: Tensor, lin: Linear, gelu: bool, nxt: Linear | None, dtype: torch.dtype) -> Tensor:
    """An ``epilogue`` fp8_static layer: ``x`` (already fp8 when the layer before wrote it so, else
    quantised here, in the kernel that produces it) through the Triton GEMM, which writes the
    finished output (scaled, biased, GELU) in ``dtype``, or quantised as ``nxt``'s fp8 input."""
    assert lin.wq_t is not None and lin.x_scale is not None and lin.w_global is not None
    assert lin.w_scale is not None and lin.x_inv is not None
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.dtype != torch.float8_e4m3fn:
        x2 = (x2 * lin.x_inv).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
    out_inv = nxt.x_inv if nxt is not None else None
    y = fp8gemm.fp8_gemm(x2, lin.wq_t, lin.x_scale, lin.w_global, lin.w_scale, lin.bias, gelu, out_inv, dtype)
    return y.reshape(*shape[:-1], y.shape[-1])


def affine(y: Tensor, lin: Linear) -> Tensor:
    """What :func:`fp8_static_raw` left out: ``y * w_scale + bias`` (nothing for other layers)."""
    if lin.x_scale is None or lin.epilogue:
        return y
    assert lin.w_scale is not None
    out = y.float() * lin.w_scale.reshape(y.shape[-1])
    if lin.bias is not None:
        out = out + lin.bias
    return out.to(y.dtype)


_RECORD: dict[int, Tensor] | None = None
"""While a calibration runs (eagerly): per layer (``id`` of its weight), the running
per-input-channel ``max |x|``."""


@contextlib.contextmanager
def recording() -> Iterator[dict[int, Tensor]]:
    """Record every layer's input range (:func:`record`) while the block runs inside."""
    global _RECORD
    stats: dict[int, Tensor] = {}
    _RECORD = stats
    try:
        yield stats
    finally:
        _RECORD = None


def record(x: Tensor, lin: Linear) -> None:
    if _RECORD is None:
        return
    m = x.detach().reshape(-1, x.shape[-1]).abs().amax(dim=0).float()
    key = id(lin.weight)
    prev = _RECORD.get(key)
    _RECORD[key] = m if prev is None else torch.maximum(prev, m)


def quantize_fp8(lin: Linear, fast_accum: bool = False) -> Linear:
    wq_t, scale = quant.quantize_weight(lin.weight, "fp8")
    bias = lin.bias.to(torch.bfloat16) if lin.bias is not None else None
    return Linear(lin.weight, bias, wq_t=wq_t, w_scale=scale, fast_accum=fast_accum)


def quantize_fp8_static(
    lin: Linear, x_absmax: Tensor, fast_accum: bool = False, epilogue: bool = False
) -> Linear:
    """fp8 weights per output channel and one calibrated scale for the input (``fp8_static``);
    ``epilogue``: the GEMM is fp8gemm's, which finishes the output itself."""
    wq_t, scale = quant.quantize_weight(lin.weight, "fp8")
    bias = lin.bias.float() if lin.bias is not None else None
    w_global = scale.amax().reshape(())
    xs = quant.static_scale(x_absmax).to(lin.weight.device)
    return Linear(lin.weight, bias, wq_t=wq_t, w_scale=scale / w_global, fast_accum=fast_accum, x_scale=xs,
                  w_global=w_global, x_inv=1.0 / xs, epilogue=epilogue)  # fmt: skip


def quantize_int8(lin: Linear, x_absmax: Tensor | None, alpha: float = quant.SMOOTH_ALPHA) -> Linear:
    """W8A8 with SmoothQuant migration from the calibrated ``max |x|`` per input channel (None:
    no migration)."""
    smooth = quant.smooth_factors(x_absmax, lin.weight, alpha) if x_absmax is not None else None
    wq_t, scale = quant.quantize_weight(lin.weight, "int8", smooth)
    inv = (1.0 / smooth).float() if smooth is not None else None
    bias = lin.bias.float() if lin.bias is not None else None
    return Linear(lin.weight, bias, wq_t=wq_t, w_scale=scale, inv_smooth=inv)


@torch.library.custom_op("ishowttsd::linear_gelu", mutates_args=())
def linear_gelu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``gelu(x @ W.T + b, approximate='tanh')`` as one cuBLASLt GEMM with a GELU epilogue.

    A custom op, so torch.compile keeps it whole (inductor would split ``_addmm_activation`` back
    into a GEMM and a pointwise kernel that re-reads the (rows x 2048) activation)."""
    y = torch._addmm_activation(bias, x.reshape(-1, x.shape[-1]), weight.t(), use_gelu=True)
    return y.reshape(*x.shape[:-1], weight.shape[0])


@linear_gelu.register_fake
def _linear_gelu_fake(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])
