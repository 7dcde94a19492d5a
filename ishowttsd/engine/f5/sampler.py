"""The reference sampler: F5's flow-matching ODE solved by a hand-written Euler loop.

It reproduces ``f5_tts.model.cfm.CFM.sample`` (stock path: Euler, EPSS + sway time grid, CFG,
one sequence per call, no masks) on f5-tts's own :class:`DiT`, but is split so a faster path can
be built on it:

* :func:`prepare` computes everything that is fixed across steps once (text embeddings of the
  conditional and unconditional branch, the masked reference mel, the rotary table, the grid);
* :func:`velocity` is one step's model evaluation: a single DiT forward of batch 2B (cond and
  uncond together) followed by the guidance mix. It only reads tensors, so it can be wrapped by
  ``torch.compile`` or captured in a CUDA graph with static input buffers;
* :func:`sample` runs the Euler loop ``x += (t[i+1] - t[i]) * velocity(x, t[i])`` and pastes the
  reference back, like ``CFM.sample`` does.

Shapes: ``B`` sequences of equal length ``N`` frames (total: reference + generated), ``D`` mel
channels (100). Tensors are ``(B, N, D)``, ``B`` is 1 for the daemon.

Numerics: in float32 the result matches ``CFM.sample`` on the same weights and seed to ~1e-6
relative (tests/test_f5_sampler.py on CPU, scripts/f5_fidelity.py for full size on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ishowttsd.engine.f5 import upstream
from ishowttsd.engine.f5.settings import InferenceConfig

__all__ = [
    "Conditioning",
    "InferenceConfig",
    "VelocityFn",
    "make_noise",
    "prepare",
    "sample",
    "timesteps",
    "velocity",
]

VelocityFn = Callable[[Tensor, Tensor, "Conditioning"], Tensor]
"""``(x (B,N,D), t (0-dim), cond) -> v (B,N,D)``: what :func:`sample` calls once per step."""


@dataclass
class Conditioning:
    """Everything one sample's steps share; built by :func:`prepare`, read-only afterwards."""

    dit: Any
    """f5-tts ``DiT`` (in eval mode)."""
    cond_in: Tensor
    """(2B, N, D) when guided: masked reference mel, then zeros (the unconditional branch drops
    the audio prompt); (B, N, D) without guidance."""
    text_in: Tensor
    """(2B, N, text_dim) text embeddings: conditional, then unconditional (text dropped)."""
    rope: tuple[Tensor, Any]
    """Rotary table for N positions (x-transformers' ``(freqs, scale)``)."""
    ref_mel: Tensor
    """(B, N, D) the reference mel, zero-padded to N."""
    ref_mask: Tensor
    """(B, N, 1) bool: True on reference frames (kept from ``ref_mel`` in the output)."""
    cfg_strength: float
    t: Tensor
    """(nfe_step + 1,) time grid from 0 to 1."""

    @property
    def guided(self) -> bool:
        return self.cfg_strength >= 1e-5  # the same threshold CFM.sample uses


def timesteps(cfg: InferenceConfig, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """The time grid ``CFM.sample`` uses: EPSS where f5-tts defines it for ``nfe_step`` (else
    uniform; NFE 8 is uniform), then sway sampling ``t + s * (cos(pi/2 t) - 1 + t)``."""
    m = upstream.modules()
    if cfg.use_epss:
        t = m.utils.get_epss_timesteps(cfg.nfe_step, device=device, dtype=dtype)
    else:
        t = torch.linspace(0, 1, cfg.nfe_step + 1, device=device, dtype=dtype)
    if cfg.sway_sampling_coef is not None:
        t = t + cfg.sway_sampling_coef * (torch.cos(torch.pi / 2 * t) - 1 + t)
    out: Tensor = t
    return out


def make_noise(
    batch: int, frames: int, channels: int, seed: int | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Initial noise ``(B, N, D)``, drawn exactly as ``CFM.sample(seed=...)`` draws it (one
    ``randn(N, D)`` per sequence, each after seeding), from a private generator so the global
    RNG is left alone."""
    gen = torch.Generator(device=device)
    rows = []
    for _ in range(batch):
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()
        rows.append(torch.randn(frames, channels, device=device, dtype=dtype, generator=gen))
    return torch.stack(rows)


def total_frames(ref_frames: int, text_tokens: int, duration: int) -> int:
    """``CFM.sample``'s floor: at least one frame more than the reference and the text."""
    return max(duration, max(text_tokens, ref_frames) + 1)


@torch.no_grad()
def prepare(dit: Any, ref_mel: Tensor, text: Tensor, frames: int, cfg: InferenceConfig) -> Conditioning:
    """Build the per-sample conditioning.

    ``ref_mel``: (B, R, D) reference mel in the model's dtype; ``text``: (B, T) token ids (vocab
    indices, -1 padded) covering reference text + text to say; ``frames``: total length N (see
    :func:`total_frames`). The DiT's own text-embedding cache is cleared here: upstream leaves it
    stale when a sample raises, and a stale cache silently speaks the previous text.
    """
    dit.clear_cache()
    b, r, _ = ref_mel.shape
    if frames <= r:
        raise ValueError(f"frames ({frames}) must exceed the reference length ({r})")
    device, dtype = ref_mel.device, ref_mel.dtype
    ref = F.pad(ref_mel, (0, 0, 0, frames - r), value=0.0)
    ref_mask = torch.zeros(b, frames, 1, dtype=torch.bool, device=device)
    ref_mask[:, :r] = True
    step_cond = torch.where(ref_mask, ref, torch.zeros_like(ref))
    text_cond = dit.text_embed(text, seq_len=frames, drop_text=False)
    guided = cfg.cfg_strength >= 1e-5
    if guided:
        text_uncond = dit.text_embed(text, seq_len=frames, drop_text=True)
        cond_in = torch.cat((step_cond, torch.zeros_like(step_cond)), dim=0)
        text_in = torch.cat((text_cond, text_uncond), dim=0)
    else:
        cond_in, text_in = step_cond, text_cond
    return Conditioning(
        dit=dit,
        cond_in=cond_in,
        text_in=text_in.to(dtype),
        rope=dit.rotary_embed.forward_from_seq_len(frames),
        ref_mel=ref,
        ref_mask=ref_mask,
        cfg_strength=cfg.cfg_strength,
        t=timesteps(cfg, device, dtype),
    )


def velocity(x: Tensor, t: Tensor, c: Conditioning) -> Tensor:
    """The guided flow at time ``t`` (0-dim tensor) for state ``x`` (B, N, D).

    One DiT forward of batch 2B: ``[x | x]`` with ``[ref | 0]`` audio prompt and ``[text | no
    text]`` embeddings, then ``v = v_c + (v_c - v_u) * cfg_strength``. Equivalent to the DiT's
    ``cfg_infer=True`` path, with the input embedding batched too.
    """
    dit = c.dit
    b = x.shape[0]
    xin = torch.cat((x, x), dim=0) if c.guided else x
    h = dit.input_embed(xin, c.cond_in, c.text_in, drop_audio_cond=False)
    temb = dit.time_embed(t.reshape(1).expand(xin.shape[0]))
    residual = h
    for block in dit.transformer_blocks:
        h = block(h, temb, mask=None, rope=c.rope)
    if dit.long_skip_connection is not None:
        h = dit.long_skip_connection(torch.cat((h, residual), dim=-1))
    h = dit.norm_out(h, temb)
    out: Tensor = dit.proj_out(h)
    if not c.guided:
        return out
    pred, null_pred = out[:b], out[b:]
    guided: Tensor = pred + (pred - null_pred) * c.cfg_strength
    return guided


@torch.no_grad()
def sample(c: Conditioning, noise: Tensor, step: VelocityFn = velocity) -> Tensor:
    """Euler-integrate from ``noise`` (B, N, D) over ``c.t``; return the mel (B, N, D) with the
    reference frames pasted back (as ``CFM.sample`` returns it). ``step`` lets a compiled or
    graphed :func:`velocity` stand in."""
    x = noise
    try:
        for i in range(c.t.numel() - 1):
            t0 = c.t[i]
            x = x + (c.t[i + 1] - t0) * step(x, t0, c)
    finally:
        c.dit.clear_cache()
    return torch.where(c.ref_mask, c.ref_mel, x)
