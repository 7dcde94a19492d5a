"""The fp8 GEMM with its whole epilogue in one kernel (Hopper): ``fp8_static`` layers on CUDA.

cuBLASLt's fp8 GEMM (``torch._scaled_mm``) takes a bias but no GELU and cannot write fp8, so
with it every fp8 layer left work behind for an elementwise kernel: the per-channel weight
scale and bias of Q and K (in the RoPE kernel), FF1's GELU and the quantisation of FF2's input
(a kernel of its own), FF2's scale and bias (in the next layer-norm kernel). Measured on an
H200 those kernels cost what the fp8 GEMMs saved (docs/perf-log.md, session 4). Here the
Triton GEMM's epilogue does all of it while the tile is still in registers:

    y = (xq @ wq_t) * x_scale * w_global * w_scale[col] (+ bias[col]) (-> tanh-GELU)
        (-> * out_inv, clamped to +-448, written as fp8 e4m3 for the next layer)

so FF1 writes FF2's fp8 input directly and no fp8 layer leaves an elementwise pass behind.
Off CUDA (the tests' CPU runs) :func:`fp8_gemm_reference` computes the same numbers in fp32 from
the same fp8 values.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from ishowttsd.engine.f5 import quant

BK = 128
"""The K tile. The DiT's K (1024, 2048) is a multiple; other K take the reference path."""
TMA_ROWS = 8192
"""From this many rows (about 4 lines with CFG) the persistent TMA kernel; below it the plain
one. Measured on an H200 (kprobe, docs/perf-log.md): at one line's 1,996 rows the plain kernel
took 6.9-13.5 us per layer against the TMA kernel's 9.7-16.8 us; at 16 lines' 31,936 rows the TMA
kernel was 4-16 % faster (QKV 191.6 vs 227.2 us, on a par with cuBLASLt's 189.7)."""


@torch.library.custom_op("ishowttsd::fp8_gemm", mutates_args=())
def fp8_gemm(
    xq: Tensor,
    wq_t: Tensor,
    x_scale: Tensor,
    w_global: Tensor,
    w_scale: Tensor,
    bias: Tensor | None,
    gelu: bool,
    out_inv: Tensor | None,
    out_dtype: torch.dtype,
) -> Tensor:
    """xq [M, K] fp8, wq_t [K, N] fp8 (a column-major view of [N, K]), x_scale and w_global
    0-d fp32, w_scale fp32 [1, N], bias fp32 [N] or None; ``out_inv`` (0-d, 1 / the next
    layer's input scale) makes the output fp8 e4m3, else it is ``out_dtype``."""
    if xq.is_cuda and quant.triton_available() and xq.shape[1] % BK == 0:
        return _triton_fp8_gemm(xq, wq_t, x_scale, w_global, w_scale, bias, gelu, out_inv, out_dtype)
    return fp8_gemm_reference(xq, wq_t, x_scale, w_global, w_scale, bias, gelu, out_inv, out_dtype)


@fp8_gemm.register_fake
def _fp8_gemm_fake(
    xq: Tensor,
    wq_t: Tensor,
    x_scale: Tensor,
    w_global: Tensor,
    w_scale: Tensor,
    bias: Tensor | None,
    gelu: bool,
    out_inv: Tensor | None,
    out_dtype: torch.dtype,
) -> Tensor:
    dtype = torch.float8_e4m3fn if out_inv is not None else out_dtype
    return xq.new_empty(xq.shape[0], wq_t.shape[1], dtype=dtype)


def fp8_gemm_reference(
    xq: Tensor,
    wq_t: Tensor,
    x_scale: Tensor,
    w_global: Tensor,
    w_scale: Tensor,
    bias: Tensor | None,
    gelu: bool,
    out_inv: Tensor | None,
    out_dtype: torch.dtype,
) -> Tensor:
    """The kernel's arithmetic in fp32 torch (products of fp8 values are exact in fp32)."""
    y = (xq.float() @ wq_t.float()) * (x_scale * w_global) * w_scale
    if bias is not None:
        y = y + bias.float()
    if gelu:
        y = quant.gelu_tanh(y)
    if out_inv is not None:
        return (y * out_inv).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
    return y.to(out_dtype)


def _triton_fp8_gemm(
    xq: Tensor, wq_t: Tensor, x_scale: Tensor, w_global: Tensor, w_scale: Tensor, bias: Tensor | None,
    gelu: bool, out_inv: Tensor | None, out_dtype: torch.dtype, tma: bool | None = None,
) -> Tensor:  # fmt: skip
    """``tma``: force the kernel (None: :func:`use_tma`)."""
    m, k = xq.shape
    n = wq_t.shape[1]
    xq = xq.contiguous()
    if wq_t.stride() != (1, k):  # a column-major view of a contiguous [N, K]
        wq_t = wq_t.t().contiguous().t()
    y = torch.empty((m, n), dtype=torch.float8_e4m3fn if out_inv is not None else out_dtype, device=xq.device)
    args = (xq, wq_t, y, x_scale, w_global, w_scale, bias if bias is not None else w_scale,
            out_inv if out_inv is not None else x_scale, m, n, rows_key(m))  # fmt: skip
    flags = {"K": k, "HAS_BIAS": bias is not None, "GELU": gelu, "OUT_FP8": out_inv is not None}
    if (m >= TMA_ROWS and use_tma(xq.device)) if tma is None else tma:
        sms = _sm_count(xq.device.index or 0)

        def tiles(meta: dict[str, Any]) -> tuple[int]:
            return (min(sms, -(-m // meta["BM"]) * -(-n // meta["BN"])),)

        _tma_kernel()[tiles](*args, NUM_SMS=sms, **flags)
        return y

    def grid(meta: dict[str, Any]) -> tuple[int]:
        return (-(-m // meta["BM"]) * -(-n // meta["BN"]),)

    _kernel()[grid](*args, xq.stride(0), wq_t.stride(1), y.stride(0), **flags)
    return y


def available(device: torch.device) -> bool:
    """Whether the Triton kernel runs here (CUDA with Triton)."""
    return device.type == "cuda" and quant.triton_available()


def rows_key(m: int) -> int:
    """The autotuner's key for ``m`` rows: the next power of two, so a daemon that meets a new
    line length reuses the tile picked for its neighbours (picking costs a few hundred ms, which
    belong in the warm-up, not in a line's first audio)."""
    return 1 << max(m - 1, 1).bit_length()


def use_tma(device: torch.device) -> bool:
    """Hopper and later: the persistent kernel with TMA loads and stores; Ada (sm_89, fp8 but no
    TMA): the plain one."""
    return torch.cuda.get_device_capability(device)[0] >= 9


@functools.cache
def _sm_count(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def best_configs() -> dict[str, str]:
    """What the autotuner picked per (M, N, K) so far (for the bench's logs)."""
    out: dict[str, str] = {}
    for name, kern in (("plain", _kernel()), ("tma", _tma_kernel())):
        out.update({f"{name} {key[:3]}": str(cfg) for key, cfg in getattr(kern, "cache", {}).items()})
    return out


@functools.cache
def _kernel() -> Any:
    """Build the Triton kernel on first use (Triton may be absent; importing it is slow)."""
    import triton
    import triton.language as tl

    def cfg(bm: int, bn: int, warps: int, stages: int) -> Any:
        return triton.Config({"BM": bm, "BN": bn, "BK": BK, "GROUP_M": 8}, num_warps=warps, num_stages=stages)

    # the tile shapes that won somewhere at the DiT's shapes (H200: kprobe, and its sweep of 18
    # tiles at 1,160 and 1,996 rows, where 128x128 with 4 warps and 3 stages won 7 of 8 layer
    # shapes and 64x128 the eighth, 3 stages beating 4 each time; docs/perf-log.md, session 6),
    # timed once per (rows bucket, N, K) on first use, in the warm-up before the graph capture
    configs = [cfg(128, 128, 4, 3), cfg(64, 128, 4, 3), cfg(128, 128, 8, 3), cfg(128, 256, 8, 3)]

    @triton.autotune(configs=configs, key=["M_KEY", "N", "K"])  # type: ignore[untyped-decorator]
    @triton.jit  # type: ignore[untyped-decorator]
    def fp8_gemm_kernel(  # type: ignore[no-untyped-def]
        A, B, Y, XS, WG, WS, Bias, OI, M, N, M_KEY, sam, sbn, sym,
        K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
        HAS_BIAS: tl.constexpr, GELU: tl.constexpr, OUT_FP8: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        grid_m = (M + BM - 1) // BM
        grid_n = (N + BN - 1) // BN
        # grouped order: GROUP_M row-tiles share each column of B while it is in L2
        per_group = GROUP_M * grid_n
        first_m = (pid // per_group) * GROUP_M
        size_m = tl.minimum(grid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % size_m
        pid_n = (pid % per_group) // size_m
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        # rows/cols past the edge read a valid row/col again (no masked loads in the K loop,
        # which keeps it pipelined); the store below drops them
        am = tl.max_contiguous(tl.multiple_of(rm % M, BM), BM)
        bn = tl.max_contiguous(tl.multiple_of(rn % N, BN), BN)
        rk = tl.arange(0, BK)
        a_ptr = A + am[:, None] * sam + rk[None, :]
        b_ptr = B + bn[None, :] * sbn + rk[:, None]
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for _ in range(0, K, BK):  # K is a multiple of BK (the wrapper checks)
            acc = tl.dot(tl.load(a_ptr), tl.load(b_ptr), acc)
            a_ptr += BK
            b_ptr += BK
        alpha = tl.load(XS) * tl.load(WG)
        y = acc * (alpha * tl.load(WS + bn))[None, :]
        if HAS_BIAS:
            y = y + tl.load(Bias + bn)[None, :]
        if GELU:  # tanh-approximate GELU; tanh(u) = 2 sigmoid(2u) - 1
            u = 0.7978845608028654 * (y + 0.044715 * y * y * y)
            y = y * (1.0 - 1.0 / (1.0 + tl.exp(2.0 * u)))
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        out = Y + rm[:, None] * sym + rn[None, :]
        if OUT_FP8:
            y = tl.minimum(tl.maximum(y * tl.load(OI), -448.0), 448.0)
            tl.store(out, y.to(tl.float8e4nv), mask=mask)
        else:
            tl.store(out, y.to(Y.dtype.element_ty), mask=mask)

    return fp8_gemm_kernel


@functools.cache
def _tma_kernel() -> Any:
    """The Hopper kernel: persistent (one program per SM walks the tiles), A and B tiles loaded
    by TMA into shared memory (the loads run ahead of the tensor cores without address math),
    the finished tile written back by TMA, which also clips the edge rows."""
    import triton
    import triton.language as tl

    # descriptors made on the device need a little global scratch from the caller's allocator
    # (inside a CUDA graph capture this comes from the graph's pool)
    def scratch(size: int, alignment: int, stream: int | None) -> Tensor:
        return torch.empty(size, device="cuda", dtype=torch.int8)

    triton.set_allocator(scratch)

    def cfg(bm: int, bn: int, warps: int, stages: int, flatten: bool) -> Any:
        meta = {"BM": bm, "BN": bn, "BK": BK, "GROUP_M": 8, "FLATTEN": flatten}
        return triton.Config(meta, num_warps=warps, num_stages=stages)

    # what won at 16 lines' rows (H200: kprobe; its sweep of eight tiles there, session 6, found
    # none faster, and a larger set only lengthened the warm-up: 27.4 against 20.4 s)
    shapes = ((128, 256, 8, 3), (128, 128, 4, 4))
    configs = [cfg(bm, bn, w, st, True) for bm, bn, w, st in shapes]

    @triton.jit  # type: ignore[untyped-decorator]
    def tile_of(tile, grid_m, grid_n, GROUP_M: tl.constexpr):  # type: ignore[no-untyped-def]
        per_group = GROUP_M * grid_n
        first_m = (tile // per_group) * GROUP_M
        size_m = tl.minimum(grid_m - first_m, GROUP_M)
        return first_m + (tile % per_group) % size_m, (tile % per_group) // size_m

    @triton.autotune(configs=configs, key=["M_KEY", "N", "K"])  # type: ignore[untyped-decorator]
    @triton.jit  # type: ignore[untyped-decorator]
    def fp8_gemm_tma_kernel(  # type: ignore[no-untyped-def]
        A, B, Y, XS, WG, WS, Bias, OI, M, N, M_KEY,
        K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
        HAS_BIAS: tl.constexpr, GELU: tl.constexpr, OUT_FP8: tl.constexpr, NUM_SMS: tl.constexpr,
        FLATTEN: tl.constexpr,
    ):  # fmt: skip
        a_desc = tl.make_tensor_descriptor(A, shape=[M, K], strides=[K, 1], block_shape=[BM, BK])
        b_desc = tl.make_tensor_descriptor(B, shape=[N, K], strides=[K, 1], block_shape=[BN, BK])
        y_desc = tl.make_tensor_descriptor(Y, shape=[M, N], strides=[N, 1], block_shape=[BM, BN])
        grid_m = tl.cdiv(M, BM)
        grid_n = tl.cdiv(N, BN)
        alpha = tl.load(XS) * tl.load(WG)
        start = tl.program_id(0)
        # the epilogue's tile index runs its own counter, so the flattened loop's software
        # pipeline can start the next tile's loads before this tile's epilogue
        tile_y = start - NUM_SMS
        for tile in tl.range(start, grid_m * grid_n, NUM_SMS, flatten=FLATTEN):
            pid_m, pid_n = tile_of(tile, grid_m, grid_n, GROUP_M)
            acc = tl.zeros((BM, BN), dtype=tl.float32)
            for kk in range(0, K // BK):
                a = a_desc.load([pid_m * BM, kk * BK])
                b = b_desc.load([pid_n * BN, kk * BK])
                acc = tl.dot(a, b.T, acc)
            tile_y += NUM_SMS
            pid_m, pid_n = tile_of(tile_y, grid_m, grid_n, GROUP_M)
            rn = pid_n * BN + tl.arange(0, BN)
            col = rn < N
            y = acc * (alpha * tl.load(WS + rn, mask=col, other=0.0))[None, :]
            if HAS_BIAS:
                y = y + tl.load(Bias + rn, mask=col, other=0.0)[None, :]
            if GELU:  # tanh-approximate GELU; tanh(u) = 2 sigmoid(2u) - 1
                u = 0.7978845608028654 * (y + 0.044715 * y * y * y)
                y = y * (1.0 - 1.0 / (1.0 + tl.exp(2.0 * u)))
            if OUT_FP8:
                y = tl.minimum(tl.maximum(y * tl.load(OI), -448.0), 448.0)
            y_desc.store([pid_m * BM, pid_n * BN], y.to(Y.dtype.element_ty))

    return fp8_gemm_tma_kernel
