"""The attention paths of ``engine/f5/attention.py`` that run only on CUDA, on the GPU (``-m gpu``):
``attn_mode = "flash_seqlen"`` (FA2 told each sequence's key count) against SDPA with the additive
padding mask, for padded batches like the daemon's length groups and idle slots (one valid key);
packed lines (``[f5.fast] pack``) against each line alone. On CPU both run SDPA with a mask,
which the CPU suite's batched- and packed-equals-alone tests cover."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from ishowttsd.engine.f5 import attention, posconv

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_seqlen_equals_masked_sdpa_on_every_valid_row(dtype: torch.dtype) -> None:
    dev = torch.device("cuda")
    assert attention.resolve_attn_mode("auto", dev) == "flash_seqlen"
    torch.manual_seed(0)
    lens = (998, 700, 1, 513, 998, 700, 1, 513)  # CFG halves; an idle slot keeps one key
    b, n, h, d = len(lens), 998, 16, 64
    qkv = torch.randn(b, n, 3, h, d, device=dev, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, D] views, as the fused block has them
    klen = torch.tensor(lens, device=dev, dtype=torch.int32)
    valid = torch.arange(n, device=dev)[None, :] < klen[:, None]
    kbias = torch.where(valid, 0.0, attention.MASKED_LOGIT)
    got = attention.attention(q, k, v, kbias, "flash_seqlen", klen)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=kbias[:, None, None, :])
    assert got.shape == want.shape and got.dtype == dtype
    assert bool(got.isfinite().all())  # rows past a length are dropped later, but never NaN
    rows = valid[:, None, :, None]
    err = ((got.float() - want) * rows).norm() / (want * rows).norm()
    assert err < 1e-2, err
    # each sequence alone, unpadded, gives the same rows
    for i in (1, 3):
        m = lens[i]
        alone = F.scaled_dot_product_attention(q[i : i + 1, :, :m], k[i : i + 1, :, :m], v[i : i + 1, :, :m])
        assert torch.allclose(got[i : i + 1, :, :m].float(), alone.float(), atol=2e-2, rtol=0), i


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_packed_attention_keeps_each_line_to_itself() -> None:
    """``[f5.fast] pack``: FA2's varlen entry over lines packed one after another (both CFG
    halves) against SDPA on each line alone."""
    dev = torch.device("cuda")
    torch.manual_seed(1)
    lens = [509, 998, 1, 661]
    total, h, d = sum(lens), 16, 64
    seg = posconv.segment_bounds(lens, total, dev)
    starts = torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32)
    cu = torch.cat((starts[:-1], starts + total)).to(dev)
    packed = attention.Packed(seg, cu, max(lens), None, torch.empty(0), torch.empty(0))
    qkv = torch.randn(2, total, 3, h, d, device=dev, dtype=torch.bfloat16)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [2, H, T, D]
    got = attention.packed_attention(q, k, v, packed)
    a = 0
    for n in lens:
        alone = F.scaled_dot_product_attention(q[:, :, a : a + n], k[:, :, a : a + n], v[:, :, a : a + n])
        assert torch.allclose(got[:, :, a : a + n].float(), alone.float(), atol=2e-2, rtol=0), (a, n)
        a += n
