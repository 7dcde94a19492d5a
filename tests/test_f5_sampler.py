"""The reference sampler against f5-tts's own CFM.sample, on a small random DiT (fp32, CPU)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from ishowttsd.engine.f5 import sampler, upstream
from ishowttsd.engine.f5.settings import InferenceConfig
from ishowttsd.engine.f5.tiny import TINY_ARCH, build_cfm

torch.set_num_threads(1)  # tiny ops: threads only contend on a shared 2-core box


@pytest.fixture(scope="module")
def cfm() -> Any:
    m = build_cfm(TINY_ARCH, vocab_size=40, seed=3)
    m.vocab_char_map = {chr(97 + i): i for i in range(26)}
    return m.eval()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def stock(cfm: Any, ref: torch.Tensor, text: torch.Tensor, frames: int, cfg: InferenceConfig) -> torch.Tensor:
    out, _ = cfm.sample(
        cond=ref,
        text=text,
        duration=frames,
        steps=cfg.nfe_step,
        cfg_strength=cfg.cfg_strength,
        sway_sampling_coef=cfg.sway_sampling_coef,
        seed=cfg.seed,
        use_epss=cfg.use_epss,
    )
    return out  # type: ignore[no-any-return]


def ours(cfm: Any, ref: torch.Tensor, text: torch.Tensor, frames: int, cfg: InferenceConfig) -> torch.Tensor:
    c = sampler.prepare(cfm.transformer, ref, text, frames, cfg)
    noise = sampler.make_noise(1, frames, 100, cfg.seed, ref.device, ref.dtype)
    return sampler.sample(c, noise)


@pytest.mark.parametrize(
    "cfg",
    [
        InferenceConfig(seed=11),
        InferenceConfig(seed=12, nfe_step=16),  # an EPSS-defined step count
        InferenceConfig(seed=13, cfg_strength=0.0),  # unguided: batch-1 path
        InferenceConfig(seed=14, sway_sampling_coef=None, nfe_step=5),
    ],
)
def test_matches_cfm_sample(cfm: Any, cfg: InferenceConfig) -> None:
    g = torch.Generator().manual_seed(cfg.seed or 0)
    ref = torch.randn(1, 37, 100, generator=g)
    text = torch.randint(0, 26, (1, 21), generator=g)
    a = ours(cfm, ref, text, 90, cfg)
    b = stock(cfm, ref, text, 90, cfg)
    assert a.shape == b.shape == (1, 90, 100)
    assert rel(a[:, 37:], b[:, 37:]) < 1e-5
    assert torch.equal(a[:, :37], ref)  # the reference is pasted back
    # and the model did something: the output is far from its starting noise
    noise = sampler.make_noise(1, 90, 100, cfg.seed, torch.device("cpu"), torch.float32)
    assert rel(a[:, 37:], noise[:, 37:]) > 0.05


def test_nfe8_grid_is_uniform_then_swayed() -> None:
    t = sampler.timesteps(InferenceConfig(), "cpu", torch.float64)
    u = torch.linspace(0, 1, 9, dtype=torch.float64)
    expected = u - (torch.cos(torch.pi / 2 * u) - 1 + u)  # sway coefficient -1
    assert torch.allclose(t, expected)
    assert float(t[0]) == 0 and abs(float(t[-1]) - 1) < 1e-12 and len(t) == 9


def test_noise_is_cfm_samples_noise(cfm: Any) -> None:
    torch.manual_seed(99)
    want = torch.randn(50, 100)
    got = sampler.make_noise(1, 50, 100, 99, torch.device("cpu"), torch.float32)[0]
    assert torch.equal(got, want)
    a = sampler.make_noise(1, 50, 100, None, torch.device("cpu"), torch.float32)
    b = sampler.make_noise(1, 50, 100, None, torch.device("cpu"), torch.float32)
    assert not torch.equal(a, b)


def test_stale_text_cache_is_cleared(cfm: Any) -> None:
    """Upstream's cache survives a failed sample; ours must never speak the previous text."""
    dit = cfm.transformer
    cfg = InferenceConfig(seed=5)
    g = torch.Generator().manual_seed(5)
    ref = torch.randn(1, 20, 100, generator=g)
    text = torch.randint(0, 26, (1, 10), generator=g)
    clean = ours(cfm, ref, text, 60, cfg)
    # poison the cache as an exception inside CFM.sample would leave it
    dit.text_cond = torch.zeros(1, 60, TINY_ARCH["text_dim"])
    dit.text_uncond = torch.zeros(1, 60, TINY_ARCH["text_dim"])
    again = ours(cfm, ref, text, 60, cfg)
    assert torch.equal(clean, again)
    assert dit.text_cond is None and dit.text_uncond is None


def test_cache_cleared_even_when_a_step_raises(cfm: Any) -> None:
    dit = cfm.transformer
    c = sampler.prepare(dit, torch.randn(1, 20, 100), torch.randint(0, 26, (1, 10)), 60, InferenceConfig())
    dit.text_cond = torch.zeros(1)

    def boom(x: torch.Tensor, t: torch.Tensor, c: sampler.Conditioning) -> torch.Tensor:
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(RuntimeError):
        sampler.sample(c, torch.randn(1, 60, 100), boom)
    assert dit.text_cond is None


def test_step_function_is_pluggable_and_called_once_per_step(cfm: Any) -> None:
    calls: list[float] = []

    def counting(x: torch.Tensor, t: torch.Tensor, c: sampler.Conditioning) -> torch.Tensor:
        calls.append(float(t))
        return sampler.velocity(x, t, c)

    cfg = replace(InferenceConfig(), seed=1)
    c = sampler.prepare(cfm.transformer, torch.randn(1, 20, 100), torch.randint(0, 26, (1, 10)), 60, cfg)
    sampler.sample(c, torch.randn(1, 60, 100), counting)
    assert len(calls) == cfg.nfe_step == 8
    assert calls == sorted(calls) and calls[0] == 0.0


def test_upstream_import_avoids_trainer_and_hub_stacks() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom ishowttsd.engine.f5 import upstream\nupstream.modules()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('wandb', 'accelerate', 'datasets', 'transformers', 'matplotlib', 'pydub', 'gradio')"
        " or m in ('f5_tts.infer.utils_infer', 'f5_tts.api')]\nassert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert upstream.modules().CFM.__module__ == "f5_tts.model.cfm"


@pytest.mark.parametrize(
    "flags",
    [
        {"text_mask_padding": False, "pe_attn_head": 1},  # F5TTS_Base / F5TTS_Small layout
        {"qk_norm": "rms_norm", "long_skip_connection": True, "conv_layers": 0},
    ],
)
def test_matches_cfm_sample_on_other_dit_layouts(flags: dict[str, Any]) -> None:
    arch = {**TINY_ARCH, **flags}
    m = build_cfm(arch, vocab_size=40, seed=4).eval()
    cfg = InferenceConfig(seed=21)
    g = torch.Generator().manual_seed(21)
    ref = torch.randn(1, 30, 100, generator=g)
    text = torch.randint(0, 26, (1, 15), generator=g)
    a, b = ours(m, ref, text, 70, cfg), stock(m, ref, text, 70, cfg)
    assert rel(a[:, 30:], b[:, 30:]) < 1e-5
