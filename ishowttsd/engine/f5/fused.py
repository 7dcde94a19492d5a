"""The fused DiT forward of the fast path: f5's DiT re-laid as plain functions over tensors, so
one torch.compile of ``_block`` serves every block (weights are arguments, not constants) and
CUDA-graph capture sees no Python state.

* **Fewer, larger kernels.** Q, K and V are one GEMM; attention goes through SDPA
  (flash/cuDNN); ``torch.compile`` (regional: one transformer block, reused by all blocks)
  fuses norms, modulation, rotary embedding, gates and residuals.
* **Low-precision GEMMs** (``linears.py``, ``quant.py``, ``fp8gemm.py``): fp8 (Hopper) for the
  QKV projection, whose per-token quantisation rides in the layer-norm/AdaLN kernel in front of
  it, the bias in the GEMM's epilogue; fp8 with static scales for QKV, FF1 and FF2 through our
  Triton GEMM, whose epilogue finishes each layer (FF1 writes FF2's fp8 input); int8 W8A8
  (SmoothQuant, Triton GEMM) for Ampere boards. Measured in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ishowttsd import log
from ishowttsd.engine.f5 import fp8gemm, posconv, quant
from ishowttsd.engine.f5 import linears as L
from ishowttsd.engine.f5.attention import (
    Packed,
    attention,
    flash_available,
    packed_attention,
    resolve_attn_mode,
)
from ishowttsd.engine.f5.batch import FP8_GEMMS
from ishowttsd.engine.f5.linears import Linear, quantize_fp8, quantize_fp8_static, quantize_int8

_log = log.get(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _rope(t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x_transformers' interleaved rotary embedding, computed in fp32 like the stock path."""
    tf = t.float()
    pairs = tf.unflatten(-1, (-1, 2))
    rot = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (tf * cos + rot * sin).to(t.dtype)


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
    pending: tuple[Tensor, ...] | None = None,
    defer: bool = True,
    klen: Tensor | None = None,
    packed: Packed | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One DiT block (``f5_tts.model.modules.DiTBlock``) with precomputed modulation ``mod`` [6, D].

    Returns ``(x, ff, gate)`` with the feed-forward residual ``x + gate * ff`` still to add: the
    next block adds it as its ``pending`` inside its first layer-norm kernel (one pass over the
    activations fewer per block), and the caller adds the last block's. With an ``fp8_static``
    FF2, ``ff`` is the GEMM's raw output and ``pending`` carries FF2's scale and bias too
    (``(ff, gate, w_scale, bias)``), applied in that same kernel. ``defer=False``: ``x`` comes
    back with the residual added (the A/B baseline)."""
    if pending is not None:
        x = x + pending[1] * _pending_ff(pending)
    b, n, d = x.shape
    dh = d // heads
    sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp = mod.unbind(0)
    h = F.layer_norm(x, (d,), eps=1e-6) * (1 + sc_msa) + sh_msa
    L.record(h, qkv)
    if qkv.x_scale is not None and not qkv.epilogue:
        # fp8_static (cuBLASLt): q and k get their scale and bias in the RoPE kernel; v's are folded into
        # the output projection (softmax rows sum to 1), so v stays a view of the GEMM output
        y = L.fp8_static_raw(h.reshape(b * n, d), qkv).view(b, n, 3, heads, dh)
        q, k, v = y.permute(2, 0, 3, 1, 4).unbind(0)
        assert qkv.w_scale is not None and qkv.bias is not None
        r, c = qkv.w_scale.view(3, heads, 1, dh), qkv.bias.view(3, heads, 1, dh)
        q = (q.float() * r[0] + c[0]).to(x.dtype)
        k = (k.float() * r[1] + c[1]).to(x.dtype)
    else:
        q, k, v = L.linear(h, qkv).to(x.dtype).view(b, n, 3, heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
    q = _rope(q, cos, sin)
    k = _rope(k, cos, sin)
    if packed is not None:
        a = packed_attention(q, k, v, packed)
    else:
        a = attention(q, k, v, kbias, attn_mode, klen)
    a = a.transpose(1, 2).reshape(b, n, d)
    L.record(a, out)
    x = x + g_msa * L.linear(a, out).to(x.dtype)
    h = F.layer_norm(x, (d,), eps=1e-6) * (1 + sc_mlp) + sh_mlp
    L.record(h, ff1)
    if ff1.epilogue and ff2.epilogue:
        # FF1's epilogue writes FF2's fp8 input; FF2's writes the finished feed-forward output
        f = L.fp8_epilogue(h, ff1, True, ff2, x.dtype)
        return _finish(x, L.fp8_epilogue(f, ff2, False, None, x.dtype), g_mlp, ff2, defer)
    f = L.linear(h, ff1, gelu=True) if gelu_epilogue else F.gelu(L.linear(h, ff1), approximate="tanh")
    L.record(f, ff2)
    if ff2.x_scale is not None and not ff2.epilogue:
        ff = L.fp8_static_raw(f.reshape(b * n, -1), ff2).view(b, n, d)
    else:
        ff = L.linear(f, ff2).to(x.dtype)
    return _finish(x, ff, g_mlp, ff2, defer)


def _finish(x: Tensor, ff: Tensor, gate: Tensor, ff2: Linear, defer: bool) -> tuple[Tensor, Tensor, Tensor]:
    if defer:
        return x, ff, gate
    return x + gate * L.affine(ff, ff2), ff, gate


def _deferred(ff: Tensor, gate: Tensor, ff2: Linear) -> tuple[Tensor, ...]:
    """The ``pending`` residual a block hands to the next (see :func:`_block`)."""
    if ff2.x_scale is None or ff2.epilogue:
        return ff, gate
    assert ff2.w_scale is not None and ff2.bias is not None
    return ff, gate, ff2.w_scale, ff2.bias


def _pending_ff(pending: tuple[Tensor, ...]) -> Tensor:
    """The feed-forward output a deferred residual adds: ``pending[0]``, or for an fp8_static FF2
    its raw GEMM output times ``pending[2]`` plus ``pending[3]``."""
    if len(pending) == 2:
        return pending[0]
    return (pending[0].float() * pending[2] + pending[3]).to(pending[0].dtype)


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


FP8_STATIC_LAYERS = ("qkv", "ff1", "ff2")
"""The linears ``fp8_static`` quantises: with no row reduction, QKV's and FF1's input quantisation
rides free in the layer-norm/AdaLN kernel and FF2's in the GELU kernel; the attention output
would need a kernel of its own (cuDNN's attention takes no epilogue), so it stays in the model
dtype."""


def _bf16(lin: Linear) -> Linear:
    return Linear(lin.weight.to(torch.bfloat16), None if lin.bias is None else lin.bias.to(torch.bfloat16))


def _block_weights(
    blk: Any, dtype: torch.dtype, quant_mode: str, fp8_layers: Sequence[str], fast_accum: bool
) -> BlockWeights:
    """One f5 ``DiTBlock``'s four linears in the fast path's layout (Q, K and V as one), fp8
    row-wise ones quantised now; the calibrated precisions are quantised later."""
    at = blk.attn
    if at.q_norm is not None or at.processor.pe_attn_head is not None:
        raise ValueError("fast path supports qk_norm=None and pe_attn_head=None (F5TTS_v1_Base layout)")

    def cast(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().to(dtype)

    wqkv = torch.cat([at.to_q.weight, at.to_k.weight, at.to_v.weight]).detach().to(dtype)
    bqkv = torch.cat([at.to_q.bias, at.to_k.bias, at.to_v.bias]).detach().to(dtype)
    bw = BlockWeights(
        qkv=Linear(wqkv, bqkv),
        out=Linear(at.to_out[0].weight.detach().to(dtype), cast(at.to_out[0].bias)),
        ff1=Linear(blk.ff.ff[0][0].weight.detach().to(dtype), cast(blk.ff.ff[0][0].bias)),
        ff2=Linear(blk.ff.ff[2].weight.detach().to(dtype), cast(blk.ff.ff[2].bias)),
    )
    if quant_mode != "fp8":
        return bw
    names = ("qkv", "out", "ff1", "ff2")
    return BlockWeights(*(
        quantize_fp8(lin, fast_accum) if name in fp8_layers else _bf16(lin)
        for name, lin in zip(names, _layers(bw), strict=True)
    ))  # fmt: skip


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
        fp8_layers: Sequence[str] | None = None,
        fp8_gemm: str = "auto",
    ) -> None:
        """``quant_mode``: 'none', 'fp8' (``fp8_layers``, default QKV, as row-wise fp8 GEMMs with
        per-token activation scales, bf16 activations), 'fp8_static' (``fp8_layers``, default
        QKV, FF1 and FF2, with calibrated per-tensor activation scales, bf16 on CUDA) or 'int8'
        (W8A8 with SmoothQuant). The calibrated precisions keep the layers in ``dtype`` until
        :meth:`calibrate` has seen a few inputs. ``fp8=True`` means 'fp8'."""
        self.dit = dit
        self.dtype = dtype
        if fp8:
            quant_mode = "fp8"
        if quant_mode not in quant.QUANTS:
            raise ValueError(f"quant must be one of {quant.QUANTS}, got {quant_mode!r}")
        self.quant = quant_mode
        if fp8_layers is None:
            fp8_layers = FP8_STATIC_LAYERS if quant_mode == "fp8_static" else FP8_LAYERS
        self.fp8_layers = tuple(fp8_layers)
        if quant_mode == "fp8_static" and "out" in self.fp8_layers:
            raise ValueError("fp8_static folds v's scale into the output projection: it stays unquantised")
        self.fast_accum = fast_accum
        self.calibrated = False
        self.device = next(dit.parameters()).device
        self.attn_mode = resolve_attn_mode(attn_mode, self.device)
        if fp8_gemm not in FP8_GEMMS:
            raise ValueError(f"fp8_gemm must be one of {FP8_GEMMS}, got {fp8_gemm!r}")
        self.fp8_epilogue = fp8_gemm == "triton" or (fp8_gemm == "auto" and fp8gemm.available(self.device))
        """fp8_static layers through fp8gemm's Triton GEMM with the whole epilogue ('auto': where
        Triton runs, on CUDA; 'triton' on CPU runs its reference arithmetic, for tests)."""
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
        """'auto' (the fused Triton kernel on CUDA where Triton imports), 'triton' or 'cudnn'."""
        self.defer_residual = defer_residual
        """Add each block's FF residual inside the next block's first kernel (see ``_block``)."""
        self.gelu_epilogue = gelu_epilogue and self.device.type == "cuda"
        """FF GELU in the GEMM's epilogue (cuBLASLt; CUDA only)."""
        if dit.long_skip_connection is not None:
            raise ValueError("fast path supports long_skip_connection=False (F5TTS_v1_Base layout)")
        self.blocks = [_block_weights(blk, dtype, quant_mode, self.fp8_layers, fast_accum)
                       for blk in dit.transformer_blocks]  # fmt: skip
        self.w_out = dit.proj_out.weight.detach().to(dtype)
        self.b_out = dit.proj_out.bias.detach().to(dtype)
        self._block_fn: Callable[..., tuple[Tensor, Tensor, Tensor]] = _block
        self.conv_contiguous: dict[tuple[int, int], bool] = {}
        self.compiled = False
        self._rope_cache: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def fp8(self) -> bool:
        return self.quant == "fp8"

    def calibrate(self, run: Callable[[], Any], alpha: float = quant.SMOOTH_ALPHA) -> None:
        """Quantise the blocks' linears from the per-channel ``max |x|`` that each layer sees while
        ``run()`` samples a few real inputs (eagerly, on the unquantised weights): int8 (W8A8),
        SmoothQuant-migrated, or ``fp8_static`` (one scale per layer input). Idempotent: a second
        call does nothing, and so does a precision that needs no calibration."""
        if self.quant not in quant.CALIBRATED or self.calibrated:
            return
        fn = self._block_fn
        self._block_fn = _block
        try:
            with L.recording() as stats:
                run()
        finally:
            self._block_fn = fn
        if self.quant == "int8":
            self.blocks = [
                BlockWeights(*(quantize_int8(lin, stats.get(id(lin.weight)), alpha) for lin in _layers(b)))
                for b in self.blocks
            ]
        else:
            self.blocks = [self._fp8_static(b, stats) for b in self.blocks]
        self.calibrated = True

    def _fp8_static(self, b: BlockWeights, stats: dict[int, Tensor]) -> BlockWeights:
        q: list[Linear] = []
        for name, lin in zip(("qkv", "out", "ff1", "ff2"), _layers(b), strict=True):
            keep = name not in self.fp8_layers
            q.append(lin if keep else quantize_fp8_static(lin, stats[id(lin.weight)], self.fast_accum,
                                                           self.fp8_epilogue))  # fmt: skip
        qkv, out, ff1, ff2 = q
        if qkv.x_scale is not None and not qkv.epilogue:
            # v leaves the QKV GEMM unscaled (see _block): its per-channel scale and bias move
            # into the output projection, exactly, as attention averages v's rows
            assert qkv.w_scale is not None and qkv.bias is not None
            d = self.dim
            r_v, b_v = qkv.w_scale.reshape(-1)[2 * d :], qkv.bias[2 * d :]
            w = out.weight.float()
            bias = out.bias.float() if out.bias is not None else torch.zeros(d, device=w.device)
            out = Linear((w * r_v[None, :]).to(self.dtype), (bias + w @ b_v).to(self.dtype))
        return BlockWeights(qkv, out, ff1, ff2)

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
        packed: Packed | None = None,
    ) -> Tensor:
        """CFG velocity for state ``x`` [B, N, mel] (fp32). ``consts``: [2B, N, D] (cond halves first).

        ``kmask``: [2B, N] bool valid-frame mask (None: no padding); ``kbias`` its additive form;
        ``klen`` the same as int32 lengths [2B] (valid frames are always a prefix), which the fused
        conv takes; None with ``kmask`` None. ``packed``: ``x`` is [1, T, mel], lines packed one
        after another (:class:`Packed`; ``kmask`` None).
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
        seg = packed.segments if packed is not None else None
        c = posconv.conv_mish(h, wp[0], w[0], b[0], klen, g, impl=impl, contiguous=contig, segments=seg)
        h = posconv.conv_mish(c, wp[1], w[1], b[1], klen, g, residual=h, impl=impl, segments=seg)
        cos, sin = (packed.cos, packed.sin) if packed is not None else self.rope(n)
        pending: tuple[Tensor, ...] | None = None
        if self.defer_residual:
            # the first block gets a zero residual rather than None: one compiled graph serves
            # every block (None vs a tuple doubled the compiles: warm-up 13.1 s vs 8.7 s, H200)
            pending = _deferred(torch.zeros_like(h), torch.zeros_like(mods[0, 0]), self.blocks[0].ff2)
        if packed is not None:
            # every packed batch has a length of its own: compile the block for any from the first
            for t in (h, *(pending or ())[:1]):
                torch._dynamo.maybe_mark_dynamic(t, 1)
        for blk, mod in zip(self.blocks, mods.unbind(0), strict=True):
            h, ff, gate = self._block_fn(
                h, mod, cos, sin, kbias, blk.qkv, blk.out, blk.ff1, blk.ff2,
                self.heads, self.attn_mode, self.gelu_epilogue, pending, self.defer_residual, klen, packed,
            )  # fmt: skip
            pending = _deferred(ff, gate, blk.ff2) if self.defer_residual else None
        if pending is not None:
            h = h + pending[1] * _pending_ff(pending)
        scale, shift = final.unbind(0)
        h = F.layer_norm(h, (self.dim,), eps=1e-6) * (1 + scale) + shift
        pred = F.linear(h, self.w_out, self.b_out).float()
        pc, pu = pred.chunk(2)
        return pc + (pc - pu) * cfg_strength

    def pack(
        self,
        lengths: Sequence[int],
        frames: int | None = None,
        slots: int | None = None,
        max_len: int | None = None,
    ) -> Packed:
        """The :class:`Packed` layout for lines of these frame counts (both CFG halves): ``frames``
        in all (the lines must fill them), ``slots`` FA2 sequences per half (the ones past the
        lines empty), attention tiles for lines of up to ``max_len`` (defaults: exactly these)."""
        dev = self.device
        total = sum(lengths)
        frames = total if frames is None else frames
        slots = len(lengths) if slots is None else slots
        max_len = max(lengths) if max_len is None else max_len
        if total != frames or slots < len(lengths) or max_len < max(lengths):
            raise ValueError(f"lines of {list(lengths)} frames do not pack into {frames} frames, "
                             f"{slots} slots, {max_len} per line")  # fmt: skip
        seg = posconv.segment_bounds(list(lengths), frames, dev)
        ends = [0, *itertools.accumulate(lengths)] + [frames] * (slots - len(lengths))
        starts = torch.tensor(ends, dtype=torch.int32)
        cu = torch.cat((starts[:-1], starts + frames)).to(dev)  # both halves' lines, then 2T
        pos = (torch.arange(frames, device=dev, dtype=torch.int32) - seg[0]).long()
        cos, sin = self.rope(max_len)
        mask = None
        if not flash_available(dev):  # the CPU (tests), or a torch built without FA2
            same = seg[0][:, None] == seg[0][None, :]
            mask = torch.where(same, 0.0, float("-inf"))
        return Packed(seg, cu, max_len, mask, cos[:, :, pos], sin[:, :, pos])

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
