"""``ishowtts-models tiny DIR``: a small random F5 model in f5-tts's own layout, for smoke tests.

Writes ``F5TTS_tiny.yaml`` (an f5-tts model config), ``model_tiny.safetensors`` (``ema_model.*``
keys plus ``initted``/``step``, like released checkpoints) and ``model_tiny.pt``
(``ema_model_state_dict``), the bundled ``vocab.txt``, a small Vocos directory, a synthetic
reference recording and ``f5.toml`` (the ``[f5]`` section and one ``[[voices]]`` entry, with
absolute paths). The weights are random: it speaks noise, fast, through the real code paths.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import yaml  # type: ignore[import-untyped]

from ishowttsd.engine.f5 import upstream
from ishowttsd.engine.f5.fetch import bundled_vocab

TINY_ARCH: dict[str, Any] = dict(
    dim=64,
    depth=2,
    heads=2,
    dim_head=32,
    ff_mult=2,
    text_dim=32,
    text_mask_padding=True,
    qk_norm=None,
    conv_layers=1,
    pe_attn_head=None,
    attn_backend="torch",
    attn_mask_enabled=False,
    checkpoint_activations=False,
)
MEL_SPEC: dict[str, Any] = dict(
    target_sample_rate=24000,
    n_mel_channels=100,
    hop_length=256,
    win_length=1024,
    n_fft=1024,
    mel_spec_type="vocos",
)
VOCOS_CONFIG: dict[str, Any] = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {
            "sample_rate": 24000,
            "n_fft": 1024,
            "hop_length": 256,
            "n_mels": 100,
            "padding": "center",
        },
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 32, "intermediate_dim": 64, "num_layers": 1},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        # "same", as in the real vocos-mel-24khz config: the fast path's native iSTFT takes only
        # that layout, so the tiny model has to have it for the tests to run that path
        "init_args": {"dim": 32, "n_fft": 1024, "hop_length": 256, "padding": "same"},
    },
}
REF_TEXT = "This is a tiny test voice, made for smoke tests."


def rerandomise(dit: Any, std: float = 0.02) -> None:
    """``DiT.initialize_weights`` zeroes the AdaLN and output layers, so a fresh model predicts
    zero flow and sampling returns its input noise: draw them like the other layers instead."""
    layers = [dit.norm_out.linear, dit.proj_out] + [b.attn_norm.linear for b in dit.transformer_blocks]
    for lin in layers:
        torch.nn.init.normal_(lin.weight, std=std)
        torch.nn.init.normal_(lin.bias, std=std)


def build_cfm(
    arch: dict[str, Any], vocab_size: int, seed: int, init: Callable[[Any], None] = rerandomise
) -> Any:
    """A random CFM with ``arch``'s DiT; ``init`` redraws the layers ``initialize_weights`` zeroes
    (the bench passes its own: its records were measured on PyTorch's default ``Linear`` init)."""
    m = upstream.modules()
    torch.manual_seed(seed)
    dit = m.DiT(
        **{k: v for k, v in arch.items() if k != "checkpoint_activations"},
        text_num_embeds=vocab_size,
        mel_dim=MEL_SPEC["n_mel_channels"],
    )
    init(dit)
    return m.CFM(transformer=dit, mel_spec_kwargs={k: v for k, v in MEL_SPEC.items()})


def ema_state(cfm: Any) -> dict[str, torch.Tensor]:
    """The model's weights as a released checkpoint stores them (EMA copy)."""
    state = {f"ema_model.{k}": v.detach().clone().contiguous() for k, v in cfm.state_dict().items()}
    state["initted"] = torch.tensor(True)
    state["step"] = torch.tensor(1)
    return state


def reference_wave(seconds: float = 3.0, rate: int = 24000, seed: int = 0) -> np.ndarray:
    """A voice-like test signal: a 130 Hz harmonic series under a 4 Hz syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 130 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    x = tone * env + 0.01 * rng.standard_normal(len(t))
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def write_tiny(out: Path, seed: int = 0) -> Path:
    """Write everything into ``out``; return the path of ``f5.toml``."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    vocab = out / "vocab.txt"
    shutil.copyfile(bundled_vocab(), vocab)
    n_vocab = sum(1 for _ in vocab.open(encoding="utf-8"))
    cfg = {
        "model": {
            "name": "F5TTS_tiny",
            "tokenizer": "custom",
            "backbone": "DiT",
            "arch": TINY_ARCH,
            "mel_spec": MEL_SPEC,
        }
    }
    (out / "F5TTS_tiny.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    cfm = build_cfm(TINY_ARCH, n_vocab, seed)
    state = ema_state(cfm)
    from safetensors.torch import save_file

    save_file(state, str(out / "model_tiny.safetensors"))
    torch.save({"ema_model_state_dict": state}, out / "model_tiny.pt")

    from vocos import Vocos

    voc_dir = out / "vocos"
    voc_dir.mkdir(exist_ok=True)
    (voc_dir / "config.yaml").write_text(yaml.safe_dump(VOCOS_CONFIG, sort_keys=False), encoding="utf-8")
    torch.manual_seed(seed + 1)
    voc = Vocos.from_hparams(str(voc_dir / "config.yaml"))
    torch.save(voc.state_dict(), voc_dir / "pytorch_model.bin")

    ref = out / "ref.wav"
    sf.write(str(ref), reference_wave(seed=seed), 24000, subtype="PCM_16")
    toml = out / "f5.toml"
    toml.write_text(
        "# Written by `ishowtts-models tiny`: a random F5 model for smoke tests (it speaks noise).\n"
        '# Paste into ishowtts.toml, or use as --config with [engine] kind = "f5" or "auto".\n'
        "[f5]\n"
        f"model_config = {_q(out / 'F5TTS_tiny.yaml')}\n"
        f"checkpoint = {_q(out / 'model_tiny.safetensors')}\n"
        f"vocab = {_q(vocab)}\n"
        f"vocoder = {_q(voc_dir)}\n"
        "# The tiny model's ops are too small to gain from threads; more threads only contend.\n"
        "cpu_threads = 1\n"
        "\n[[voices]]\n"
        'id = "tiny"\n'
        f"ref_audio = {_q(ref)}\n"
        f"ref_text = {_q(REF_TEXT)}\n"
        'language = "en"\n',
        encoding="utf-8",
    )
    return toml


def _q(v: object) -> str:
    """A TOML basic string."""
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'
