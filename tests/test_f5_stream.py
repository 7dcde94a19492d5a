"""Streaming cross-fade: the same join as f5-tts's offline one, emitted chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest

from ishowttsd.engine.f5.stream import CrossFader


def offline_join(waves: list[np.ndarray], n: int) -> np.ndarray:
    """f5-tts's infer_batch_process join (linear fades), written out independently."""
    out = waves[0]
    for w in waves[1:]:
        k = min(n, len(out), len(w))
        if k <= 0:
            out = np.concatenate([out, w])
            continue
        fade = np.linspace(0, 1, k)
        out = np.concatenate([out[:-k], out[-k:] * (1 - fade) + w[:k] * fade, w[k:]])
    return out


@pytest.mark.parametrize("lengths", [[5000, 7000, 3000], [100, 5000], [5000], [3000, 50, 4000], [10, 10, 10]])
@pytest.mark.parametrize("n", [0, 1, 240, 3600])
def test_streamed_join_equals_offline_join(lengths: list[int], n: int) -> None:
    rng = np.random.default_rng(len(lengths) * 1000 + n)
    waves = [rng.standard_normal(m).astype(np.float32) for m in lengths]
    f = CrossFader(n)
    pieces = [f.push(w) for w in waves] + [f.flush()]
    streamed = np.concatenate(pieces)
    np.testing.assert_allclose(streamed, offline_join(waves, n), rtol=0, atol=1e-5)
    assert all(len(p) <= len(w) + n for p, w in zip(pieces, waves, strict=False))


def test_first_audio_is_out_before_the_next_chunk_exists() -> None:
    f = CrossFader(3600)
    out = f.push(np.ones(24000, dtype=np.float32))
    assert len(out) == 24000 - 3600  # only the seam region waits


def test_seam_between_two_sines_has_no_step() -> None:
    rate, n = 24000, 3600
    t = np.arange(rate) / rate
    a = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    b = (0.5 * np.sin(2 * np.pi * 200 * t + 2.0)).astype(np.float32)  # a phase jump if butted
    f = CrossFader(n)
    y = np.concatenate([f.push(a), f.push(b), f.flush()])
    butted = np.concatenate([a, b])
    max_step_inside = np.abs(np.diff(a)).max()
    assert np.abs(np.diff(butted)).max() > 5 * max_step_inside  # the naive join clicks
    assert np.abs(np.diff(y)).max() <= 1.05 * max_step_inside  # the cross-fade does not
