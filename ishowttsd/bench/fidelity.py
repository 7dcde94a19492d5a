"""How far the fast path's mel is from a reference: batched against alone, and each variant
against the fp32 reference sampler on the same weights and noise."""

from __future__ import annotations

from typing import Any

import torch

from ishowttsd.bench import workload
from ishowttsd.bench.harness import Bench, rel
from ishowttsd.engine.f5 import sampler, upstream
from ishowttsd.engine.f5.fast import FastSampler


def measure_batch_equality(b: Bench, fs: FastSampler) -> dict[str, Any]:
    """Batched output vs each job alone (same sampler, same noise): max relative mel error."""
    texts = list(workload.MIXED_LINES[:4])
    jobs = [b.job(t, 50 + i) for i, t in enumerate(texts)]
    batched = [m.clone() for m in fs.sample(jobs, slots=len(jobs))]
    errs = []
    for i, (j, mb) in enumerate(zip(jobs, batched, strict=True)):
        alone = fs.sample([b.job(texts[i], 50 + i)])[0]
        errs.append(rel(mb[j.ref_frames :], alone[j.ref_frames :]))
    return {"max_rel_error": max(errs), "per_job": errs}


def measure_fidelity(b: Bench, samplers: dict[str, FastSampler]) -> dict[str, Any]:
    """Relative mel error (generated frames) of each path against the fp32 reference sampler on
    the same weights and noise; TF32 off for the reference."""
    j = b.job(workload.LINE, 777)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            c = sampler.prepare(b.m.dit, b.ref_mel[None], j.text, j.frames, b.cfg)
            ref = sampler.sample(c, j.noise[None])[0]
        out: dict[str, Any] = {}
        for name, fs in samplers.items():
            mel = fs.sample([b.job(workload.LINE, 777)])[0]
            out[name] = rel(mel[j.ref_frames :], ref[j.ref_frames :])
        # the stock sampler itself in fp32 with the same noise (CFM.sample draws it from the seed)
        u = upstream.modules().utils
        with torch.inference_mode():
            st, _ = b.m.cfm.sample(
                cond=b.audio, text=u.convert_char_to_pinyin([workload.stock_ref_text() + workload.LINE]),
                duration=workload.duration_frames(b.audio.shape[-1], workload.REF_TEXT, workload.LINE),
                steps=b.plan.nfe, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=777,
            )  # fmt: skip
        out["stock_fp32_CFM.sample"] = rel(st[0, j.ref_frames :], ref[j.ref_frames :])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    b.say(f"fidelity vs fp32 reference: { {k: f'{v:.2e}' for k, v in out.items()} }")
    return out
