"""The fast pipeline's CUDA-only parts on the GPU (``-m gpu``): captured Vocos graphs and pinned
host buffers, which the CPU suite never reaches. A batch whose jobs share a length replays one
Vocos graph once per job, and ``run_grouped`` queues every length group before it copies any
out: each job must still get its own audio, the same as alone (tiny model, bf16)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ishowttsd.bench import models, workload
from ishowttsd.engine.f5 import batch, sampler, upstream
from ishowttsd.engine.f5.fast import FastJob, FastSampler
from ishowttsd.engine.f5.pipeline import FastPipeline
from ishowttsd.engine.f5.settings import InferenceConfig

pytestmark = pytest.mark.gpu

TEXTS = ["gg", "hi chat", "what game is this?", "that boss fight was insane", "welcome in raiders"]
EXTRA = [60, 60, 400, 1200, 3000]  # generated frames: two jobs of one length, then far apart


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(b64), 1.0))


@pytest.fixture(scope="module")
def env() -> dict[str, Any]:
    dev = torch.device("cuda")
    m = models.build("tiny", dev, seed=3)
    audio = torch.from_numpy(workload.reference_audio(seconds=2.0))[None].to(dev)
    with torch.no_grad():
        ref_mel = m.cfm.mel_spec(audio).permute(0, 2, 1)[0]
    cfg = InferenceConfig(nfe_step=8, cfg_strength=2.0, sway_sampling_coef=-1.0, use_epss=True)
    fs = FastSampler(m.dit, cfg, dtype="bf16", compile=False, bucket_frames=32)
    return {"m": m, "ref_mel": ref_mel, "pipe": FastPipeline(fs, m.vocoder)}


def jobs(env: dict[str, Any]) -> list[FastJob]:
    u = upstream.modules().utils
    ref = env["ref_mel"]
    out = []
    for i, (text, extra) in enumerate(zip(TEXTS, EXTRA, strict=True)):
        ids = u.list_str_to_idx(u.convert_char_to_pinyin([workload.stock_ref_text() + text]), env["m"].vocab)
        n = ref.shape[0] + extra
        noise = sampler.make_noise(1, n, ref.shape[1], 11 + i, ref.device, torch.float32)[0]
        out.append(FastJob(ref, ids, n, noise))
    return out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pack", [False, True])
def test_every_batched_job_gets_its_own_audio(env: dict[str, Any], pack: bool) -> None:
    pipe: FastPipeline = env["pipe"]
    frames = [j.frames for j in jobs(env)]
    assert frames[0] == frames[1] and len(batch.group_by_length(frames, pipe.fs.bucket)) >= 3
    pipe.fs.pack, pipe.fs.pack_min_frames = pack, 0
    try:
        together = [p.samples for p in pipe.run_grouped(jobs(env))]
    finally:
        pipe.fs.pack = False
    alone = [pipe.run([j])[0].samples for j in jobs(env)]
    for i, text in enumerate(TEXTS):
        assert together[i].shape == alone[i].shape, text
        assert rel(together[i], alone[i]) < 2e-2, (text, rel(together[i], alone[i]))
    # the two jobs of one length are different lines: their audio must differ
    assert rel(together[0], together[1]) > 0.3


@pytest.fixture(scope="module")
def env16() -> dict[str, Any]:
    """The tiny model with 16 channels per conv group (dim 256): the fused Triton conv runs, so
    packed plans are captured (the tiny model's 4 per group take the host-bounded reference)."""
    dev = torch.device("cuda")
    m = models.build("tiny", dev, seed=3, dim=256, heads=4, dim_head=64)
    audio = torch.from_numpy(workload.reference_audio(seconds=2.0))[None].to(dev)
    with torch.no_grad():
        ref_mel = m.cfm.mel_spec(audio).permute(0, 2, 1)[0]
    cfg = InferenceConfig(nfe_step=8, cfg_strength=2.0, sway_sampling_coef=-1.0, use_epss=True)
    fs = FastSampler(
        m.dit, cfg, dtype="bf16", compile=False, bucket_frames=32, pack=True, pack_bucket_frames=1024
    )
    return {"m": m, "ref_mel": ref_mel, "pipe": FastPipeline(fs, m.vocoder)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_packed_graph_replays_other_lines_of_its_shape(env16: dict[str, Any]) -> None:
    """``pack_bucket_frames``: packed batches on the ladder replay one captured graph; a second
    batch of the same shape (the same lines in another order: every line's place, RoPE
    positions, conv bounds and FA2 sequences move) must not hear the first's layout."""
    pipe: FastPipeline = env16["pipe"]
    fs = pipe.fs
    order = [4, 2, 0, 3, 1]
    first = [p.samples for p in pipe.run_grouped(jobs(env16))]
    second = [p.samples for p in pipe.run_grouped([jobs(env16)[i] for i in order])]
    plans = list(fs.packed_plans.values())
    assert len(plans) == 1 and plans[0].graph is not None and fs.packed_runs == 2
    alone = [pipe.run([j])[0].samples for j in jobs(env16)]
    for i, text in enumerate(TEXTS):
        again = second[order.index(i)]
        assert first[i].shape == again.shape == alone[i].shape, text
        assert rel(first[i], alone[i]) < 2e-2, (text, rel(first[i], alone[i]))
        assert rel(again, alone[i]) < 2e-2, (text, rel(again, alone[i]))
