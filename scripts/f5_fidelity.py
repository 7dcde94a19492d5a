#!/usr/bin/env python3
"""Numerical fidelity of the engine's sampler against f5-tts's stock ``CFM.sample``.

Same random weights (F5TTS_v1_Base layout by default, with the zero-initialised AdaLN/output
layers re-randomised so the flow is not trivially zero), same reference, same text, same seed:
the engine path (``ishowttsd.engine.f5.sampler``: prepare -> make_noise -> Euler loop with batched
CFG) and the stock path (``CFM.sample`` with a raw-audio prompt, EPSS + sway, torchdiffeq Euler)
must give the same mel within ``--tol`` relative error (Frobenius norm of the difference over the
norm of the stock mel), in float32. Writes a JSON report to ``--out``; exit code 0 = pass.

  python scripts/f5_fidelity.py --out f5_fidelity.json                 # full size, CUDA if present
  python scripts/f5_fidelity.py --tiny --device cpu --out /tmp/f.json  # seconds on a CPU

Self-contained: needs only torch, f5-tts, vocos' dependencies and this repository (no weights,
no network).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from ishowttsd.engine.f5 import sampler, upstream
from ishowttsd.engine.f5.settings import InferenceConfig
from ishowttsd.engine.f5.tiny import MEL_SPEC, TINY_ARCH, build_cfm, reference_wave

REF_TEXT = "This is a tiny test voice, made for smoke tests. "
GEN_TEXT = "Thanks for the follow, and welcome to the stream everybody!"


def arch_of(name: str) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load((upstream.configs_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
    return dict(doc["model"]["arch"])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    p.add_argument("--arch", default="F5TTS_v1_Base", help="f5-tts config name (ignored with --tiny)")
    p.add_argument("--tiny", action="store_true", help="the `ishowtts-models tiny` architecture (CPU-fast)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--nfe", type=int, default=InferenceConfig().nfe_step)
    p.add_argument("--ref-seconds", type=float, default=5.0)
    p.add_argument(
        "--gen-frames", type=int, default=None, help="generated frames (default: from text length)"
    )
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each path (informational)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    )
    dtype = getattr(torch, a.dtype)
    if device.type == "cuda":
        # Exact fp32 comparisons: no TF32 in matmuls or convolutions.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    m = upstream.modules()
    vocab_path = upstream.f5_root() / "infer" / "examples" / "vocab.txt"
    vocab = {line[:-1]: i for i, line in enumerate(vocab_path.open(encoding="utf-8"))}
    arch_name = "F5TTS_tiny" if a.tiny else a.arch
    arch = TINY_ARCH if a.tiny else arch_of(a.arch)
    cfm = build_cfm(arch, len(vocab), seed=a.seed)
    cfm.vocab_char_map = vocab
    cfm = cfm.to(device=device, dtype=dtype).eval()
    dit = cfm.transformer
    params = sum(p.numel() for p in dit.parameters())

    wave = torch.from_numpy(reference_wave(a.ref_seconds, MEL_SPEC["target_sample_rate"], seed=a.seed))
    wave = wave.unsqueeze(0).to(device)
    chars = m.utils.convert_char_to_pinyin([REF_TEXT + GEN_TEXT])
    tokens = m.utils.list_str_to_idx(chars, vocab).to(device)
    with torch.inference_mode():
        ref_mel = cfm.mel_spec(wave.float()).permute(0, 2, 1).to(dtype)
    ref_frames = int(ref_mel.shape[1])
    gen = a.gen_frames or int(ref_frames / len(REF_TEXT.encode()) * len(GEN_TEXT.encode()))
    frames = sampler.total_frames(ref_frames, int(tokens.shape[1]), ref_frames + gen)
    cfg = InferenceConfig(nfe_step=a.nfe, seed=a.seed)

    def stock() -> torch.Tensor:
        with torch.inference_mode():
            out, _ = cfm.sample(
                cond=wave,
                text=chars,
                duration=frames,
                steps=cfg.nfe_step,
                cfg_strength=cfg.cfg_strength,
                sway_sampling_coef=cfg.sway_sampling_coef,
                seed=cfg.seed,
                use_epss=cfg.use_epss,
            )
        return out

    def engine() -> torch.Tensor:
        with torch.inference_mode():
            c = sampler.prepare(dit, ref_mel, tokens, frames, cfg)
            noise = sampler.make_noise(1, frames, MEL_SPEC["n_mel_channels"], cfg.seed, device, dtype)
            return sampler.sample(c, noise)

    times: dict[str, list[float]] = {"stock": [], "engine": []}
    outs: dict[str, torch.Tensor] = {}
    for _ in range(max(1, a.repeat)):
        for name, fn in (("stock", stock), ("engine", engine)):
            sync(device)
            t0 = time.perf_counter()
            outs[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    s, e = outs["stock"].float(), outs["engine"].float()
    assert s.shape == e.shape, (s.shape, e.shape)
    err_full = rel(e, s)
    err_gen = rel(e[:, ref_frames:], s[:, ref_frames:])
    # Sanity: the flow is not trivially zero (the output is not just the noise).
    noise = sampler.make_noise(1, frames, MEL_SPEC["n_mel_channels"], cfg.seed, device, dtype).float()
    moved = rel(e[:, ref_frames:], noise[:, ref_frames:])
    # The stock path's noise, drawn as CFM.sample draws it (global seed, then randn): if this ever
    # differs from make_noise, the report says so instead of leaving a mystery error.
    torch.manual_seed(cfg.seed)
    stock_noise = torch.randn(frames, MEL_SPEC["n_mel_channels"], device=device, dtype=dtype).float()
    noise_identical = bool(torch.equal(stock_noise, noise[0]))
    report = {
        "pass": bool(err_gen <= a.tol and err_full <= a.tol and moved > 0.1),
        "noise_identical": noise_identical,
        "tolerance": a.tol,
        "rel_err_generated": err_gen,
        "rel_err_full": err_full,
        "max_abs_diff": float((e - s).abs().max()),
        "output_vs_noise_rel": moved,
        "arch": arch_name,
        "params": params,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "dtype": a.dtype,
        "nfe_step": cfg.nfe_step,
        "cfg_strength": cfg.cfg_strength,
        "sway_sampling_coef": cfg.sway_sampling_coef,
        "seed": cfg.seed,
        "ref_frames": ref_frames,
        "total_frames": frames,
        "text_tokens": int(tokens.shape[1]),
        "median_s": {k: sorted(v)[len(v) // 2] for k, v in times.items()},
        "versions": {
            "torch": torch.__version__,
            "f5-tts": metadata.version("f5-tts"),
            "python": platform.python_version(),
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
