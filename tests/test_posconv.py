"""The fused positional conv (engine/f5/posconv.py) computes what F5's masked conv computes.

On CUDA the Triton kernel is compared with cuDNN at the full-size shapes (``gpu`` marker, run on
the lent GPU); on CPU the same kernel runs in Triton's interpreter where Triton is installed
(it is not a CI dependency: JetPack and CI go without it, and the dispatcher falls back)."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

from ishowttsd.engine.f5 import posconv


def _stock(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor, groups: int
) -> torch.Tensor:
    """F5's ConvPositionEmbedding with its mask, written out: mask, (conv, mish, mask) x 1."""
    keep = (torch.arange(x.shape[1])[None, :] < lengths[:, None])[:, :, None]
    c = x.masked_fill(~keep, 0.0).permute(0, 2, 1)
    c = F.mish(F.conv1d(c, w, b, padding=w.shape[-1] // 2, groups=groups)).permute(0, 2, 1)
    return c.masked_fill(~keep, 0.0)


def test_reference_matches_f5_masked_conv() -> None:
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 40, 32), torch.randn(32, 8, 7) * 0.2, torch.randn(32)
    lengths = torch.tensor([40, 17, 1], dtype=torch.int32)
    got = posconv.reference(x, w, b, lengths, 4, None)
    assert torch.equal(got, _stock(x, w, b, lengths, 4))
    assert torch.equal(got[1, 17:], torch.zeros_like(got[1, 17:]))  # padded frames stay silent
    res = torch.randn_like(x)
    assert torch.allclose(posconv.reference(x, w, b, lengths, 4, res), res + got)


def test_cpu_falls_back_to_the_reference_and_rejects_unknown_impls() -> None:
    x, w, b = torch.randn(2, 20, 32), torch.randn(32, 8, 7), torch.randn(32)
    got = posconv.conv_mish(x, posconv.pack_weight(w, 4), w, b, None, 4)
    assert torch.equal(got, posconv.reference(x, w, b, None, 4, None))
    with pytest.raises(ValueError, match="conv impl"):
        posconv.conv_mish(x, posconv.pack_weight(w, 4), w, b, None, 4, impl="fft")


def test_packed_lines_convolve_as_if_each_were_alone() -> None:
    torch.manual_seed(3)
    lens = [9, 1, 14, 6]
    total = sum(lens) + 5  # padding after the last line
    x, w, b = torch.randn(2, total, 32), torch.randn(32, 8, 7) * 0.2, torch.randn(32)
    seg = posconv.segment_bounds(lens, total)
    assert seg[:, 9].tolist() == [9, 10] and seg[:, total - 1].tolist() == [total - 1, total - 1]
    res = torch.randn_like(x)
    got = posconv.conv_mish(x, posconv.pack_weight(w, 4), w, b, None, 4, residual=res, segments=seg)
    start = 0
    for n in lens:
        alone = posconv.reference(x[:, start : start + n], w, b, None, 4, res[:, start : start + n])
        assert torch.allclose(got[:, start : start + n], alone, atol=1e-6), (start, n)
        start += n
    assert torch.equal(got[:, start:], res[:, start:])  # padding frames: nothing added
    with pytest.raises(ValueError, match="do not fit"):
        posconv.segment_bounds([5, 6], 10)


def test_kernel_fits_only_tensor_core_tiles() -> None:
    # F5TTS_v1_Base: 1024 channels in 16 groups = 64; tiny models have fewer, non-power-of-two
    assert posconv.kernel_fits(64) and posconv.kernel_fits(16) and posconv.kernel_fits(128)
    assert not posconv.kernel_fits(8) and not posconv.kernel_fits(24) and not posconv.kernel_fits(12)
    x, w, b = torch.randn(2, 20, 32), torch.randn(32, 8, 7), torch.randn(32)
    with pytest.raises(ValueError, match="channels per group"):
        posconv.conv_mish(x, posconv.pack_weight(w, 4), w, b, None, 4, impl="triton")


def test_pack_weight_layout() -> None:
    w = torch.randn(32, 8, 7)
    p = posconv.pack_weight(w, 4)
    assert p.shape == (4, 7, 8, 8)
    # group 2, tap 3, input channel 5, output channel 6 = weight[2*8 + 6, 5, 3]
    assert p[2, 3, 5, 6] == w[22, 5, 3]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton not installed (optional)")
def test_triton_kernel_in_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
    posconv._kernel.cache_clear()  # built under the interpreter setting
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(1)
    g, c, k = 4, 16, 7
    x = torch.randn(3, 50, g * c, device=dev)
    w, b = torch.randn(g * c, c, k, device=dev) * 0.1, torch.randn(g * c, device=dev)
    lengths = torch.tensor([50, 20, 1], dtype=torch.int32, device=dev)
    res = torch.randn_like(x)
    for r in (None, res):
        want = posconv.reference(x, w, b, lengths, g, r)
        got = posconv.conv_mish(x, posconv.pack_weight(w, g), w, b, lengths, g, r, impl="triton")
        assert (got - want).abs().max().item() < 1e-4
    seg = posconv.segment_bounds([20, 1, 24], 50, dev)  # packed lines, then padding
    want = posconv.reference(x, w, b, None, g, res, segments=seg)
    got = posconv.conv_mish(x, posconv.pack_weight(w, g), w, b, None, g, res, impl="triton", segments=seg)
    assert (got - want).abs().max().item() < 1e-4
    posconv._kernel.cache_clear()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_matches_cudnn_full_size(dtype: torch.dtype) -> None:
    g, d, k = 16, 1024, 31
    torch.manual_seed(2)
    w = (torch.randn(d, d // g, k, device="cuda") / (d // g * k) ** 0.5).to(dtype)
    b = (0.1 * torch.randn(d, device="cuda")).to(dtype)
    for b2, n in ((2, 998), (32, 672)):
        x = torch.randn(b2, n, d, device="cuda", dtype=dtype)
        lengths = torch.full((b2,), n, dtype=torch.int32, device="cuda")
        lengths[1::2] = n // 2
        exact = posconv.reference(x.double(), w.double(), b.double(), lengths, g, x.double())
        got = posconv.conv_mish(x, posconv.pack_weight(w, g), w, b, lengths, g, residual=x, impl="triton")
        cud = posconv.reference(x, w, b, lengths, g, x)
        err = ((got.double() - exact).norm() / exact.norm()).item()
        err_cudnn = ((cud.double() - exact).norm() / exact.norm()).item()
        # no worse than cuDNN in the same dtype (fp32 accumulation in both), and small in absolute terms
        assert err <= max(2 * err_cudnn, 1e-6), (err, err_cudnn)
        assert err < (1e-5 if dtype == torch.float32 else 5e-3)
    # packed lines ([f5.fast] pack): each convolves on its own
    x = torch.randn(2, 2168, d, device="cuda", dtype=dtype)
    seg = posconv.segment_bounds([509, 998, 661], 2168, "cuda")
    exact = posconv.reference(x.double(), w.double(), b.double(), None, g, x.double(), segments=seg)
    got = posconv.conv_mish(
        x, posconv.pack_weight(w, g), w, b, None, g, residual=x, impl="triton", segments=seg
    )
    assert ((got.double() - exact).norm() / exact.norm()).item() < (1e-5 if dtype == torch.float32 else 5e-3)


def test_compile_is_dropped_only_where_cuda_lacks_triton() -> None:
    from ishowttsd.engine.f5.pipeline import can_compile

    assert can_compile(True, "cuda", True)
    assert not can_compile(True, "cuda", False)  # a JetPack torch without Triton: start uncompiled
    assert can_compile(True, "cpu", False)
    assert not can_compile(False, "cuda", True)
