"""``attn_mode = "flash_seqlen"`` (FA2 told each sequence's key count) against SDPA with the
additive padding mask, on the GPU (``-m gpu``), for padded batches like the daemon's length
groups and idle slots (one valid key). On CPU the mode runs the masked SDPA itself, which the
CPU suite's batched-equals-alone tests cover."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ishowttsd.engine.f5 import fused

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_seqlen_equals_masked_sdpa_on_every_valid_row(dtype: torch.dtype) -> None:
    dev = torch.device("cuda")
    assert fused.resolve_attn_mode("auto", dev) == "flash_seqlen"
    torch.manual_seed(0)
    lens = (998, 700, 1, 513, 998, 700, 1, 513)  # CFG halves; an idle slot keeps one key
    b, n, h, d = len(lens), 998, 16, 64
    qkv = torch.randn(b, n, 3, h, d, device=dev, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, D] views, as the fused block has them
    klen = torch.tensor(lens, device=dev, dtype=torch.int32)
    valid = torch.arange(n, device=dev)[None, :] < klen[:, None]
    kbias = torch.where(valid, 0.0, fused.MASKED_LOGIT)
    got = fused._attention(q, k, v, kbias, "flash_seqlen", klen)
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
