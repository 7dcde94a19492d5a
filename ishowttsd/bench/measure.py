"""The measurements: the stock path and the fast path on identical inputs, in one process.

Every figure is a median of timed runs after warm-ups; times around whole requests are host
wall-clock up to the moment the PCM is in host memory (the GPU synchronised), stage times inside
a request come from CUDA events. GPU-only parts (peak rates, compile, CUDA graphs, fp8) are
skipped on CPU, where the smoke mode checks that everything runs and agrees.

The sections live in ``harness`` (plan, state, timer, guard), ``variants`` (variant names to
fast samplers), ``fastpath`` (latency, TTFA, stream, concurrency, NFE sweep) and ``fidelity``
(mel errors); this module runs them in order and holds the stock path, the daemon's engine and
the warm-up probes.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ishowttsd import log
from ishowttsd.bench import flops, stock, workload
from ishowttsd.bench.fastpath import fast_sweep, measure_variant
from ishowttsd.bench.fidelity import measure_batch_equality, measure_fidelity
from ishowttsd.bench.harness import Bench, Plan, guarded, median_ms, setup
from ishowttsd.bench.variants import fast_sampler, variant_options
from ishowttsd.engine.f5 import upstream
from ishowttsd.engine.f5.fast import FastSampler
from ishowttsd.engine.f5.pipeline import FastPipeline

_log = log.get(__name__)

# ---------------------------------------------------------------------------------------------


def measure_peaks(b: Bench) -> None:
    if not b.cuda:
        b.out["peaks"] = {"bf16_tflops": 0.0, "fp8_tflops": 0.0}
        return
    b.out["peaks"] = {
        "bf16_tflops": round(flops.matmul_tflops(b.device, torch.bfloat16), 1),
        "fp16_tflops": round(flops.matmul_tflops(b.device, torch.float16), 1),
        "fp8_tflops": round(flops.fp8_tflops(b.device), 1),
    }
    b.say(f"peaks {b.out['peaks']}")


def measure_flops(b: Bench) -> None:
    """FLOPs per step for the line, the first chunk and each mixed line (exact shapes)."""
    per_job = {}
    for name, text in (("line", workload.LINE), ("first_chunk", workload.FIRST_CHUNK)):
        j = b.job(text, 0)
        per_job[name] = {
            "frames": j.frames,
            "step_flops": flops.step_flops(b.m.dit, b.cfg, b.ref_mel, j.text, j.frames),
        }
    mixed = []
    for text in workload.MIXED_LINES:
        j = b.job(text, 0)
        mixed.append(
            {"frames": j.frames, "step_flops": flops.step_flops(b.m.dit, b.cfg, b.ref_mel, j.text, j.frames)}
        )
    b.out["flops"] = {"per_job": per_job, "mixed": mixed}


def stock_model(b: Bench) -> Any:
    """The stock path's model: fp16 on CUDA (as f5-tts loads it there), fp32 on CPU."""
    b.m.dit.__dict__.pop("_cache_local", None)  # f5's lazy thread-local text cache cannot be copied
    cfm = copy.deepcopy(b.m.cfm)
    if b.cuda:
        cfm = cfm.half()
    return cfm.eval()


def measure_stock(b: Bench) -> None:
    cfm = stock_model(b)
    run, what = stock.make_stock(cfm, b.m.vocoder, b.device)
    p = b.plan
    line_s = workload.duration_frames(b.audio.shape[-1], workload.REF_TEXT, workload.LINE)
    gen_s = (line_s - b.audio.shape[-1] // workload.HOP) * workload.HOP / workload.SAMPLE_RATE
    res: dict[str, Any] = {"impl": what, "dtype": "fp16" if b.cuda else "fp32", "audio_s": gen_s}
    ms, times = median_ms(
        lambda: run(b.audio, workload.REF_TEXT, workload.LINE, p.nfe), p.warmups, p.reps, b.sync
    )
    res.update(ms=ms, times_ms=times, rtf=ms / 1e3 / gen_s)
    b.say(f"stock {what}: {ms:.1f} ms  RTF {ms / 1e3 / gen_s:.4f}")
    # The model's sampling loop alone and the vocoder alone (CUDA events / wall on CPU).
    u = upstream.modules().utils
    text_list = u.convert_char_to_pinyin([workload.stock_ref_text() + workload.LINE])

    def sample_only() -> Any:
        with torch.inference_mode():
            return cfm.sample(cond=b.audio, text=text_list, duration=line_s, steps=p.nfe, cfg_strength=2.0,
                              sway_sampling_coef=-1.0)  # fmt: skip

    res["cfm_sample_ms"], _ = median_ms(sample_only, 1, max(3, p.reps // 2), b.sync)
    mel = torch.randn(1, 100, line_s - b.audio.shape[-1] // workload.HOP, device=b.device)

    def voc() -> Any:
        with torch.inference_mode():
            return b.m.vocoder.decode(mel)

    res["vocoder_ms"], _ = median_ms(voc, 2, p.reps, b.sync)
    # NFE sweep of the stock path
    sweep = {}
    for nfe in p.sweep:

        def one(n: int = nfe) -> Any:
            return run(b.audio, workload.REF_TEXT, workload.LINE, n)

        ms_n, _ = median_ms(one, 1, p.sweep_reps, b.sync)
        sweep[str(nfe)] = ms_n
        b.say(f"stock nfe {nfe}: {ms_n:.1f} ms")
    res["nfe_sweep_ms"] = sweep
    b.out["stock"] = res


FLOOR_SUFFIX = "_noattn"
"""A variant named with this suffix runs with attention taken out of every block (``v`` passes
through): not speech, but the time of everything else in the line, which no attention kernel,
however fast, can go below (docs/perf-log.md, session 8)."""


@contextlib.contextmanager
def without_attention() -> Iterator[None]:
    """The fused block's attention (padded and packed) replaced by its value input while the
    ``with`` lasts; torch.compile's guards on the block's globals retrace it either way."""
    from ishowttsd.engine.f5 import fused

    def passthrough(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *_a: Any, **_k: Any) -> torch.Tensor:
        return v

    saved = {name: getattr(fused, name) for name in ("attention", "packed_attention")}
    for name in saved:
        setattr(fused, name, passthrough)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(fused, name, fn)


def run_all(b: Bench) -> dict[str, Any]:
    """Everything, in an order that puts the cheap, most important numbers first."""
    p = b.plan
    guarded(b, "peaks", lambda: measure_peaks(b))
    guarded(b, "flops", lambda: measure_flops(b))
    guarded(b, "stock", lambda: measure_stock(b))
    fast: dict[str, Any] = {}
    b.out["fast"] = fast
    samplers: dict[str, FastSampler] = {}
    variants = list(p.variants) if b.cuda else ["fp32"]
    main = p.main if b.cuda else "fp32"
    for v in variants:

        def one(v: str = v) -> None:
            floor = v.endswith(FLOOR_SUFFIX)
            with without_attention() if floor else contextlib.nullcontext():
                t0 = time.perf_counter()
                fs = fast_sampler(b, **variant_options(v.removesuffix(FLOOR_SUFFIX)))
                fs_build = time.perf_counter() - t0
                fast[v] = measure_variant(b, v, fs, full=not floor)
            fast[v]["build_s"] = fs_build
            if not floor:  # its audio is noise: it takes no part in fidelity or the sweeps
                samplers[v] = fs

        guarded(b, f"fast_{v}", one)
    main_fs = samplers.get(main)
    if b.cuda and p.ablations:
        for name in ("bf16_eager", "bf16_graph"):

            def abl(name: str = name) -> None:
                fs = fast_sampler(b, **variant_options(name))
                samplers[name] = fs
                fast[name] = measure_variant(b, name, fs, full=False)

            guarded(b, f"fast_{name}", abl)
    if main_fs is None:
        return b.out
    b.out["batch_equality"] = guarded(b, "batch_equality", lambda: measure_batch_equality(b, main_fs))
    b.out["fidelity"] = guarded(b, "fidelity", lambda: measure_fidelity(b, samplers))
    guarded(b, "fast_nfe_sweep", lambda: fast_sweep(b, main_fs))
    if b.cuda and p.daemon:
        samplers.clear()
        b.out["daemon"] = {}
        for q in p.daemon:

            def one_daemon(q: str = q) -> None:
                measure_daemon(b, q)

            guarded(b, f"daemon_{q}", one_daemon)
    return b.out


def measure_daemon(b: Bench, quant: str) -> None:
    """The daemon's engine (``bench.daemon``) with ``[f5.fast] quant = quant``, full size;
    ``quant+mode`` also sets ``attn_mode = mode``, ``quant+pack`` sets ``pack = true``,
    ``quant+packexact`` that with ``pack_bucket_frames = 0`` (the result keeps the whole name)."""
    import gc
    import tempfile
    from pathlib import Path

    import torch._dynamo

    from ishowttsd.bench import daemon

    gc.collect()
    torch.cuda.empty_cache()
    torch._dynamo.reset()  # the engine compiles as the daemon does, not on the bench's static graphs
    doc = daemon.write_full(Path(tempfile.gettempdir()) / "ishowtts-bench-f5full")
    t0 = time.perf_counter()
    q, *extra = quant.split("+")
    fast: dict[str, Any] = {"quant": q}
    # "pack" sets [f5.fast] pack, "packexact" also pack_bucket_frames = 0 (no graphs: session
    # 7's packed path), "packall" pack_min_frames = 0; anything else is an attn_mode
    exact = {"pack": True, "pack_bucket_frames": 0}
    every = {"pack": True, "pack_min_frames": 0}  # "packall": every batch of two or more packed
    packs: dict[str, dict[str, Any]] = {"pack": {"pack": True}, "packexact": exact, "packall": every}
    for x in extra:
        fast.update(packs.get(x, {"attn_mode": x}))
    e = daemon.load_engine(doc, fast, b.plan.nfe)
    res = {"load_s": time.perf_counter() - t0, **daemon.measure_engine(e, b.plan.daemon_reps)}
    res["options"] = e._fast.fs.options if e._fast is not None else None
    b.out["daemon"][quant] = res
    line, m16 = res["line"], res["mixed_16"]
    b.say(f"daemon[{quant}]: line queued {line['queued_ms']:.2f} ms; alone first audio "
          f"{line['ttfa_ms']:.2f} ms of {line['total_ms']:.2f} ({line['chunks']} chunk(s)); "
          f"long line first audio {res['long_line']['ttfa_ms']:.2f} ms of "
          f"{res['long_line']['total_ms']:.2f}; 16 mixed {m16['wall_ms']:.1f} ms = {m16['x_realtime']:.0f}x; "
          f"warm-up {res['warmup_s']:.1f} s")  # fmt: skip
    e.close()
    del e
    gc.collect()


def warmup_probe(plan: Plan, say: Callable[[str], None]) -> dict[str, float]:
    """Time the daemon's warm-up (fast sampler + every shape compiled and captured) in this
    process: run in a fresh process after a full run, it measures the warm compile cache."""
    b = setup(plan, say)
    t0 = time.perf_counter()
    fs = fast_sampler(b, **variant_options(plan.main))
    pipe = FastPipeline(fs, b.m.vocoder)
    for text in (workload.LINE, workload.FIRST_CHUNK):
        pipe.run([b.job(text, 1)])
    b.sync()
    return {"warmup_s": time.perf_counter() - t0}


def measure_warm_cache(b: Bench, argv: list[str], env: dict[str, str]) -> None:
    """The daemon's start and restart: two fresh processes share a new, empty compile cache
    (Inductor and Triton); the first warms up cold, the second finds the first's cache."""
    import json
    import subprocess
    import sys
    import tempfile

    t0 = time.perf_counter()
    cache = tempfile.mkdtemp(prefix="ishowtts-bench-warmcache-")
    env = {**env, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": f"{cache}/triton"}

    def probe() -> float:
        proc = subprocess.run([sys.executable, "-m", "ishowttsd.bench.cli", "--warmup-probe", *argv],
                              capture_output=True, text=True, timeout=400, env=env, check=False)  # fmt: skip
        line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("{")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"warm-up probe failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
        return float(json.loads(line)["warmup_s"])

    cold, warm = probe(), probe()
    b.out["warmup"] = {"cold_s": cold, "warm_cache_s": warm, "probe_wall_s": time.perf_counter() - t0}
    b.say(f"warm-up: cold {cold:.1f} s, warm compile cache {warm:.1f} s")
