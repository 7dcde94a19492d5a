"""Random-weight models for the bench: the full-size F5TTS_v1_Base architecture, or a tiny one.

Built from f5-tts's own classes (``CFM``, ``DiT``) and f5-tts's bundled architecture config, with
Vocos from its own classes, so the stock path and the fast path run the real code on identical
weights. Nothing is downloaded. ``DiT.initialize_weights`` zeroes the AdaLN and output layers
(a fresh model would predict zero velocity and every path would trivially agree); we
re-randomise them with PyTorch's default ``Linear`` init.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import torch
import yaml  # type: ignore[import-untyped]

from ishowttsd.engine.f5 import upstream

VOCAB_SIZE = 2546
"""Size of F5TTS_v1_Base's ``vocab.txt`` (Emilia ZH+EN pinyin): the embedding table is full size."""

TINY_ARCH: dict[str, Any] = dict(
    dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, text_dim=32, text_mask_padding=True,
    qk_norm=None, conv_layers=1, pe_attn_head=None, attn_backend="torch", attn_mask_enabled=False,
)  # fmt: skip
TINY_VOCOS: dict[str, int] = dict(dim=32, intermediate_dim=64, num_layers=1)
FULL_VOCOS: dict[str, int] = dict(dim=512, intermediate_dim=1536, num_layers=8)


@dataclass
class BenchModels:
    cfm: Any
    vocoder: Any
    vocab: dict[str, int]
    arch_name: str
    arch: dict[str, Any]
    params: int

    @property
    def dit(self) -> Any:
        return self.cfm.transformer


def vocab() -> dict[str, int]:
    """Space first (token 0, as in f5's vocab.txt), printable ASCII, then filler to full size."""
    chars = [" "] + [c for c in string.printable if c not in " \t\n\r\x0b\x0c"]
    toks = chars + [f"<unused{i}>" for i in range(VOCAB_SIZE - len(chars))]
    return {t: i for i, t in enumerate(toks)}


def full_arch(name: str = "F5TTS_v1_Base") -> dict[str, Any]:
    doc = yaml.safe_load((upstream.configs_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
    arch = dict(doc["model"]["arch"])
    arch.pop("checkpoint_activations", None)
    return arch


def rerandomise(dit: Any) -> None:
    """Undo ``initialize_weights``' zeroing: default Linear init for AdaLN and output layers."""
    for block in dit.transformer_blocks:
        block.attn_norm.linear.reset_parameters()
    dit.norm_out.linear.reset_parameters()
    dit.proj_out.reset_parameters()


def build(size: str, device: torch.device, seed: int = 0) -> BenchModels:
    """``size``: 'full' (F5TTS_v1_Base, 337 M parameters) or 'tiny'. fp32 weights on ``device``."""
    m = upstream.modules()
    torch.manual_seed(seed)
    arch = full_arch() if size == "full" else dict(TINY_ARCH)
    voc = vocab()
    dit = m.DiT(**arch, text_num_embeds=len(voc), mel_dim=100)
    rerandomise(dit)
    cfm = m.CFM(
        transformer=dit,
        mel_spec_kwargs=dict(
            n_fft=1024,
            hop_length=256,
            win_length=1024,
            n_mel_channels=100,
            target_sample_rate=24000,
            mel_spec_type="vocos",
        ),
        odeint_kwargs=dict(method="euler"),
        vocab_char_map=voc,
    )
    cfm = cfm.to(device).eval()
    vocoder = build_vocos(FULL_VOCOS if size == "full" else TINY_VOCOS).to(device).eval()
    params = sum(p.numel() for p in dit.parameters())
    name = "F5TTS_v1_Base" if size == "full" else "tiny"
    return BenchModels(cfm=cfm, vocoder=vocoder, vocab=voc, arch_name=name, arch=arch, params=params)


def build_vocos(hp: dict[str, int]) -> Any:
    """Vocos (mel 24 kHz layout: 100 mels, n_fft 1024, hop 256) with random weights."""
    from vocos import Vocos
    from vocos.feature_extractors import MelSpectrogramFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    fe = MelSpectrogramFeatures(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100, padding="center")
    bb = VocosBackbone(input_channels=100, dim=hp["dim"], intermediate_dim=hp["intermediate_dim"],
                       num_layers=hp["num_layers"])  # fmt: skip
    head = ISTFTHead(dim=hp["dim"], n_fft=1024, hop_length=256, padding="same")
    return Vocos(feature_extractor=fe, backbone=bb, head=head)
