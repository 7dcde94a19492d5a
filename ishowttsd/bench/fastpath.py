"""The fast path's timings, one sampler at a time: one line as the engine serves it, the first
chunk (time to first audio), the line streamed in two chunks, k lines together (concurrency), and
the NFE sweep. Stage times inside a request come from CUDA events."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ishowttsd.bench import workload
from ishowttsd.bench.harness import Bench, median_ms
from ishowttsd.bench.variants import fast_sampler
from ishowttsd.engine.f5.fast import FastSampler
from ishowttsd.engine.f5.pipeline import FastPipeline
from ishowttsd.engine.f5.settings import InferenceConfig


def _line_request(b: Bench, pipe: FastPipeline, text: str, seed: int) -> tuple[Any, dict[str, float]]:
    """One request as the engine serves it: tokenise, noise, prepare, sample, vocode, copy out."""
    t0 = time.perf_counter()
    j = b.job(text, seed)
    t1 = time.perf_counter()
    pcm = pipe.run([j])[0]
    stages = dict(pcm.stages)
    stages["text_host"] = t1 - t0
    return pcm, stages


def measure_variant(b: Bench, name: str, fs: FastSampler, full: bool) -> dict[str, Any]:
    """Single line, first chunk (TTFA), streamed line, and (full) concurrency, for one sampler."""
    p = b.plan
    pipe = FastPipeline(fs, b.m.vocoder)
    res: dict[str, Any] = {"options": fs.options}
    if b.cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    # warm-up = every shape this variant will run, compiled and captured (what the daemon does before READY)
    shapes = [b.job(workload.LINE, 1), b.job(workload.FIRST_CHUNK, 1)]
    for j in shapes:
        pipe.run([j])
    b.sync()
    res["warmup_s"] = time.perf_counter() - t0
    line_job = b.job(workload.LINE, 1)
    audio_s = b.gen_seconds(line_job)
    stage_log: list[dict[str, float]] = []

    def line() -> None:
        _, st = _line_request(b, pipe, workload.LINE, 1)
        stage_log.append(st)

    ms, times = median_ms(line, p.warmups, p.reps, b.sync)
    res.update(line_ms=ms, line_times_ms=times, audio_s=audio_s, rtf=ms / 1e3 / audio_s)
    res["stages_ms"] = {
        k: 1e3 * statistics.median(s[k] for s in stage_log[p.warmups :]) for k in stage_log[0]
    }
    first: list[dict[str, float]] = []

    def chunk() -> None:
        _, st = _line_request(b, pipe, workload.FIRST_CHUNK, 1)
        first.append(st)

    res["ttfa_ms"], _ = median_ms(chunk, p.warmups, p.reps, b.sync)
    res["first_chunk_stages_ms"] = {
        k: 1e3 * statistics.median(s[k] for s in first[p.warmups :]) for k in first[0]
    }
    res["stream"] = measure_stream(b, pipe)
    if b.cuda:
        res["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    res["conv_contiguous"] = {f"{k[0]}x{k[1]}": v for k, v in fs.fused.conv_contiguous.items()}
    stages = {k: round(v, 2) for k, v in res["stages_ms"].items()}
    b.say(f"{name}: line {ms:.2f} ms (RTF {res['rtf']:.5f}) ttfa {res['ttfa_ms']:.2f} ms")
    b.say(f"  stages {stages} warm-up {res['warmup_s']:.1f} s")
    if full:
        res["concurrency"] = measure_concurrency(b, pipe)
    return res


def measure_stream(b: Bench, pipe: FastPipeline) -> dict[str, float]:
    """The line as the engine streams it: a short first chunk, then the rest, the second chunk's
    DiT queued before the first chunk's audio is waited for."""
    rest = workload.LINE[len(workload.FIRST_CHUNK) :].strip()
    p = b.plan
    marks: list[tuple[float, float]] = []

    def stream() -> None:
        t0 = time.perf_counter()
        j1, j2 = b.job(workload.FIRST_CHUNK, 1), b.job(rest, 2)
        f1 = pipe.enqueue([j1])
        f2 = pipe.enqueue([j2])
        f1()
        t1 = time.perf_counter()
        f2()
        marks.append(((t1 - t0) * 1e3, (time.perf_counter() - t0) * 1e3))

    median_ms(stream, p.warmups, p.reps, b.sync)
    m = marks[p.warmups :]
    return {
        "first_audio_ms": statistics.median(x[0] for x in m),
        "total_ms": statistics.median(x[1] for x in m),
    }


def measure_concurrency(b: Bench, pipe: FastPipeline) -> dict[str, Any]:
    """k chat lines arriving together, run as one padded batch: wall time until all PCM is on
    the host, and audio seconds per wall second. Plus 16 copies of the line (the issue's figure)."""
    p = b.plan
    out: dict[str, Any] = {}
    sets: list[tuple[str, list[str]]] = []
    for k in p.concurrency:
        sets.append((str(k), [workload.LINE] if k == 1 else list(workload.MIXED_LINES[:k])))
    if 16 in p.concurrency:
        sets.append(("16_same", [workload.LINE] * 16))
    for key, texts in sets:
        jobs_audio = sum(b.gen_seconds(b.job(t, 0)) for t in texts)

        def run(texts: list[str] = texts) -> None:
            jobs = [b.job(t, 10 + i) for i, t in enumerate(texts)]
            pipe.run(jobs, slots=len(jobs))

        ms, _ = median_ms(run, p.warmups, p.reps, b.sync)
        out[key] = {
            "lines": len(texts),
            "audio_s": jobs_audio,
            "wall_ms": ms,
            "x_realtime": jobs_audio / (ms / 1e3),
        }
        b.say(
            f"  concurrency {key}: {ms:.1f} ms for {jobs_audio:.1f} s audio = {jobs_audio / (ms / 1e3):.0f}x"
        )
        if len(set(texts)) > 1:
            # the same lines as length groups (what the daemon's batcher does)

            def grouped(texts: list[str] = texts) -> None:
                pipe.run_grouped([b.job(t, 10 + i) for i, t in enumerate(texts)])

            gms, _ = median_ms(grouped, p.warmups, p.reps, b.sync)
            out[key].update(grouped_wall_ms=gms, grouped_x_realtime=jobs_audio / (gms / 1e3))
            b.say(f"  concurrency {key} grouped by length: {gms:.1f} ms = {jobs_audio / (gms / 1e3):.0f}x")
    return out


def fast_sweep(b: Bench, main_fs: FastSampler) -> None:
    """NFE sweep of the fast path: same fused weights (and compiled block), new schedule + graphs."""
    p = b.plan
    sweep = {}
    for nfe in p.sweep:
        cfg = InferenceConfig(nfe_step=nfe, cfg_strength=2.0, sway_sampling_coef=-1.0, use_epss=True)
        dtype = str(main_fs.options["dtype"])
        fs = fast_sampler(b, dtype, cfg=cfg, fused=main_fs.fused, bucket_frames=main_fs.bucket,
                          attn_mode=main_fs.fused.attn_mode)  # fmt: skip
        pipe = FastPipeline(fs, b.m.vocoder)

        def line(pipe: FastPipeline = pipe) -> Any:
            return _line_request(b, pipe, workload.LINE, 1)

        ms, _ = median_ms(line, 1 + p.warmups, p.sweep_reps, b.sync)
        sweep[str(nfe)] = ms
        b.say(f"fast nfe {nfe}: {ms:.2f} ms")
        del fs, pipe
    b.out["fast_nfe_sweep_ms"] = sweep
