"""The bench's state and timing helpers: what to measure (``Plan``), the built models and
reference (``Bench``), the median timer, the relative error, and the section guard.

Times around whole requests are host wall-clock up to the moment the PCM is in host memory (the
GPU synchronised); each figure is a median of timed runs after warm-ups.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ishowttsd.bench import models, workload
from ishowttsd.engine.f5 import sampler, upstream
from ishowttsd.engine.f5.fast import FastJob
from ishowttsd.engine.f5.settings import InferenceConfig

NFE_SWEEP = (6, 7, 8, 12, 16, 32)


@dataclass
class Plan:
    """What to measure and how hard."""

    size: str = "full"
    device: str = "cuda"
    nfe: int = 8
    warmups: int = 2
    reps: int = 10
    sweep: Sequence[int] = NFE_SWEEP
    sweep_reps: int = 5
    variants: Sequence[str] = ("bf16", "fp16", "fp8")
    """Fast-path precisions to measure besides the eager/graph-only ablations of the main one."""
    main: str = "bf16"
    concurrency: Sequence[int] = (1, 4, 16)
    bucket_frames: int = 32
    attn_mode: str = "auto"
    conv_layout: str = "view"
    conv_impl: str = "auto"
    compile: bool = True
    compile_dynamic: bool | None = False
    """Static shapes: one compile per (batch, bucket) (``_dyn`` variants: one dynamic compile)."""
    ablations: bool = True
    seed: int = 1234
    budget_s: float = 0.0
    """Skip sections that would start after this many seconds (0: no limit): a lent GPU's
    command has a hard time limit, and a partial record beats none."""
    checkpoint: Any = None
    """Callable(out) run after each section (the CLI writes the partial record there)."""
    daemon: Sequence[str] = ()
    """``[f5.fast] quant`` settings to run the daemon's own engine with (full size, CUDA only)."""
    daemon_reps: int = 7


@dataclass
class Bench:
    plan: Plan
    device: torch.device
    m: models.BenchModels
    cfg: InferenceConfig
    audio: torch.Tensor  # (1, samples) on device
    ref_mel: torch.Tensor  # (R, 100) fp32 on device
    out: dict[str, Any] = field(default_factory=dict)
    say: Callable[[str], None] = print
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def tokens(self, text: str) -> torch.Tensor:
        u = upstream.modules().utils
        ids: torch.Tensor = u.list_str_to_idx(u.convert_char_to_pinyin([text]), self.m.vocab)
        return ids

    def job(self, gen_text: str, seed: int, cfg: InferenceConfig | None = None) -> FastJob:
        """A fast-path job for ``gen_text`` after the reference, sized by f5's own rules."""
        full = workload.stock_ref_text() + gen_text
        ids = self.tokens(full)
        dur = workload.duration_frames(self.audio.shape[-1], workload.REF_TEXT, gen_text)
        frames = sampler.total_frames(self.ref_mel.shape[0], ids.shape[1], dur)
        noise = sampler.make_noise(1, frames, 100, seed, self.device, torch.float32)[0]
        return FastJob(self.ref_mel, ids.to(self.device), frames, noise)

    def gen_seconds(self, job: FastJob) -> float:
        return (job.frames - job.ref_frames) * workload.HOP / workload.SAMPLE_RATE


def median_ms(
    fn: Callable[[], Any], warmups: int, reps: int, sync: Callable[[], None]
) -> tuple[float, list[float]]:
    for _ in range(warmups):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def setup(plan: Plan, say: Callable[[str], None]) -> Bench:
    device = torch.device(plan.device)
    t0 = time.perf_counter()
    m = models.build(plan.size, device, seed=plan.seed)
    say(
        f"built {m.arch_name} ({m.params / 1e6:.1f} M params) on {device} in {time.perf_counter() - t0:.1f} s"
    )
    cfg = InferenceConfig(nfe_step=plan.nfe, cfg_strength=2.0, sway_sampling_coef=-1.0, use_epss=True)
    audio = torch.from_numpy(workload.reference_audio())[None].to(device)
    with torch.no_grad():
        ref_mel = m.cfm.mel_spec(audio).permute(0, 2, 1)[0].float()
    return Bench(plan, device, m, cfg, audio, ref_mel, say=say)


def guarded(b: Bench, name: str, fn: Callable[[], Any]) -> Any:
    """Run one section; a failure is recorded under ``errors`` and the run goes on (a lent GPU's
    minutes are too scarce to lose the other sections to one bug)."""
    elapsed = time.perf_counter() - b.t_start
    if b.plan.budget_s and elapsed > b.plan.budget_s:
        b.out.setdefault("skipped", []).append(name)
        b.say(f"SECTION {name} skipped: {elapsed:.0f} s used of the {b.plan.budget_s:.0f} s budget")
        return None
    b.say(f"[{elapsed:6.1f} s] {name}")
    try:
        return fn()
    except Exception as e:
        import traceback

        b.out.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
        b.say(f"SECTION {name} FAILED: {type(e).__name__}: {e}\n{traceback.format_exc()}")
        if b.cuda:
            torch.cuda.synchronize()
        return None
    finally:
        if b.plan.checkpoint is not None:
            b.plan.checkpoint(b.out)
