"""Random-weight models for the bench: the full-size F5TTS_v1_Base architecture, or the tiny one
of ``engine/f5/tiny.py`` (``ishowtts-models tiny``).

Built by ``tiny.build_cfm`` from f5-tts's own classes (``CFM``, ``DiT``) and f5-tts's bundled
architecture config, with Vocos from its own classes, so the stock path and the fast path run the
real code on identical weights. Nothing is downloaded. ``DiT.initialize_weights`` zeroes the AdaLN
and output layers (a fresh model would predict zero velocity and every path would trivially
agree); the bench re-randomises them with PyTorch's default ``Linear`` init (``tiny.py`` draws
them from a normal distribution instead; the bench keeps its own draw, the one its records and
their history were measured with). The bench's vocabulary is its own too, for the same reason.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import torch
import yaml  # type: ignore[import-untyped]

from ishowttsd.engine.f5 import tiny, upstream

VOCAB_SIZE = 2546
"""Size of F5TTS_v1_Base's ``vocab.txt`` (Emilia ZH+EN pinyin): the embedding table is full size."""

TINY_VOCOS: dict[str, int] = {
    k: tiny.VOCOS_CONFIG["backbone"]["init_args"][k] for k in ("dim", "intermediate_dim", "num_layers")
}
"""The tiny Vocos's size, as ``ishowtts-models tiny`` writes it."""
FULL_VOCOS: dict[str, int] = dict(dim=512, intermediate_dim=1536, num_layers=8)
"""The full-size Vocos (vocos-mel-24khz)."""


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


def build(size: str, device: torch.device, seed: int = 0, **arch_changes: Any) -> BenchModels:
    """``size``: 'full' (F5TTS_v1_Base, 337 M parameters) or 'tiny', with ``arch_changes`` to
    its DiT architecture (e.g. ``dim``). fp32 weights on ``device``."""
    arch = {**(full_arch() if size == "full" else tiny.TINY_ARCH), **arch_changes}
    voc = vocab()
    cfm = tiny.build_cfm(arch, len(voc), seed, init=rerandomise)
    cfm.vocab_char_map = voc  # the stock path's ``CFM.sample`` tokenises with it
    cfm = cfm.to(device).eval()
    vocoder = build_vocos(FULL_VOCOS if size == "full" else TINY_VOCOS).to(device).eval()
    params = sum(p.numel() for p in cfm.transformer.parameters())
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
