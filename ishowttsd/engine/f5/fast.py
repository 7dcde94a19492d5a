"""The fast GPU sampling path over f5's own DiT weights.

What makes it fast, each a measured choice (docs/PERFORMANCE.md has the numbers):

* **What does not change is computed once per job, not per step.** The input projection is
  linear in ``[x, cond, text]``; the ``cond`` and ``text`` parts (and the text encoder in front
  of them) are fixed for the whole ODE solve, so only ``W_x @ x`` runs per step, and it is
  shared by the conditional and the unconditional CFG halves. The time embedding and every
  block's AdaLN modulation depend only on the timestep, so they are computed once per
  schedule for all steps.
* **Static shapes.** Exact frame counts (the engine's duration ladder already limits them) or
  padded up to a length bucket, with padded keys masked out of attention (and of the conv
  positional embedding), so a padded or batched job computes what the unpadded stock path
  computes; one CUDA graph per (batch, frames) replays all NFE steps with no host sync and no
  per-kernel launch cost. The per-job conditioning and Vocos are graph-captured per shape too.
* **Fewer, larger kernels.** Q, K and V are one GEMM; attention goes through SDPA
  (flash/cuDNN); ``torch.compile`` (regional: one transformer block, reused by all blocks)
  fuses norms, modulation, rotary embedding, gates and residuals.
* **Low-precision GEMMs** (``quant.py``): fp8 (Hopper) for the QKV projection, whose per-token
  quantisation rides in the layer-norm/AdaLN kernel in front of it, the bias in the GEMM's
  epilogue; int8 W8A8 (SmoothQuant, Triton GEMM) for Ampere boards. Measured in
  docs/PERFORMANCE.md ("Round two").

The ODE state stays fp32 (it is tiny: 100 channels); the DiT runs in the configured dtype.
Stock semantics kept: CFG ``v = c + (c - u) * cfg_strength`` on one batched forward, Euler
steps on f5's EPSS timesteps with sway sampling, reference frames replaced by the cond mel.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ishowttsd import log
from ishowttsd.engine.f5 import posconv, quant

_log = log.get(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FP8_MAX = 448.0  # largest finite float8_e4m3fn
MASKED_LOGIT = -5000.0
"""Added to padded keys' logits: exp() of it is 0, and divided by the softmax scale it still fits fp16."""


def bucket_for(frames: int, granularity: int) -> int:
    """Smallest multiple of ``granularity`` that holds ``frames`` (granularity 0 means no padding)."""
    if granularity <= 0:
        return frames
    return -(-frames // granularity) * granularity


# --------------------------------------------------------------------------------------------
# The fused forward: plain functions over tensors, so one torch.compile of ``_block`` serves
# every block (weights are arguments, not constants) and CUDA-graph capture sees no Python state.


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


def _linear(x: Tensor, lin: Linear, gelu: bool = False) -> Tensor:
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


_RECORD: dict[int, Tensor] | None = None
"""While int8 calibration runs (eagerly): per layer (``id`` of its weight), the running
per-input-channel ``max |x|``."""


def _record(x: Tensor, lin: Linear) -> None:
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


def _rope(t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x_transformers' interleaved rotary embedding, computed in fp32 like the stock path."""
    tf = t.float()
    pairs = tf.unflatten(-1, (-1, 2))
    rot = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (tf * cos + rot * sin).to(t.dtype)


def _attention(q: Tensor, k: Tensor, v: Tensor, kbias: Tensor | None, mode: str) -> Tensor:
    """SDPA with padded keys masked out. ``kbias``: [B, N] additive (0 valid, large negative padded).

    ``augment`` appends one channel to q (1) and k (the bias) so the mask rides inside a
    flash-attention kernel, which takes no mask argument; ``sdpa`` passes it as ``attn_mask``
    (memory-efficient or cuDNN kernels).
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    if kbias is None:
        return F.scaled_dot_product_attention(q, k, v)
    if mode == "sdpa":
        mask = kbias[:, None, None, :].to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    b, h, n, d = q.shape
    pad = 8  # keeps the head dim a multiple of 8, as flash requires
    zeros = torch.zeros(b, h, n, pad - 1, dtype=q.dtype, device=q.device)
    ones = torch.ones(b, h, n, 1, dtype=q.dtype, device=q.device)
    q2 = torch.cat((q, ones, zeros), dim=-1)
    kb = (kbias / scale).to(k.dtype)[:, None, :, None].expand(b, h, n, 1)
    k2 = torch.cat((k, kb, zeros), dim=-1)
    v2 = torch.cat((v, zeros, torch.zeros_like(ones)), dim=-1)
    out = F.scaled_dot_product_attention(q2, k2, v2, scale=scale)
    return out[..., :d]


def _block(
    x: Tensor,
    mod: Tensor,
    cos: Tensor,
    sin: Tensor,
    kbias: Tensor | None,
    qkv: Linear,
    out: Linear,
    ff1: Linear,
    ff2: Linear,
    heads: int,
    attn_mode: str,
    gelu_epilogue: bool = False,
    pending: tuple[Tensor, Tensor] | None = None,
    defer: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One DiT block (``f5_tts.model.modules.DiTBlock``) with precomputed modulation ``mod`` [6, D].

    Returns ``(x, ff, gate)`` with the feed-forward residual ``x + gate * ff`` still to add: the
    next block adds it as its ``pending`` inside its first layer-norm kernel (one pass over the
    activations fewer per block), and the caller adds the last block's. ``defer=False``: ``x``
    comes back with the residual added (the A/B baseline)."""
    if pending is not None:
        x = x + pending[1] * pending[0]
    b, n, d = x.shape
    sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp = mod.unbind(0)
    h = F.layer_norm(x, (d,), eps=1e-6) * (1 + sc_msa) + sh_msa
    _record(h, qkv)
    q, k, v = _linear(h, qkv).to(x.dtype).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
    q = _rope(q, cos, sin)
    k = _rope(k, cos, sin)
    a = _attention(q, k, v, kbias, attn_mode).transpose(1, 2).reshape(b, n, d)
    _record(a, out)
    x = x + g_msa * _linear(a, out).to(x.dtype)
    h = F.layer_norm(x, (d,), eps=1e-6) * (1 + sc_mlp) + sh_mlp
    _record(h, ff1)
    f = _linear(h, ff1, gelu=True) if gelu_epilogue else F.gelu(_linear(h, ff1), approximate="tanh")
    _record(f, ff2)
    ff = _linear(f, ff2).to(x.dtype)
    if defer:
        return x, ff, g_mlp
    return x + g_mlp * ff, ff, g_mlp


@dataclass
class BlockWeights:
    qkv: Linear
    out: Linear
    ff1: Linear
    ff2: Linear


def _layers(b: BlockWeights) -> tuple[Linear, Linear, Linear, Linear]:
    return b.qkv, b.out, b.ff1, b.ff2


FP8_LAYERS = ("qkv",)
"""The linears the fp8 path quantises by default: QKV, whose per-token quantisation rides in the
layer-norm/AdaLN kernel in front of it. Measured on an H200 in one run (docs/PERFORMANCE.md,
bench/results/20261202T173104Z-gpu.json): QKV alone 21.86 ms per line against 22.11 ms with
FF1 and FF2 too (their quantisation adds a GELU+quantise kernel where fp16 has GELU in the GEMM's
epilogue) and 22.49 ms with the attention output projection as well (a quantise kernel of its own
after the attention kernel); fp16 22.23 ms."""


def _bf16(lin: Linear) -> Linear:
    return Linear(lin.weight.to(torch.bfloat16), None if lin.bias is None else lin.bias.to(torch.bfloat16))


class FusedDiT:
    """f5's DiT re-laid for the fast path. Reads the weights; never changes the source module."""

    def __init__(
        self,
        dit: Any,
        dtype: torch.dtype,
        *,
        fp8: bool = False,
        attn_mode: str = "augment",
        conv_impl: str = "auto",
        gelu_epilogue: bool = False,
        defer_residual: bool = True,
        quant_mode: str = "none",
        fast_accum: bool = False,
        fp8_layers: Sequence[str] = FP8_LAYERS,
    ) -> None:
        """``quant_mode``: 'none', 'fp8' (the transformer blocks' four linears as row-wise fp8
        GEMMs, bf16 activations) or 'int8' (W8A8 with SmoothQuant; the layers stay in ``dtype``
        until :meth:`calibrate_int8` has seen a few inputs). ``fp8=True`` means 'fp8'."""
        self.dit = dit
        self.dtype = dtype
        if fp8:
            quant_mode = "fp8"
        if quant_mode not in quant.QUANTS:
            raise ValueError(f"quant must be one of {quant.QUANTS}, got {quant_mode!r}")
        self.quant = quant_mode
        self.fast_accum = fast_accum
        self.calibrated = False
        self.attn_mode = attn_mode
        self.device = next(dit.parameters()).device
        self.heads: int = dit.transformer_blocks[0].attn.heads
        self.dim: int = dit.dim
        mel_dim = dit.proj_out.out_features
        self.mel_dim = mel_dim

        def cast(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().to(dtype)

        w_in = dit.input_embed.proj.weight.detach()
        self.w_x = w_in[:, :mel_dim].to(dtype)
        self.conv = dit.input_embed.conv_pos_embed.conv1d
        self.conv_w = [self.conv[i].weight.detach().to(dtype) for i in (0, 2)]
        self.conv_b = [cast(self.conv[i].bias) for i in (0, 2)]
        self.conv_groups: int = self.conv[0].groups
        self.conv_wp = [posconv.pack_weight(w, self.conv_groups) for w in self.conv_w]
        self.conv_impl = conv_impl
        self.defer_residual = defer_residual
        """Add each block's FF residual inside the next block's first kernel (see ``_block``)."""
        self.gelu_epilogue = gelu_epilogue and self.device.type == "cuda"
        """FF GELU in the GEMM's epilogue (cuBLASLt; CUDA only)."""
        """'auto' (the fused Triton kernel on CUDA where Triton imports), 'triton' or 'cudnn'."""
        if dit.long_skip_connection is not None:
            raise ValueError("fast path supports long_skip_connection=False (F5TTS_v1_Base layout)")
        self.blocks: list[BlockWeights] = []
        for blk in dit.transformer_blocks:
            at = blk.attn
            if at.q_norm is not None or at.processor.pe_attn_head is not None:
                raise ValueError(
                    "fast path supports qk_norm=None and pe_attn_head=None (F5TTS_v1_Base layout)"
                )
            wqkv = torch.cat([at.to_q.weight, at.to_k.weight, at.to_v.weight]).detach().to(dtype)
            bqkv = torch.cat([at.to_q.bias, at.to_k.bias, at.to_v.bias]).detach().to(dtype)
            bw = BlockWeights(
                qkv=Linear(wqkv, bqkv),
                out=Linear(at.to_out[0].weight.detach().to(dtype), cast(at.to_out[0].bias)),
                ff1=Linear(blk.ff.ff[0][0].weight.detach().to(dtype), cast(blk.ff.ff[0][0].bias)),
                ff2=Linear(blk.ff.ff[2].weight.detach().to(dtype), cast(blk.ff.ff[2].bias)),
            )
            if quant_mode == "fp8":
                names = ("qkv", "out", "ff1", "ff2")
                bw = BlockWeights(*(
                    quantize_fp8(lin, fast_accum) if name in fp8_layers else _bf16(lin)
                    for name, lin in zip(names, _layers(bw), strict=True)
                ))  # fmt: skip
            self.blocks.append(bw)
        self.w_out = dit.proj_out.weight.detach().to(dtype)
        self.b_out = dit.proj_out.bias.detach().to(dtype)
        self._block_fn: Callable[..., tuple[Tensor, Tensor, Tensor]] = _block
        self.conv_contiguous: dict[tuple[int, int], bool] = {}
        self.compiled = False
        self._rope_cache: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def fp8(self) -> bool:
        return self.quant == "fp8"

    def calibrate_int8(self, run: Callable[[], Any], alpha: float = quant.SMOOTH_ALPHA) -> None:
        """Quantise the blocks' linears to int8 (W8A8), SmoothQuant-migrated with the per-channel
        ``max |x|`` that each layer sees while ``run()`` samples a few real inputs (eagerly, on the
        unquantised weights). Idempotent: a second call does nothing."""
        global _RECORD
        if self.quant != "int8" or self.calibrated:
            return
        fn = self._block_fn
        self._block_fn = _block
        _RECORD = {}
        try:
            run()
            stats = _RECORD
        finally:
            _RECORD = None
            self._block_fn = fn
        self.blocks = [
            BlockWeights(*(quantize_int8(lin, stats.get(id(lin.weight)), alpha) for lin in _layers(b)))
            for b in self.blocks
        ]
        self.calibrated = True

    # ---- per schedule -------------------------------------------------------------------
    @torch.no_grad()
    def modulations(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """AdaLN parameters for every step and block: ([S, depth, 6, D], [S, 2, D]) in the model dtype.

        Computed in fp32 from the fp32 schedule (the stock path rounds t to the model dtype first).
        """
        dit = self.dit

        def lin(m: Any, x: Tensor) -> Tensor:
            return F.linear(x, m.weight.float(), m.bias.float())

        tt = t.to(self.device, torch.float32)
        mlp = dit.time_embed.time_mlp  # Linear, SiLU, Linear
        temb = lin(mlp[2], F.silu(lin(mlp[0], dit.time_embed.time_embed(tt).float())))
        silu = F.silu(temb)
        per_block = [lin(blk.attn_norm.linear, silu).unflatten(-1, (6, -1)) for blk in dit.transformer_blocks]
        final = lin(dit.norm_out.linear, silu)
        mods = torch.stack(per_block, dim=1).to(self.dtype)  # [S, depth, 6, D]
        return mods, final.unflatten(-1, (2, -1)).to(self.dtype)  # AdaLN_Final: (scale, shift)

    def rope(self, n: int) -> tuple[Tensor, Tensor]:
        if n not in self._rope_cache:
            freqs, _ = self.dit.rotary_embed.forward_from_seq_len(n)  # [1, n, dh] fp32
            f = freqs.to(self.device, torch.float32)[:, None]  # [1, 1, n, dh]
            self._rope_cache[n] = (f.cos(), f.sin())
        return self._rope_cache[n]

    # ---- per job ------------------------------------------------------------------------
    @torch.no_grad()
    def project_conditioning(self, cond_in: Tensor, text_in: Tensor) -> Tensor:
        """``W_c cond + W_t text + b`` for the (2, N, ·) guided conditioning of the reference
        sampler's :func:`prepare`, in fp32, then cast: the part of the input projection that is
        the same at every step."""
        w = self.dit.input_embed.proj.weight.float()
        m = self.mel_dim
        out = F.linear(cond_in.float(), w[:, m : 2 * m]) + F.linear(text_in.float(), w[:, 2 * m :])
        out = out + self.dit.input_embed.proj.bias.float()
        return out.to(self.dtype)

    # ---- per step -----------------------------------------------------------------------
    def velocity(
        self,
        x: Tensor,
        consts: Tensor,
        kmask: Tensor | None,
        kbias: Tensor | None,
        mods: Tensor,
        final: Tensor,
        cfg_strength: float,
        klen: Tensor | None = None,
    ) -> Tensor:
        """CFG velocity for state ``x`` [B, N, mel] (fp32). ``consts``: [2B, N, D] (cond halves first).

        ``kmask``: [2B, N] bool valid-frame mask (None: no padding); ``kbias`` its additive form;
        ``klen`` the same as int32 lengths [2B] (valid frames are always a prefix), which the fused
        conv takes; None with ``kmask`` None.
        """
        if kmask is not None and klen is None:
            klen = kmask.sum(1, dtype=torch.int32)
        n = x.shape[1]
        hx = F.linear(x.to(self.dtype), self.w_x)
        h = torch.cat((hx, hx)) + consts  # [2B, N, D]
        # the positional conv: the fused Triton kernels (posconv.py: no transposes, mask and
        # residual fused) or cuDNN in the layout this shape's plan measured faster
        impl = "triton" if self.uses_triton_conv(h) else "cudnn"
        contig = self.conv_contiguous.get((h.shape[0], n), False)
        g = self.conv_groups
        w, wp, b = self.conv_w, self.conv_wp, self.conv_b
        c = posconv.conv_mish(h, wp[0], w[0], b[0], klen, g, impl=impl, contiguous=contig)
        h = posconv.conv_mish(c, wp[1], w[1], b[1], klen, g, residual=h, impl=impl)
        cos, sin = self.rope(n)
        pending: tuple[Tensor, Tensor] | None = None
        if self.defer_residual:
            # the first block gets a zero residual rather than None: one compiled graph serves
            # every block (None vs a tuple doubled the compiles: warm-up 13.1 s vs 8.7 s, H200)
            pending = (torch.zeros_like(h), torch.zeros_like(mods[0, 0]))
        for blk, mod in zip(self.blocks, mods.unbind(0), strict=True):
            h, ff, gate = self._block_fn(
                h, mod, cos, sin, kbias, blk.qkv, blk.out, blk.ff1, blk.ff2,
                self.heads, self.attn_mode, self.gelu_epilogue, pending, self.defer_residual,
            )  # fmt: skip
            pending = (ff, gate) if self.defer_residual else None
        if pending is not None:
            h = h + pending[1] * pending[0]
        scale, shift = final.unbind(0)
        h = F.layer_norm(h, (self.dim,), eps=1e-6) * (1 + scale) + shift
        pred = F.linear(h, self.w_out, self.b_out).float()
        pc, pu = pred.chunk(2)
        return pc + (pc - pu) * cfg_strength

    def uses_triton_conv(self, h: Tensor) -> bool:
        return posconv.use_triton(self.conv_impl, h, self.conv_w[0].shape[1])

    @torch.no_grad()
    def tune_conv(self, b2: int, n: int, reps: int = 5) -> bool:
        """Time the positional conv on a transposed view and on a contiguous copy for this
        shape (CUDA events, median of ``reps``); remember and return whether contiguous won."""
        key = (b2, n)
        if key in self.conv_contiguous or self.device.type != "cuda":
            return self.conv_contiguous.get(key, False)
        h = torch.randn(b2, n, self.dim, device=self.device, dtype=self.dtype)

        def run(contig: bool) -> None:
            g = self.conv_groups
            c = posconv.reference(h, self.conv_w[0], self.conv_b[0], None, g, None, contig)
            posconv.reference(c, self.conv_w[1], self.conv_b[1], None, g, h)

        times = {}
        for contig in (False, True):
            run(contig)  # cudnn.benchmark picks its algorithm here
            ts = []
            for _ in range(reps):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                run(contig)
                e1.record()
                e1.synchronize()
                ts.append(e0.elapsed_time(e1))
            times[contig] = sorted(ts)[len(ts) // 2]
        self.conv_contiguous[key] = times[True] < times[False]
        _log.info("positional conv layout", batch2=b2, frames=n, contiguous_ms=round(times[True], 4),
                  view_ms=round(times[False], 4))  # fmt: skip
        return self.conv_contiguous[key]

    def compile_blocks(self, mode: str = "default", dynamic: bool | None = None) -> None:
        """Compile one block function; every block (and every step) reuses it."""
        import torch._dynamo

        # one static compile per (batch, frames) shape: raise dynamo's recompile limit (default 8)
        cfg = torch._dynamo.config
        name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
        setattr(cfg, name, max(getattr(cfg, name), 256))
        kwargs: dict[str, Any] = {"dynamic": dynamic}
        if mode != "default":
            kwargs["mode"] = mode
        self._block_fn = torch.compile(_block, **kwargs)
        self.compiled = True


# --------------------------------------------------------------------------------------------
# Batches of jobs on static buffers, replayed through CUDA graphs. The loop itself is the
# reference sampler's (``sampler.sample``) with the fused velocity as its step function.


@dataclass
class FastJob:
    """One chunk to synthesise, as the reference sampler takes it.

    ``ref_mel``: (R, D) reference mel; ``text``: (1, T) token ids (-1 padded); ``frames``: total
    length N (``sampler.total_frames``); ``noise``: (N, D) initial state (``sampler.make_noise``).
    """

    ref_mel: Tensor
    text: Tensor
    frames: int
    noise: Tensor
    consts: Tensor | None = None  # (2, N, dim): the fixed input-projection part, cond then uncond

    @property
    def ref_frames(self) -> int:
        return int(self.ref_mel.shape[0])


class _Plan:
    """Static buffers (and, on CUDA, one captured graph) for one (batch, frames, masked) shape."""

    def __init__(self, fs: FastSampler, batch: int, frames: int, masked: bool) -> None:
        f = fs.fused
        dev, dt = f.device, f.dtype
        self.fs, self.batch, self.frames, self.masked = fs, batch, frames, masked
        self.x = torch.zeros(batch, frames, f.mel_dim, device=dev, dtype=torch.float32)
        self.consts = torch.zeros(2 * batch, frames, f.dim, device=dev, dtype=dt)
        self.kmask = torch.ones(2 * batch, frames, device=dev, dtype=torch.bool)
        self.kbias = torch.zeros(2 * batch, frames, device=dev, dtype=torch.float32)
        self.klen = torch.full((2 * batch,), frames, device=dev, dtype=torch.int32)
        self.ref_mel = torch.zeros(batch, frames, f.mel_dim, device=dev, dtype=torch.float32)
        self.ref_mask = torch.zeros(batch, frames, 1, device=dev, dtype=torch.bool)
        self.cond = _sampler().Conditioning(
            dit=f.dit, cond_in=self.x, text_in=self.x, rope=(None, 1.0), ref_mel=self.ref_mel,
            ref_mask=self.ref_mask, cfg_strength=fs.cfg.cfg_strength, t=fs.schedule.to(dev),
        )  # fmt: skip
        self.out: Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self._calls = 0
        key = (2 * batch, frames)
        if f.uses_triton_conv(self.x):
            pass  # the fused kernel has no layout choice
        elif fs.conv_layout == "auto":
            f.tune_conv(*key)
        else:
            f.conv_contiguous.setdefault(key, fs.conv_layout == "contiguous")

    def _step(self, x: Tensor, t: Tensor, c: Any) -> Tensor:
        """The reference sampler's step signature; the step index picks the precomputed AdaLN."""
        i = self._calls
        self._calls += 1
        fs = self.fs
        km, kb, kl = (self.kmask, self.kbias, self.klen) if self.masked else (None, None, None)
        return fs.fused.velocity(x, self.consts, km, kb, fs.mods[i], fs.final[i], fs.cfg.cfg_strength, kl)

    def _loop(self) -> Tensor:
        self._calls = 0
        out: Tensor = _sampler().sample(self.cond, self.x, step=self._step)
        return out

    def capture(self) -> None:
        """Warm up on a side stream (compiles, autotunes), then capture the whole NFE loop."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._loop()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.fs.pool):
            self.out = self._loop()
        self.graph = graph

    def run(self) -> Tensor:
        if self.graph is None:
            return self._loop()
        self.graph.replay()
        assert self.out is not None
        return self.out


class _PrepPlan:
    """A captured graph of :meth:`FastSampler._conditioning` for one (frames, reference) shape;
    the text ids sit in a buffer of ``frames`` slots, -1 padded."""

    def __init__(self, fs: FastSampler, frames: int, ref_frames: int) -> None:
        f = fs.fused
        self.text = torch.full((1, frames), -1, dtype=torch.long, device=f.device)
        self.ref = torch.zeros(ref_frames, f.mel_dim, dtype=f.dtype, device=f.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fs._conditioning(self.text, self.ref, frames)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=fs.pool):
            self.out = fs._conditioning(self.text, self.ref, frames)

    def run(self, text: Tensor, ref: Tensor) -> Tensor:
        if text.shape[1] > self.text.shape[1]:
            raise ValueError(f"{text.shape[1]} text tokens do not fit {self.text.shape[1]} frames")
        self.text.fill_(-1)
        self.text[:, : text.shape[1]].copy_(text)
        self.ref.copy_(ref)
        self.graph.replay()
        return self.out


def _sampler() -> Any:
    from ishowttsd.engine.f5 import sampler

    return sampler


class FastSampler:
    """Samples mels for one or many jobs at once; shapes bucketed, loops graph-captured on CUDA.

    On CPU it runs the same fused code eagerly in fp32 (the tests' check that fast == stock).
    """

    def __init__(
        self,
        dit: Any,
        cfg: Any,
        *,
        dtype: str = "bf16",
        fp8: bool = False,
        compile: bool = True,
        compile_mode: str = "default",
        compile_dynamic: bool | None = None,
        cuda_graph: bool = True,
        bucket_frames: int = 32,
        attn_mode: str = "sdpa",
        fused: FusedDiT | None = None,
        conv_layout: str = "view",
        conv_impl: str = "auto",
        gelu_epilogue: bool = False,
        defer_residual: bool = True,
        quant: str = "none",
        fast_accum: bool = False,
        fp8_layers: Sequence[str] = FP8_LAYERS,
    ) -> None:
        """``fused``: share another sampler's fused weights (and compiled block), e.g. for a
        different NFE; ``dtype``/``quant``/``compile`` then come from it. ``quant``: 'none',
        'fp8' (with ``dtype = 'bf16'``; CUDA only) or 'int8' (then :meth:`calibrate` before the
        first sample; runs on CPU too). ``fp8=True`` means ``quant='fp8'``."""
        self.device = next(dit.parameters()).device
        if fp8:
            quant = "fp8"
        if self.device.type != "cuda":
            dtype, compile, cuda_graph = "fp32", False, False
            if quant == "fp8":
                quant = "none"
        fp8 = quant == "fp8"
        if fp8 and dtype != "bf16":
            raise ValueError("fp8 matmuls write bf16: set dtype = 'bf16' with fp8 = true")
        self.cfg = cfg
        if conv_layout not in ("view", "contiguous", "auto"):
            raise ValueError(f"conv_layout must be 'view', 'contiguous' or 'auto', got {conv_layout!r}")
        self.conv_layout = conv_layout
        if fused is not None:
            self.fused = fused
            dtype = next(k for k, v in DTYPES.items() if v == fused.dtype)
            quant, compile = fused.quant, fused.compiled
            fp8 = quant == "fp8"
        else:
            self.fused = FusedDiT(dit, DTYPES[dtype], attn_mode=attn_mode, conv_impl=conv_impl,
                                  gelu_epilogue=gelu_epilogue, defer_residual=defer_residual,
                                  quant_mode=quant, fast_accum=fast_accum, fp8_layers=fp8_layers)  # fmt: skip
            if compile:
                self.fused.compile_blocks(compile_mode, compile_dynamic)
        self.schedule = _sampler().timesteps(cfg, "cpu", torch.float32)
        self.mods, self.final = self.fused.modulations(self.schedule)
        self.cuda_graph = cuda_graph
        self.bucket = bucket_frames
        # The text encoder in the compute dtype (as the stock path runs it in the model dtype):
        # in fp32 its ConvNeXt matmuls cost ~1 ms per chunk on an H100.
        te = dit.text_embed
        if next(te.parameters()).dtype != self.fused.dtype:
            te = copy.deepcopy(te).to(self.fused.dtype)
        self.text_embed = te
        self.plans: dict[tuple[int, int, bool], _Plan] = {}
        self.prep_plans: dict[tuple[int, int], _PrepPlan] = {}
        self.max_prep_plans = 256
        if self.device.type == "cuda":
            # cuDNN picks the conv algorithms by timing them (the positional conv is grouped, k=31)
            torch.backends.cudnn.benchmark = True
        self.pool = torch.cuda.graph_pool_handle() if cuda_graph else None
        self.options = {
            "dtype": dtype, "fp8": fp8, "quant": quant, "fast_accum": self.fused.fast_accum,
            "fp8_layers": list(fp8_layers) if fp8 else None,
            "compile": compile_mode if compile else "none",
            "compile_dynamic": compile_dynamic, "cuda_graph": cuda_graph, "bucket_frames": bucket_frames,
            "attn_mode": attn_mode,
            "conv_layout": conv_layout,
            "conv_impl": conv_impl,
            "gelu_epilogue": self.fused.gelu_epilogue,
            "defer_residual": self.fused.defer_residual,
        }  # fmt: skip

    def plan(self, batch: int, frames: int, masked: bool) -> _Plan:
        """The plan for this shape, built (and captured) on first use; warm-up calls this ahead."""
        key = (batch, frames, masked)
        p = self.plans.get(key)
        if p is None:
            if self.fused.quant == "int8" and not self.fused.calibrated:
                raise RuntimeError("int8 fast path: calibrate() on a few jobs before sampling")
            t0 = time.perf_counter()
            p = _Plan(self, batch, frames, masked)
            if self.cuda_graph:
                p.capture()
            self.plans[key] = p
            _log.info("fast plan ready", batch=batch, frames=frames, masked=masked, graph=self.cuda_graph,
                      seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
        return p

    def shape_for(self, frame_counts: Sequence[int], slots: int | None = None) -> tuple[int, int, bool]:
        """(batch slots, bucket frames, masked) that a batch of these lengths runs as."""
        n = len(frame_counts)
        b = max(n, slots or n)
        bucket = bucket_for(max(frame_counts), self.bucket)
        masked = b > n or any(f != bucket for f in frame_counts)
        return b, bucket, masked

    @torch.no_grad()
    def prepare(self, job: FastJob) -> FastJob:
        """The job's fixed conditioning (``sampler.prepare``'s guided ``cond_in``/``text_in``,
        projected). On CUDA one graph per (frames, reference frames) replays it: eagerly it is
        ~60 small launches (the text ConvNeXt), ~5 ms of host time per chunk."""
        if job.consts is not None:
            return job
        f = self.fused
        text = job.text.to(f.device)
        ref = job.ref_mel.to(f.device, f.dtype)
        if not self.cuda_graph:
            job.consts = self._conditioning(text, ref, job.frames)
            return job
        key = (job.frames, job.ref_frames)
        pp = self.prep_plans.get(key)
        if pp is None:
            pp = _PrepPlan(self, job.frames, job.ref_frames)
            if len(self.prep_plans) >= self.max_prep_plans:
                self.prep_plans.pop(next(iter(self.prep_plans)))
            self.prep_plans[key] = pp
        job.consts = pp.run(text, ref).clone()
        return job

    def _conditioning(self, text: Tensor, ref_mel: Tensor, frames: int) -> Tensor:
        """What ``sampler.prepare`` computes for the guided case, then projected: text embeddings
        with and without text, the reference mel padded (and zeros for the unconditional half).
        ``text`` may be -1 padded up to ``frames`` (the text encoder pads with the same filler)."""
        te = self.text_embed
        text_c = te(text, seq_len=frames, drop_text=False)
        text_u = te(text, seq_len=frames, drop_text=True)
        cond = F.pad(ref_mel[None], (0, 0, 0, frames - ref_mel.shape[0]), value=0.0)
        cond_in = torch.cat((cond, torch.zeros_like(cond)))
        return self.fused.project_conditioning(cond_in, torch.cat((text_c, text_u)).to(cond.dtype))

    @torch.no_grad()
    def calibrate(self, jobs: Sequence[FastJob]) -> None:
        """int8: calibrate the SmoothQuant factors on ``jobs`` (each sampled once, eagerly, on the
        unquantised weights) and quantise. Nothing to do for other precisions or a second time.
        Plans captured before this would replay the unquantised weights: call it first."""
        if self.fused.quant != "int8" or self.fused.calibrated:
            return

        def run() -> None:
            for j in jobs:
                self.sample([j], eager=True)

        self.fused.calibrate_int8(run)
        self.plans.clear()

    @torch.no_grad()
    def sample(self, jobs: Sequence[FastJob], slots: int | None = None, eager: bool = False) -> list[Tensor]:
        """Mel (N_i, D) fp32 per job, reference frames pasted back, like ``sampler.sample``.

        All jobs run as one padded, masked batch; ``slots`` pads the batch dimension too (so a
        graph captured for B slots serves fewer jobs). Nothing here waits for the GPU.
        """
        n = len(jobs)
        b, frames, masked = self.shape_for([j.frames for j in jobs], slots)
        p = _Plan(self, b, frames, masked) if eager else self.plan(b, frames, masked)
        for j in jobs:
            self.prepare(j)
        p.x.zero_()
        p.consts.zero_()
        p.ref_mel.zero_()
        p.ref_mask.zero_()
        p.kmask.zero_()
        for i, j in enumerate(jobs):
            assert j.consts is not None
            f, r = j.frames, j.ref_frames
            p.x[i, :f].copy_(j.noise[:f], non_blocking=True)
            p.consts[i, :f].copy_(j.consts[0])
            p.consts[b + i, :f].copy_(j.consts[1])
            p.ref_mel[i, :r].copy_(j.ref_mel, non_blocking=True)
            p.ref_mask[i, :r] = True
            p.kmask[i, :f] = True
            p.kmask[b + i, :f] = True
        for i in range(n, b):
            # idle slots: one valid key, so no softmax row is empty (their output is dropped)
            p.kmask[i, 0] = True
            p.kmask[b + i, 0] = True
        if masked:
            p.kbias.copy_((~p.kmask).float() * MASKED_LOGIT)
            p.klen.copy_(p.kmask.sum(1, dtype=torch.int32))
        out = p._loop() if eager else p.run()
        return [out[i, : j.frames] for i, j in enumerate(jobs)]
