"""The measurements: the stock path and the fast path on identical inputs, in one process.

Every figure is a median of timed runs after warm-ups; times around whole requests are host
wall-clock up to the moment the PCM is in host memory (the GPU synchronised), stage times inside
a request come from CUDA events. GPU-only parts (peak rates, compile, CUDA graphs, fp8) are
skipped on CPU, where the smoke mode checks that everything runs and agrees.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ishowttsd import log
from ishowttsd.bench import flops, models, stock, workload
from ishowttsd.engine.f5 import sampler, upstream
from ishowttsd.engine.f5.fast import FastJob, FastSampler
from ishowttsd.engine.f5.pipeline import FastPipeline
from ishowttsd.engine.f5.settings import InferenceConfig

_log = log.get(__name__)

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
    attn_mode: str = "sdpa"
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


def variant_options(name: str) -> dict[str, Any]:
    """``bf16``, ``fp16``, ``fp32``, ``fp8`` (bf16 + fp8 GEMMs, quantisation fused, fast
    accumulation), ``int8`` (fp16 + W8A8 GEMMs, SmoothQuant-calibrated), with optional suffixes:
    ``_noacc`` (fp8 without fast accumulation), ``_ff`` (fp8 for FF1 and FF2 too, not only QKV),
    ``_all`` (and for the attention output projection),
    ``_sdpa`` (mask through SDPA's attn_mask), ``_exact`` (no length buckets), ``_dyn`` (one
    dynamic-shape compile), ``_eager`` (no compile, no graph), ``_graph`` (graph, no compile),
    ``_cudnn`` (the positional conv through cuDNN instead of the fused Triton kernel), ``_nogelu``
    (FF GELU as its own kernel), ``_nodefer`` (each block adds its own FF residual), ``_maxat``
    (compile mode max-autotune-no-cudagraphs). Without suffixes, the daemon's ``[f5.fast]`` defaults."""
    base, *mods = name.split("_")
    quant = base if base in ("fp8", "int8") else "none"
    dtype = {"fp8": "bf16", "int8": "fp16"}.get(base, base)
    opts: dict[str, Any] = {"dtype": dtype, "quant": quant, "fast_accum": quant == "fp8"}
    for m in mods:
        if m == "noacc":
            opts["fast_accum"] = False
        elif m == "all":
            opts["fp8_layers"] = ("qkv", "out", "ff1", "ff2")
        elif m == "ff":
            opts["fp8_layers"] = ("qkv", "ff1", "ff2")
        elif m == "sdpa":
            opts["attn_mode"] = "sdpa"
        elif m == "exact":
            opts["bucket_frames"] = 0
        elif m == "dyn":
            opts["compile_dynamic"] = True
        elif m == "cudnn":
            opts["conv_impl"] = "cudnn"
        elif m == "nogelu":
            opts["gelu_epilogue"] = False
        elif m == "nodefer":
            opts["defer_residual"] = False
        elif m == "maxat":
            opts["compile_mode"] = "max-autotune-no-cudagraphs"
        elif m == "eager":
            opts.update(compile=False, graph=False)
        elif m == "graph":
            opts["compile"] = False
        else:
            raise ValueError(f"unknown variant suffix {m!r} in {name!r}")
    return opts


def _fast(b: Bench, dtype: str, *, quant: str = "none", fast_accum: bool = False, compile: bool = True,
          graph: bool = True, fp8_layers: Sequence[str] = ("qkv",),
          cfg: InferenceConfig | None = None, fused: Any = None, attn_mode: str | None = None,
          bucket_frames: int | None = None, compile_dynamic: bool | None = None,
          conv_impl: str | None = None, gelu_epilogue: bool = True, defer_residual: bool = True,
          compile_mode: str = "default") -> FastSampler:  # fmt: skip
    fs = FastSampler(
        b.m.dit, cfg or b.cfg, dtype=dtype, quant=quant, fast_accum=fast_accum, fp8_layers=fp8_layers,
        compile=compile and b.plan.compile, cuda_graph=graph,
        bucket_frames=b.plan.bucket_frames if bucket_frames is None else bucket_frames,
        attn_mode=attn_mode or b.plan.attn_mode, fused=fused,
        compile_dynamic=b.plan.compile_dynamic if compile_dynamic is None else compile_dynamic,
        conv_layout=b.plan.conv_layout, conv_impl=conv_impl or b.plan.conv_impl,
        gelu_epilogue=gelu_epilogue, compile_mode=compile_mode, defer_residual=defer_residual,
    )  # fmt: skip
    # int8: SmoothQuant calibration on three chat lines that are not the measured ones
    fs.calibrate([b.job(t, 90 + i) for i, t in enumerate(CALIBRATION_LINES)])
    return fs


CALIBRATION_LINES = (workload.MIXED_LINES[5], workload.MIXED_LINES[6], workload.MIXED_LINES[11])


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
            t0 = time.perf_counter()
            fs = _fast(b, **variant_options(v))
            fs_build = time.perf_counter() - t0
            samplers[v] = fs
            fast[v] = measure_variant(b, v, fs, full=True)
            fast[v]["build_s"] = fs_build

        guarded(b, f"fast_{v}", one)
    main_fs = samplers.get(main)
    if b.cuda and p.ablations:
        for name in ("bf16_eager", "bf16_graph"):

            def abl(name: str = name) -> None:
                fs = _fast(b, **variant_options(name))
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
    """The daemon's engine (``bench.daemon``) with ``[f5.fast] quant = quant``, full size."""
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
    e = daemon.load_engine(doc, {"quant": quant}, b.plan.nfe)
    res = {"load_s": time.perf_counter() - t0, **daemon.measure_engine(e, b.plan.daemon_reps)}
    res["options"] = e._fast.fs.options if e._fast is not None else None
    b.out["daemon"][quant] = res
    line, m16 = res["line"], res["mixed_16"]
    b.say(f"daemon[{quant}]: line {line['total_ms']:.2f} ms (first audio {line['ttfa_ms']:.2f} ms, "
          f"{line['chunks']} chunk(s)); long line first audio {res['long_line']['ttfa_ms']:.2f} ms of "
          f"{res['long_line']['total_ms']:.2f}; 16 mixed {m16['wall_ms']:.1f} ms = {m16['x_realtime']:.0f}x; "
          f"warm-up {res['warmup_s']:.1f} s")  # fmt: skip
    e.close()
    del e
    gc.collect()


def fast_sweep(b: Bench, main_fs: FastSampler) -> None:
    """NFE sweep of the fast path: same fused weights (and compiled block), new schedule + graphs."""
    p = b.plan
    sweep = {}
    for nfe in p.sweep:
        cfg = InferenceConfig(nfe_step=nfe, cfg_strength=2.0, sway_sampling_coef=-1.0, use_epss=True)
        dtype = str(main_fs.options["dtype"])
        fs = _fast(b, dtype, cfg=cfg, fused=main_fs.fused, bucket_frames=main_fs.bucket,
                   attn_mode=main_fs.fused.attn_mode)  # fmt: skip
        pipe = FastPipeline(fs, b.m.vocoder)

        def line(pipe: FastPipeline = pipe) -> Any:
            return _line_request(b, pipe, workload.LINE, 1)

        ms, _ = median_ms(line, 1 + p.warmups, p.sweep_reps, b.sync)
        sweep[str(nfe)] = ms
        b.say(f"fast nfe {nfe}: {ms:.2f} ms")
        del fs, pipe
    b.out["fast_nfe_sweep_ms"] = sweep


def warmup_probe(plan: Plan, say: Callable[[str], None]) -> dict[str, float]:
    """Time the daemon's warm-up (fast sampler + every shape compiled and captured) in this
    process: run in a fresh process after a full run, it measures the warm compile cache."""
    b = setup(plan, say)
    t0 = time.perf_counter()
    fs = _fast(b, **variant_options(plan.main))
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
