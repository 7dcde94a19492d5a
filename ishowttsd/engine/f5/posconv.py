"""F5's convolutional position embedding as one fused GPU kernel per conv.

F5's ``ConvPositionEmbedding`` is ``Conv1d(1024, 1024, k=31, groups=16) -> Mish`` twice, added
to the input. Its arithmetic is 2 % of a DiT step, but cuDNN ran it at ~13 TFLOP/s on an H100
(one small kernel per group, NCW layout): a third of the fast path's kernel time
(docs/PERFORMANCE.md). Here each conv is an implicit GEMM in Triton on the (B, N, D) layout the
transformer already uses, so there is no transpose either way: for each group, 31 shifted
(rows x 64) @ (64 x 64) tensor-core products accumulate in fp32, and the epilogue adds the bias,
applies Mish, zeroes frames past the row's length (padded keys, as the masked stock path does)
and, for the second conv, adds the residual.

``conv_mish`` picks the kernel on CUDA when Triton is importable (``impl='auto'``), else the
reference (``torch.nn.functional.conv1d``), which is also what CPU runs. Triton is optional:
JetPack builds may lack it, and CI runs on CPU.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

IMPLS = ("auto", "triton", "cudnn")


@functools.cache
def triton_available() -> bool:
    try:
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install on an unusual platform
        return False
    return True


def kernel_fits(channels_per_group: int) -> bool:
    """The Triton kernel's tiles are (rows x C) @ (C x C) tensor-core products: C must be a power
    of two and at least 16 (``tl.dot``'s smallest). F5TTS_v1_Base has 64; tiny test models may not."""
    c = channels_per_group
    return c >= 16 and c & (c - 1) == 0


def pack_weight(w: Tensor, groups: int) -> Tensor:
    """Conv1d weight (D_out, D_in/groups, K) -> (groups, K, C_in, C_out) contiguous: one (C_in x
    C_out) matrix per group and tap, the B operand of each tensor-core product."""
    d_out, c_in, k = w.shape
    c_out = d_out // groups
    return w.view(groups, c_out, c_in, k).permute(0, 3, 2, 1).contiguous()


def reference(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    lengths: Tensor | None,
    groups: int,
    residual: Tensor | None,
    contiguous: bool = False,
    segments: Tensor | None = None,
) -> Tensor:
    """The same computation with ``F.conv1d`` (cuDNN on CUDA): ``x`` (B, N, D) with frames past
    ``lengths`` zeroed on input and output; returns (B, N, D), plus ``residual`` when given.
    cuDNN gets (B, D, N) as a transposed view (it converts layouts itself) or, with
    ``contiguous``, a copy: which is faster depends on the shape (``FusedDiT.tune_conv``).
    ``segments``: a packed batch (:func:`segment_bounds`); each line convolves on its own."""
    if segments is not None:
        return _segmented_reference(x, w, b, groups, residual, segments)
    c = x.transpose(1, 2)
    if contiguous:
        c = c.contiguous()
    keep = None
    if lengths is not None:
        n = x.shape[1]
        keep = (torch.arange(n, device=x.device)[None, :] < lengths[:, None])[:, None, :]
        c = c.masked_fill(~keep, 0.0)
    c = F.mish(F.conv1d(c, w, b, padding=w.shape[-1] // 2, groups=groups))
    if keep is not None:
        c = c.masked_fill(~keep, 0.0)
    out = c.transpose(1, 2)
    return out if residual is None else residual + out


def segment_bounds(lengths: list[int], total: int, device: torch.device | str = "cpu") -> Tensor:
    """int32 [2, total]: for each frame of lines packed one after another, the first frame of its
    line and one past its last (``lo``, ``hi``); frames past the lines (padding up to ``total``)
    get ``lo = hi = t``, an empty line, so they read nothing and come out zero."""
    bounds = torch.arange(total, dtype=torch.int32).repeat(2, 1)
    start = 0
    for n in lengths:
        bounds[0, start : start + n] = start
        bounds[1, start : start + n] = start + n
        start += n
    if start > total:
        raise ValueError(f"{start} packed frames do not fit {total}")
    return bounds.to(device)


def _segmented_reference(
    x: Tensor, w: Tensor, b: Tensor | None, groups: int, residual: Tensor | None, segments: Tensor
) -> Tensor:
    out = torch.zeros_like(x)
    lo, hi = segments.tolist()
    t = 0
    while t < x.shape[1]:
        a, z = lo[t], hi[t]
        if z > a:  # one line: its frames convolve with zero padding at both of its ends
            out[:, a:z] = reference(x[:, a:z], w, b, None, groups, None)
            t = z
        else:
            t += 1
    return out if residual is None else residual + out


def use_triton(impl: str, x: Tensor, channels_per_group: int) -> bool:
    """Whether ``impl`` means the Triton kernel for ``x``: 'auto' picks it on CUDA where Triton
    imports and the groups fit its tiles; 'triton' insists (and fails where the groups don't fit)."""
    if impl not in IMPLS:
        raise ValueError(f"conv impl must be one of {IMPLS}, got {impl!r}")
    fits = kernel_fits(channels_per_group)
    if impl == "triton" and not fits:
        raise ValueError(f"posconv: {channels_per_group} channels per group do not fit the Triton kernel")
    return impl == "triton" or (impl == "auto" and fits and x.is_cuda and triton_available())


def block_rows(batch: int, frames: int) -> int:
    """Rows per program. Measured on an H100 (``python -m ishowttsd.bench.probe posconv``):
    64-row tiles win for one or two CFG rows, 128-row tiles once the grid is large."""
    return 64 if batch * frames <= 4096 else 128


def conv_mish(
    x: Tensor,
    w_packed: Tensor,
    w: Tensor,
    b: Tensor | None,
    lengths: Tensor | None,
    groups: int,
    residual: Tensor | None = None,
    impl: str = "auto",
    config: tuple[int, int, int] | None = None,
    contiguous: bool = False,
    segments: Tensor | None = None,
) -> Tensor:
    """``mish(conv1d(x) + b)`` over (B, N, D) ``x``, masked to ``lengths`` (int32 [B]; None: all
    frames valid), plus ``residual`` when given. ``w_packed`` is :func:`pack_weight` of ``w``.
    ``config``: (rows per program, warps, pipeline stages) for the Triton kernel (the probe's sweep);
    ``contiguous``: the cuDNN path's input layout (see :func:`reference`). ``segments``
    (:func:`segment_bounds`, instead of ``lengths``): lines packed one after another along N,
    each convolved on its own, as if it were alone."""
    if not use_triton(impl, x, w.shape[1]):
        return reference(x, w, b, lengths, groups, residual, contiguous, segments)
    return _triton_conv_mish(x, w_packed, b, lengths, groups, residual, config, segments)


def _triton_conv_mish(
    x: Tensor,
    wp: Tensor,
    b: Tensor | None,
    lengths: Tensor | None,
    groups: int,
    residual: Tensor | None,
    config: tuple[int, int, int] | None = None,
    segments: Tensor | None = None,
) -> Tensor:
    bsz, n, d = x.shape
    g, k, c_in, c_out = wp.shape
    if g != groups or g * c_in != d or g * c_out != d or x.stride(2) != 1:
        raise ValueError(f"posconv: weight {tuple(wp.shape)} does not fit input {tuple(x.shape)}")
    if lengths is None:
        lengths = torch.full((bsz,), n, dtype=torch.int32, device=x.device)
    bias = b if b is not None else torch.zeros(d, dtype=x.dtype, device=x.device)
    y = torch.empty((bsz, n, d), dtype=x.dtype, device=x.device)
    res = residual if residual is not None else y
    if res.stride(2) != 1:
        res = res.contiguous()
    bm, warps, stages = config or (block_rows(bsz, n), 4, 3)
    kernel = _kernel()
    grid = (-(-n // bm), g, bsz)
    seg = segments if segments is not None else lengths  # a valid pointer either way
    kernel[grid](
        x, wp, bias, lengths, seg, res, y, n,
        x.stride(0), x.stride(1), res.stride(0), res.stride(1), y.stride(0), y.stride(1),
        C=c_in, K=k, PAD=k // 2, BM=bm, HAS_RES=residual is not None, SEG=segments is not None,
        IEEE=x.dtype == torch.float32, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return y


@functools.cache
def _kernel() -> Any:
    """Build the Triton kernel on first use (importing Triton is slow and may be absent)."""
    import triton
    import triton.language as tl

    # Triton reads the annotations (constexpr), so the parameters carry no Python types.
    @triton.jit  # type: ignore[untyped-decorator]
    def posconv_kernel(  # type: ignore[no-untyped-def]
        X, W, Bias, Len, Seg, R, Y, N,
        sxb, sxn, srb, srn, syb, syn,
        C: tl.constexpr, K: tl.constexpr, PAD: tl.constexpr, BM: tl.constexpr,
        HAS_RES: tl.constexpr, SEG: tl.constexpr, IEEE: tl.constexpr,
    ):  # fmt: skip
        pid_t = tl.program_id(0)
        grp = tl.program_id(1)
        row = tl.program_id(2)
        t = pid_t * BM + tl.arange(0, BM)
        if SEG:  # packed lines: each frame reads only inside its own line [lo, hi)
            lo = tl.load(Seg + t, mask=t < N, other=0)
            hi = tl.load(Seg + N + t, mask=t < N, other=0)
        else:  # one line per row, valid up to its length (scalars: the unpacked kernel as before)
            lo = 0
            hi = tl.load(Len + row)
        ch = tl.arange(0, C)
        xg = X + row * sxb + grp * C
        wg = W + grp * K * C * C
        acc = tl.zeros((BM, C), dtype=tl.float32)
        for k in range(K):
            src = t + (k - PAD)
            ok = (src >= lo) & (src < hi)  # zero padding at both ends of the line
            a = tl.load(xg + src[:, None] * sxn + ch[None, :], mask=ok[:, None], other=0.0)
            wk = tl.load(wg + k * C * C + ch[:, None] * C + ch[None, :])
            if IEEE:  # noqa: SIM108 (a constexpr branch: Triton compiles only one side)
                acc = tl.dot(a, wk, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, wk, acc)
        z = acc + tl.load(Bias + grp * C + ch).to(tl.float32)[None, :]
        # mish(z) = z * tanh(softplus(z)); with e = exp(z), tanh(log(1 + e)) = n / (n + 2),
        # n = e * (e + 2). torch's softplus is linear above 20, where this ratio is 1 in fp32.
        e = tl.exp(tl.minimum(z, 20.0))
        nn = e * (e + 2.0)
        m = tl.where(z > 20.0, z, z * nn / (nn + 2.0))
        m = tl.where((t < hi)[:, None], m, 0.0)
        inside = (t < N)[:, None]
        if HAS_RES:
            r = tl.load(R + row * srb + t[:, None] * srn + grp * C + ch[None, :], mask=inside, other=0.0)
            m = m + r.to(tl.float32)
        out = Y + row * syb + t[:, None] * syn + grp * C + ch[None, :]
        tl.store(out, m.to(Y.dtype.element_ty), mask=inside)

    return posconv_kernel
