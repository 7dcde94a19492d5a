"""Attention for the fast path's fused DiT block: one line (SDPA: cuDNN's flash kernel), a
padded batch (padded keys masked: by each sequence's key count, by SDPA's additive mask, or by
an extra channel), and packed lines (each line a sequence of its own).

Which is fastest was measured on an H200 (docs/perf-log.md, sessions 2 and 6); ``auto``
(:func:`resolve_attn_mode`) follows that measurement where the kernel exists.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

MASKED_LOGIT = -5000.0
"""Added to padded keys' logits: exp() of it is 0, and divided by the softmax scale it still fits fp16."""


def resolve_attn_mode(mode: str, device: torch.device) -> str:
    """``auto``: ``flash_seqlen`` where FA2's varlen entry runs on this device, else ``sdpa``.
    Measured on an H200 (docs/perf-log.md, session 6): padded batches 15 % faster end to end
    (16 mixed lines in length groups 223.2 against 261.2 ms), one line unchanged (it has no
    padding), batched-against-alone error unchanged."""
    if mode != "auto":
        return mode
    return "flash_seqlen" if flash_available(device) else "sdpa"


def flash_available(device: torch.device) -> bool:
    """Whether FA2's varlen entry runs on this device (CUDA, and a torch built with it)."""
    return device.type == "cuda" and _flash_seqlen_runs(device.index or 0)


@functools.cache
def _flash_seqlen_runs(index: int) -> bool:
    """Whether this torch build has FA2 for this GPU (a JetPack or older-GPU build may not)."""
    try:
        t = torch.zeros(2, 8, 1, 64, device=torch.device("cuda", index), dtype=torch.float16)
        seqlen_attention(t, t, t, torch.ones(2, device=t.device, dtype=torch.int32))
    except (RuntimeError, NotImplementedError):
        return False
    return True


def attention(
    q: Tensor, k: Tensor, v: Tensor, kbias: Tensor | None, mode: str, klen: Tensor | None = None
) -> Tensor:
    """SDPA with padded keys masked out. ``kbias``: [B, N] additive (0 valid, large negative padded);
    ``klen``: the same as int32 lengths [B] (valid keys are a prefix).

    ``sdpa`` passes the mask as ``attn_mask`` (memory-efficient or cuDNN kernels); ``augment``
    appends one channel to q (1) and k (the bias) so the mask rides inside a flash-attention
    kernel, which takes no mask argument; ``flash_seqlen`` gives the kernel the lengths, so it
    never reads a padded key and no mask is built (:func:`seqlen_attention`; on CPU: ``sdpa``).
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    if kbias is None:
        return F.scaled_dot_product_attention(q, k, v)
    if mode == "flash_seqlen" and klen is not None and q.is_cuda:
        return seqlen_attention(q, k, v, klen)
    if mode in ("sdpa", "flash_seqlen"):
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


def seqlen_attention(q: Tensor, k: Tensor, v: Tensor, klen: Tensor) -> Tensor:
    """[B, H, N, D] attention where sequence ``i`` has ``klen[i]`` valid keys (``flash_seqlen``):
    FA2's varlen entry with every sequence N long and ``seqused_k``, so the kernel stops at each
    sequence's last valid key. PyTorch's SDPA takes a padding mask only as a dense additive bias,
    which sends it to a slower kernel (H200, 32 x 998 frames, half of them 620 long: 553.6 us
    against 412.2; docs/perf-log.md, session 6). Rows past a sequence's length are not its
    frames (nothing reads them: the caller drops them, and their keys are never used)."""
    b, n = q.shape[0], q.shape[2]
    cu = torch.arange(0, (b + 1) * n, n, device=q.device, dtype=torch.int32)
    return _fa2_varlen(q, k, v, cu, n, klen)


def _fa2_varlen(
    q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int, seqused_k: Tensor | None
) -> Tensor:
    """FA2's varlen entry (``aten._flash_attention_forward``) on [B, H, N, D] tensors: the rows
    flattened to [B*N, H, D], sequences starting at ``cu`` (int32, then B*N), back as [B, H, N, D]."""
    b, h, n, d = q.shape
    flat = (t.transpose(1, 2).reshape(b * n, h, d) for t in (q, k, v))
    fa2 = torch.ops.aten._flash_attention_forward
    out = fa2(*flat, cu, cu, max_len, max_len, 0.0, False, False, seqused_k=seqused_k)[0]
    return out.view(b, n, h, d).transpose(1, 2)


class Packed(NamedTuple):
    """Lines packed one after another along the frame axis, no padding between them: each CFG
    half is one row of T frames. Attention and the positional conv stay inside each line, and
    RoPE positions restart at every line, so each line computes what it computes alone, while
    the linear layers run over real frames only (a padded batch of mixed lengths wastes the
    rows and attention past each line's end)."""

    segments: Tensor  # int32 [2, T]: per frame, its line's first frame and one past its last
    cu: Tensor  # int32 [2S + 1]: where each line starts in the two halves' 2T rows, then 2T
    max_len: int  # the longest line
    mask: Tensor | None  # where FA2 does not run: the [T, T] additive block-diagonal mask for SDPA
    cos: Tensor  # [1, 1, T, dh]: RoPE per frame, positions counted from its line's start
    sin: Tensor


def packed_attention(q: Tensor, k: Tensor, v: Tensor, packed: Packed) -> Tensor:
    """[2, H, T, D] attention within each packed line: FA2's varlen entry (each line one
    sequence of the flattened rows), or SDPA with the block-diagonal mask where FA2 does not run
    (``packed.mask`` is set then)."""
    if packed.mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=packed.mask.to(q.dtype))
    return _fa2_varlen(q, k, v, packed.cu, packed.max_len, None)
