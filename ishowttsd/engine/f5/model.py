"""Load F5-TTS and Vocos from local files, in f5-tts's own checkpoint layout.

Real checkpoints load unchanged: ``.safetensors`` with ``ema_model.<name>`` keys (plus ``initted``,
``step``) or ``.pt`` with ``ema_model_state_dict`` / ``model_state_dict``; the architecture comes
by name from f5-tts's bundled YAML configs or from a YAML of the same shape. Every failure is a
:class:`StartupError` that names the file and the command that fetches it. Nothing here can reach
the network: we never call f5-tts's ``load_model``/``load_vocoder`` (Hub fallbacks) and refuse Vocos
configs whose feature extractor would download EnCodec weights.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml  # type: ignore[import-untyped]

from ishowttsd import log
from ishowttsd.engine.base import StartupError
from ishowttsd.engine.f5 import upstream
from ishowttsd.engine.f5.settings import FETCH_HINT, F5Settings

_log = log.get(__name__)

MEL_FEATURES = "vocos.feature_extractors.MelSpectrogramFeatures"
_DROPPED_KEYS = ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window", "initted", "step")


@dataclass
class MelConfig:
    """``model.mel_spec`` of an f5-tts config."""

    target_sample_rate: int = 24000
    n_mel_channels: int = 100
    hop_length: int = 256
    win_length: int = 1024
    n_fft: int = 1024
    mel_spec_type: str = "vocos"


@dataclass
class Loaded:
    """A loaded model, ready to sample."""

    cfm: Any
    """f5-tts ``CFM`` (holds the ``DiT`` as ``.transformer`` and the ``MelSpec``)."""
    vocoder: Any
    """``vocos.Vocos`` in float32."""
    vocab: dict[str, int]
    mel: MelConfig
    device: torch.device
    dtype: torch.dtype
    arch_name: str

    @property
    def dit(self) -> Any:
        return self.cfm.transformer


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StartupError(f"[f5] device = {name!r} but CUDA is not available in this torch build")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto': float16 on CUDA (measured fastest there on Orin/H100 with bf16 equal), float32 on CPU
    (CPU half-precision matmuls are slow and lossy)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def read_arch(s: F5Settings) -> tuple[str, dict[str, Any], MelConfig]:
    """The DiT keyword arguments and mel settings, from ``model_config`` or the named config."""
    path = s.model_config if s.model_config is not None else upstream.configs_dir() / f"{s.model}.yaml"
    key = "[f5] model_config" if s.model_config is not None else "[f5] model"
    if not path.is_file():
        raise StartupError(f"{key}: model config {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        model = doc["model"]
        if model.get("backbone", "DiT") != "DiT":
            raise StartupError(f"{key}: {path}: backbone {model['backbone']!r} is not supported (DiT only)")
        arch = dict(model["arch"])
        mel = MelConfig(**dict(model.get("mel_spec") or {}))
    except StartupError:
        raise
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise StartupError(
            f"{key}: {path} is not an f5-tts model config (model.arch, model.mel_spec): {e}"
        ) from e
    if mel.mel_spec_type != "vocos":
        raise StartupError(f"{key}: {path}: mel_spec_type {mel.mel_spec_type!r}: only 'vocos' is supported")
    # Training-only switches: activation checkpointing is meaningless without gradients.
    arch.pop("checkpoint_activations", None)
    return str(model.get("name", path.stem)), arch, mel


def read_vocab(path: Path | None) -> dict[str, int]:
    """f5-tts's ``vocab.txt``: token i on line i (the line without its newline; space is token 0)."""
    if path is None or not path.is_file():
        raise StartupError(f"[f5] vocab: {path} does not exist; {FETCH_HINT}")
    vocab: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line[:-1] if line.endswith("\n") else line] = i
    if not vocab:
        raise StartupError(f"[f5] vocab: {path} is empty")
    return vocab


def _state_dict(path: Path, use_ema: bool) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: dict[str, Any] = dict(load_file(str(path), device="cpu"))
        raw = {"ema_model_state_dict" if use_ema else "model_state_dict": raw}
    elif path.suffix in (".pt", ".pth", ".ckpt"):
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    else:
        raise StartupError(f"[f5] checkpoint: {path}: expected a .safetensors or .pt file")
    want = "ema_model_state_dict" if use_ema else "model_state_dict"
    if want not in raw:
        raise StartupError(
            f"[f5] checkpoint: {path} has no {want!r} (keys: {', '.join(sorted(raw)[:5])}); "
            "set [f5] use_ema to match the checkpoint"
        )
    state = raw[want]
    prefix = "ema_model." if use_ema else ""
    out = {}
    for k, v in state.items():
        name = k[len(prefix) :] if prefix and k.startswith(prefix) else k
        if name not in _DROPPED_KEYS:
            out[name] = v
    return out


def load_f5(
    s: F5Settings, device: torch.device, dtype: torch.dtype
) -> tuple[Any, dict[str, int], MelConfig, str]:
    """Build ``CFM(DiT)`` from the config and load the checkpoint strictly."""
    ckpt = s.checkpoint
    if ckpt is None or not ckpt.is_file():
        raise StartupError(f"[f5] checkpoint: {ckpt} does not exist; {FETCH_HINT}")
    vocab = read_vocab(s.vocab)
    name, arch, mel = read_arch(s)
    m = upstream.modules()
    try:
        dit = m.DiT(**arch, text_num_embeds=len(vocab), mel_dim=mel.n_mel_channels)
    except TypeError as e:
        raise StartupError(f"[f5] model/model_config: architecture {name!r} is not a DiT config: {e}") from e
    cfm = m.CFM(
        transformer=dit,
        mel_spec_kwargs=dict(
            n_fft=mel.n_fft,
            hop_length=mel.hop_length,
            win_length=mel.win_length,
            n_mel_channels=mel.n_mel_channels,
            target_sample_rate=mel.target_sample_rate,
            mel_spec_type=mel.mel_spec_type,
        ),
        odeint_kwargs=dict(method="euler"),
        vocab_char_map=vocab,
    )
    try:
        state = _state_dict(ckpt, s.use_ema)
    except StartupError:
        raise
    except Exception as e:
        raise StartupError(f"[f5] checkpoint: {ckpt} cannot be read ({e}); {FETCH_HINT}") from e
    own = cfm.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if missing or unexpected or bad_shape:
        hint = (
            "the vocab has a different size than the checkpoint's; set [f5] vocab"
            if any(k.startswith("transformer.text_embed.text_embed.") for k in bad_shape)
            else f"the checkpoint is not a {name} model; set [f5] model or model_config"
        )
        detail = "; ".join(
            x
            for x in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
                f"shape {', '.join(bad_shape[:3])}" if bad_shape else "",
            )
            if x
        )
        raise StartupError(f"[f5] checkpoint: {ckpt} does not match: {detail} ({hint}; or {FETCH_HINT})")
    cfm.load_state_dict(state, strict=True)
    cfm = cfm.to(device=device, dtype=dtype).eval()
    return cfm, vocab, mel, name


def load_vocos(path: Path | None, device: torch.device) -> Any:
    """A Vocos directory (``config.yaml`` + ``pytorch_model.bin``), kept in float32: its iSTFT head
    is the part of the chain most sensitive to half precision, and it costs ~2 ms per line."""
    if path is None:
        raise StartupError(f"[f5] vocoder: not set; {FETCH_HINT}")
    cfg, weights = path / "config.yaml", path / "pytorch_model.bin"
    for f in (cfg, weights):
        if not f.is_file():
            raise StartupError(f"[f5] vocoder: {f} does not exist; {FETCH_HINT}")
    try:
        doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        fe = doc["feature_extractor"]["class_path"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise StartupError(f"[f5] vocoder: {cfg} is not a Vocos config: {e}") from e
    if fe != MEL_FEATURES:
        # EncodecFeatures would download EnCodec weights at construction.
        raise StartupError(f"[f5] vocoder: {cfg}: feature extractor {fe!r} unsupported; need {MEL_FEATURES}")
    from vocos import Vocos

    try:
        voc = Vocos.from_hparams(str(cfg))
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        voc.load_state_dict(state)
    except Exception as e:
        raise StartupError(f"[f5] vocoder: {path} does not load ({e}); {FETCH_HINT}") from e
    return voc.to(device=device, dtype=torch.float32).eval()


def load(s: F5Settings, quiet: Any = None) -> Loaded:
    """Load everything; ``quiet`` is a text stream that upstream ``print`` output goes to."""
    device = resolve_device(s.device)
    dtype = resolve_dtype(s.dtype, device)
    with contextlib.redirect_stdout(quiet or io.StringIO()):
        cfm, vocab, mel, name = load_f5(s, device, dtype)
        vocoder = load_vocos(s.vocoder, device)
    n_params = sum(p.numel() for p in cfm.transformer.parameters())
    _log.info("f5 model loaded", arch=name, params=n_params, device=str(device), dtype=str(dtype))
    return Loaded(cfm=cfm, vocoder=vocoder, vocab=vocab, mel=mel, device=device, dtype=dtype, arch_name=name)
