"""The fast path, the batched path and the stock f5-tts path produce the same audio (CPU, tiny
model, fp32: the fast path runs its fused step eagerly there; CUDA graphs, compile and bf16 are
exercised by ``ishowtts-bench`` on a GPU)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ishowttsd.bench import models, workload
from ishowttsd.engine.base import float_to_int16
from ishowttsd.engine.f5 import sampler, upstream
from ishowttsd.engine.f5.fast import FastJob, FastSampler, pack_shape
from ishowttsd.engine.f5.linears import Linear, quantize_fp8
from ishowttsd.engine.f5.pipeline import FastPipeline, Vocoder
from ishowttsd.engine.f5.settings import InferenceConfig

TOL = 1e-5  # fp32, same weights and noise: only summation order differs


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def env() -> dict[str, Any]:
    torch.manual_seed(0)
    m = models.build("tiny", torch.device("cpu"), seed=3)
    audio = torch.from_numpy(workload.reference_audio(seconds=2.0))[None]
    with torch.no_grad():
        ref_mel = m.cfm.mel_spec(audio).permute(0, 2, 1)[0]
    cfg = InferenceConfig(nfe_step=8, cfg_strength=2.0, sway_sampling_coef=-1.0, use_epss=True)
    return {"m": m, "audio": audio, "ref_mel": ref_mel, "cfg": cfg}


def make_job(env: dict[str, Any], text: str, seed: int) -> FastJob:
    u = upstream.modules().utils
    ids = u.list_str_to_idx(u.convert_char_to_pinyin([workload.stock_ref_text() + text]), env["m"].vocab)
    dur = workload.duration_frames(env["audio"].shape[-1], workload.REF_TEXT, text)
    frames = sampler.total_frames(env["ref_mel"].shape[0], ids.shape[1], dur)
    noise = sampler.make_noise(1, frames, 100, seed, torch.device("cpu"), torch.float32)[0]
    return FastJob(env["ref_mel"], ids, frames, noise)


def stock_mel(env: dict[str, Any], text: str, seed: int) -> torch.Tensor:
    """f5-tts's own CFM.sample (raw-audio prompt, its own duration floor and seeded noise)."""
    u = upstream.modules().utils
    with torch.inference_mode():
        out, _ = env["m"].cfm.sample(
            cond=env["audio"],
            text=u.convert_char_to_pinyin([workload.stock_ref_text() + text]),
            duration=workload.duration_frames(env["audio"].shape[-1], workload.REF_TEXT, text),
            steps=8,
            cfg_strength=2.0,
            sway_sampling_coef=-1.0,
            seed=seed,
        )
    return out[0]


@pytest.mark.parametrize(
    "bucket,attn",
    [(0, "sdpa"), (32, "sdpa"), (32, "augment"), (48, "augment"), (32, "flash_seqlen"), (32, "auto")],
)
def test_fast_path_matches_stock_sampler(env: dict[str, Any], bucket: int, attn: str) -> None:
    ref = stock_mel(env, workload.FIRST_CHUNK, 11)
    fs = FastSampler(env["m"].dit, env["cfg"], bucket_frames=bucket, attn_mode=attn)
    job = make_job(env, workload.FIRST_CHUNK, 11)
    assert (fs.shape_for([job.frames])[2]) == (bucket != 0 and job.frames % bucket != 0)
    out = fs.sample([job])[0]
    assert out.shape == ref.shape
    assert rel(out, ref) < TOL
    # the reference frames are the prompt's mel, pasted back as CFM.sample does
    assert torch.equal(out[: job.ref_frames], env["ref_mel"].float())


def test_batched_path_matches_each_job_alone(env: dict[str, Any]) -> None:
    texts = list(workload.MIXED_LINES[:5])
    fs = FastSampler(env["m"].dit, env["cfg"], bucket_frames=32)
    jobs = [make_job(env, t, 100 + i) for i, t in enumerate(texts)]
    batched = [m.clone() for m in fs.sample(jobs, slots=8)]  # 3 idle slots too
    assert len({j.frames for j in jobs}) > 2  # really mixed lengths
    for i, t in enumerate(texts):
        alone = stock_mel(env, t, 100 + i)
        assert batched[i].shape == alone.shape
        assert rel(batched[i], alone) < TOL, t


def test_packed_batch_matches_each_job_alone(env: dict[str, Any]) -> None:
    """``pack``: the jobs one after another in one row per CFG half; each must come out as the
    stock sampler makes it alone (attention, the positional conv and RoPE stay per job)."""
    texts = list(workload.MIXED_LINES[:5])
    fs = FastSampler(env["m"].dit, env["cfg"], bucket_frames=0, pack=True)
    jobs = [make_job(env, t, 100 + i) for i, t in enumerate(texts)]
    packed = [m.clone() for m in fs.sample(jobs)]
    assert len({j.frames for j in jobs}) > 2 and not fs.plans  # mixed lengths, no padded plan used
    for i, t in enumerate(texts):
        alone = stock_mel(env, t, 100 + i)
        assert packed[i].shape == alone.shape
        assert rel(packed[i], alone) < TOL, t
        assert torch.equal(packed[i][: jobs[i].ref_frames], env["ref_mel"].float())


def test_packed_batches_on_the_ladder_share_a_plan_and_match_each_job_alone(env: dict[str, Any]) -> None:
    """``pack_bucket_frames``: a packed batch is padded to the ladder with dummy lines (and idle
    FA2 slots), so two batches of different lines run in one plan, refilled; each job must still
    come out as the stock sampler makes it alone, whatever the plan held before."""
    fs = FastSampler(env["m"].dit, env["cfg"], bucket_frames=0, pack=True, pack_bucket_frames=256)
    mixed = workload.MIXED_LINES
    rounds = [list(mixed[:3]), [mixed[3], mixed[13], mixed[9]]]  # 709 and 679 frames: one shape
    for r, texts in enumerate(rounds):
        jobs = [make_job(env, t, 200 + 10 * r + i) for i, t in enumerate(texts)]
        frames, _max_len, segments, _slots = pack_shape([j.frames for j in jobs], 256)
        assert frames > sum(j.frames for j in jobs) and len(segments) > len(jobs)  # dummies pad it
        packed = [m.clone() for m in fs.sample(jobs)]
        for i, t in enumerate(texts):
            alone = stock_mel(env, t, 200 + 10 * r + i)
            assert packed[i].shape == alone.shape
            assert rel(packed[i], alone) < TOL, (r, t)
    assert len(fs.packed_plans) == 1 and fs.packed_runs == 2 and not fs.plans


def test_pack_shape_pads_to_the_ladder() -> None:
    # exact: the lines as they are
    assert pack_shape([300, 500], 0) == (800, 500, [300, 500], 2)
    # 1,700 frames pad to 2,048 with dummy lines no longer than the longest line's bucket (512)
    frames, max_len, segments, slots = pack_shape([400, 500, 800], 1024)
    assert (frames, max_len) == (2048, 1024) and segments == [400, 500, 800, 348] and slots == 4
    frames, max_len, segments, slots = pack_shape([200, 250, 100, 120, 90], 1024)
    assert (frames, max_len) == (1024, 256) and sum(segments) == 1024
    assert max(segments[5:]) <= 256 and slots == 8 and len(segments) == 7
    assert pack_shape([1024], 1024) == (1024, 1024, [1024], 4)


def test_pipeline_audio_matches_stock_audio(env: dict[str, Any]) -> None:
    """PCM out of the fast pipeline (one padded batch, length groups, packed) equals the stock
    path's waveform: Vocos on the generated frames, as ``infer_batch_process`` does it."""
    texts = [workload.FIRST_CHUNK, "gg", "what game is this?"]
    fs = FastSampler(env["m"].dit, env["cfg"], bucket_frames=32)
    pipe = FastPipeline(fs, env["m"].vocoder)
    one_batch = pipe.run([make_job(env, t, 7 + i) for i, t in enumerate(texts)], slots=4)
    grouped = pipe.run_grouped([make_job(env, t, 7 + i) for i, t in enumerate(texts)])
    pipe.fs.pack = True  # [f5.fast] pack: the same jobs as one packed batch
    packed = pipe.run_grouped([make_job(env, t, 7 + i) for i, t in enumerate(texts)])
    for i, t in enumerate(texts):
        mel = stock_mel(env, t, 7 + i)
        r = env["audio"].shape[-1] // workload.HOP
        with torch.inference_mode():
            wave = env["m"].vocoder.decode(mel[r:].T[None].float())[0].numpy()
        expect = float_to_int16(wave)
        job_ref = make_job(env, t, 0).ref_frames
        if job_ref != r:  # CFM's mel of the prompt has one frame more than samples // hop
            with torch.inference_mode():
                wave = env["m"].vocoder.decode(mel[job_ref:].T[None].float())[0].numpy()
            expect = float_to_int16(wave)
        for got in (one_batch[i].samples, grouped[i].samples, packed[i].samples):
            assert got.dtype == np.int16 and got.shape == expect.shape
            assert int(np.abs(got.astype(np.int32) - expect.astype(np.int32)).max()) <= 2, t


def test_streamed_chunks_equal_separate_runs(env: dict[str, Any]) -> None:
    fs = FastSampler(env["m"].dit, env["cfg"], bucket_frames=32)
    pipe = FastPipeline(fs, env["m"].vocoder)
    a, b = make_job(env, "Hello chat,", 1), make_job(env, "thanks for the follow", 2)
    wait_a = pipe.enqueue([a])
    wait_b = pipe.enqueue([b])  # queued before the first chunk's audio is taken
    got_a, got_b = wait_a()[0].samples, wait_b()[0].samples
    sep_a = pipe.run([make_job(env, "Hello chat,", 1)])[0].samples
    sep_b = pipe.run([make_job(env, "thanks for the follow", 2)])[0].samples
    assert np.array_equal(got_a, sep_a) and np.array_equal(got_b, sep_b)


def test_conditioning_is_the_reference_samplers(env: dict[str, Any]) -> None:
    fs = FastSampler(env["m"].dit, env["cfg"])
    job = make_job(env, workload.LINE, 3)
    c = sampler.prepare(env["m"].dit, env["ref_mel"][None], job.text, job.frames, env["cfg"])
    want = fs.fused.project_conditioning(c.cond_in, c.text_in)
    padded = torch.full((1, job.frames), -1, dtype=torch.long)
    padded[:, : job.text.shape[1]] = job.text
    got = fs._conditioning(padded, env["ref_mel"], job.frames)  # -1 padded text, as the graph has it
    assert rel(got, want) < TOL
    assert torch.equal(fs.schedule, sampler.timesteps(env["cfg"], "cpu", torch.float32))


def test_vocoder_without_sync_is_vocos(env: dict[str, Any]) -> None:
    mel = torch.randn(1, 100, 57)
    voc = Vocoder(env["m"].vocoder)
    assert voc.native  # the bench's tiny Vocos is "same"-padded like the real one: our iSTFT runs
    with torch.inference_mode():
        want = env["m"].vocoder.decode(mel)
        got = voc.decode(mel)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)


def test_fp8_weight_quantisation_keeps_rows() -> None:
    torch.manual_seed(0)
    w = torch.randn(48, 32) * torch.logspace(-2, 1, 48)[:, None]  # rows of very different scale
    q = quantize_fp8(Linear(w, torch.randn(48)))
    assert q.wq_t is not None and q.w_scale is not None
    assert q.wq_t.dtype == torch.float8_e4m3fn and q.wq_t.shape == (32, 48)
    assert q.w_scale.shape == (1, 48)
    deq = q.wq_t.t().float() * q.w_scale.t()
    # e4m3 keeps 3 mantissa bits: each row within ~6% of itself, whatever its scale
    row_err = (deq - w).norm(dim=1) / w.norm(dim=1)
    assert float(row_err.max()) < 0.07


def test_engine_entry_point_float_output(env: dict[str, Any]) -> None:
    """What the F5 engine calls: ``build_pipeline`` from ``[f5.fast]`` settings, float samples
    (for its cross-fader) equal to Vocos on the stock mel."""
    from ishowttsd.engine.f5.batch import FastSettings
    from ishowttsd.engine.f5.pipeline import build_pipeline

    m, cfg = env["m"], env["cfg"]
    assert build_pipeline(m.dit, m.vocoder, cfg, FastSettings()) is None  # CPU: the engine's own path
    assert build_pipeline(m.dit, m.vocoder, cfg, FastSettings(enabled=False), allow_cpu=True) is None
    pipe = build_pipeline(m.dit, m.vocoder, cfg, FastSettings(), int16=False, allow_cpu=True)
    assert pipe is not None
    job = make_job(env, "welcome in raiders", 5)
    got = pipe.run([job])[0].samples
    mel = stock_mel(env, "welcome in raiders", 5)
    with torch.inference_mode():
        want = m.vocoder.decode(mel[job.ref_frames :].T[None].float())[0].numpy()
    assert got.dtype == np.float32 and got.shape == want.shape
    assert float(np.abs(got - want).max()) < 1e-4


def test_one_compiled_block_graph_serves_every_block(env: dict[str, Any]) -> None:
    """Warm-up cost is one torch.compile per shape: every block, the first included, must hit
    the same graph (a None first residual compiled a second one: warm-up 13.1 s vs 8.7 s on an
    H200). Dynamo's counting backend traces exactly what torch.compile would."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    from ishowttsd.engine.f5 import fused

    fs = FastSampler(env["m"].dit, env["cfg"], bucket_frames=0)
    counter = CompileCounter()
    torch._dynamo.reset()
    fs.fused._block_fn = torch.compile(fused._block, backend=counter, dynamic=False)
    job = make_job(env, workload.FIRST_CHUNK, 11)
    out = fs.sample([job])[0]
    assert counter.frame_count == 1, f"{counter.frame_count} graphs for one shape"
    assert rel(out, stock_mel(env, workload.FIRST_CHUNK, 11)) < TOL
    torch._dynamo.reset()


INT8_BOUND = 3e-2
"""int8 W8A8 against the fp32 fast path (relative mel error, generated frames): the issue's bound
for the full-size model. The tiny model measured ~5e-4 here; the full-size bench record has the
full-size figure (``int8_rel_error``)."""


def calibrated(env: dict[str, Any], quant: str, **options: Any) -> tuple[FastSampler, FastSampler]:
    """The fp32 fast sampler and one in ``quant``, which refuses to sample until it is calibrated
    (on three chat lines that are not the measured ones), then is."""
    fp = FastSampler(env["m"].dit, env["cfg"], bucket_frames=0)
    q = FastSampler(env["m"].dit, env["cfg"], bucket_frames=0, quant=quant, **options)
    with pytest.raises(RuntimeError, match="calibrate"):
        q.sample([make_job(env, workload.LINE, 11)])
    q.calibrate([make_job(env, t, 5) for t in workload.MIXED_LINES[5:8]])
    return fp, q


def assert_speaks_like_fp32(env: dict[str, Any], fp: FastSampler, q: FastSampler, bound: float) -> None:
    """Generated frames close to the fp32 path's, and measurably not equal (the quantisation runs)."""
    for text in (workload.LINE, workload.MIXED_LINES[10]):
        job = make_job(env, text, 11)
        want = fp.sample([job])[0][job.ref_frames :]
        got = q.sample([make_job(env, text, 11)])[0][job.ref_frames :]
        err = rel(got, want)
        assert 1e-6 < err < bound, (text, err)


def test_int8_path_speaks_like_the_fp32_path(env: dict[str, Any]) -> None:
    """W8A8 (int8 weights per output channel, activations per token, SmoothQuant-calibrated on
    three chat lines that are not the measured ones) through the same fused sampler on the CPU
    (``torch._int_mm`` there): close to fp32, and measurably not fp32 (the quantisation runs)."""
    from ishowttsd.engine.f5 import quant

    fp, q8 = calibrated(env, "int8")
    blk = q8.fused.blocks[0]
    assert blk.ff2.wq_t is not None and blk.ff2.wq_t.dtype == torch.int8
    assert blk.ff2.inv_smooth is not None and blk.ff2.inv_smooth.shape == (blk.ff2.weight.shape[1],)
    assert_speaks_like_fp32(env, fp, q8, INT8_BOUND)
    # the GEMM itself: int32 products exact, the epilogue as a float linear layer would do it
    x, w, b = torch.randn(40, 64), torch.randn(24, 64) / 8, torch.randn(24)
    wq, ws = quant.quantize_weight(w, "int8")
    xq, xs = quant.quantize_rows(x, "int8")
    y = quant.int8_mm(xq, wq, xs, ws, b, True, torch.float32)
    want_y = F.gelu(x @ w.T + b, approximate="tanh")
    assert rel(y, want_y) < 2e-2


FP8_BOUND = 2e-2
"""The issue's fidelity bound for fp8 (relative mel error against the fp32 path)."""


def test_fp8_static_path_speaks_like_the_fp32_path(env: dict[str, Any]) -> None:
    """fp8 with calibrated per-tensor activation scales (QKV, FF1, FF2) through the same fused
    sampler; on the CPU the GEMM is the fp8 values multiplied in fp32 (on CUDA, cuBLASLt's fp8
    GEMM): close to fp32, measurably not fp32, and an activation louder than calibration clips
    instead of overflowing."""
    from ishowttsd.engine.f5 import quant

    fp, q8 = calibrated(env, "fp8_static")
    blk = q8.fused.blocks[0]
    for lin in (blk.qkv, blk.ff1, blk.ff2):
        assert lin.wq_t is not None and lin.wq_t.dtype == torch.float8_e4m3fn
        assert lin.x_scale is not None and lin.x_scale.dim() == 0 and float(lin.x_scale) > 0
    assert blk.out.wq_t is None  # the attention output stays in the model dtype
    assert_speaks_like_fp32(env, fp, q8, FP8_BOUND)
    # batched with a shorter line (padded, masked keys): the same mel as alone; v's scale and
    # bias, folded into the output projection, hold because attention rows still sum to 1
    a, short = make_job(env, workload.LINE, 11), make_job(env, workload.MIXED_LINES[3], 12)
    alone = q8.sample([make_job(env, workload.LINE, 11)])[0]
    together = q8.sample([a, short])[0]
    assert rel(together, alone) < 1e-4
    # the GEMM: per-tensor input scale, per-channel weight scale applied after it
    x, w = torch.randn(40, 64), torch.randn(24, 64) / 8
    wq, ws = quant.quantize_weight(w, "fp8")
    xs = quant.static_scale(x.abs().amax(dim=0))
    xq = (x / xs).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
    y = quant.fp8_mm(xq, wq, xs, torch.ones(()), False, torch.float32) * ws
    assert rel(y, x @ w.T) < 5e-2
    loud = (x * 10 / xs).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn).float()
    assert torch.isfinite(loud).all() and loud.abs().max() == quant.FP8_MAX


def test_fp8_static_epilogue_path_speaks_like_the_fp32_path(env: dict[str, Any]) -> None:
    """``fp8_gemm = "triton"``: every fp8 layer's GEMM finishes its own output (scales, bias,
    GELU) and FF1 writes FF2's fp8 input. On the CPU the op runs the kernel's arithmetic in fp32
    torch (the Triton kernel itself is checked against it on the GPU): close to fp32, the same
    mel batched as alone, and the cuBLASLt-shaped path (v's scale folded into the output
    projection, FF2's applied in the next layer norm) computes nearly the same mel."""
    from ishowttsd.engine.f5 import fp8gemm, quant

    fp, q8 = calibrated(env, "fp8_static", fp8_gemm="triton")
    blk = q8.fused.blocks[0]
    assert all(lin.epilogue for lin in (blk.qkv, blk.ff1, blk.ff2)) and not blk.out.epilogue
    assert q8.options["fp8_gemm"] == "triton"
    assert_speaks_like_fp32(env, fp, q8, FP8_BOUND)
    a, short = make_job(env, workload.LINE, 11), make_job(env, workload.MIXED_LINES[3], 12)
    alone = q8.sample([make_job(env, workload.LINE, 11)])[0]
    assert rel(q8.sample([a, short])[0], alone) < 1e-4
    _, unfused = calibrated(env, "fp8_static", fp8_gemm="cublas")
    assert not unfused.fused.blocks[0].ff1.epilogue
    assert rel(unfused.sample([make_job(env, workload.LINE, 11)])[0], alone) < 5e-3
    # the op: an fp8 output is the finished output quantised with the next layer's scale
    torch.manual_seed(5)
    x, w, b = torch.randn(40, 128), torch.randn(24, 128) / 8, torch.randn(24)
    wq, ws = quant.quantize_weight(w, "fp8")
    wg = ws.amax().reshape(())
    xs = quant.static_scale(x.abs().amax(dim=0))
    xq = (x / xs).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
    y = fp8gemm.fp8_gemm(xq, wq, xs, wg, ws / wg, b, True, None, torch.float32)
    assert rel(y, F.gelu(x @ w.T + b, approximate="tanh")) < 5e-2
    # the autotuner's key: one tile choice per power of two of rows (a new line length in the
    # daemon reuses its neighbours' instead of timing tiles before its first audio)
    assert fp8gemm.rows_key(1160) == fp8gemm.rows_key(1996) == fp8gemm.rows_key(2048) == 2048
    assert fp8gemm.rows_key(2049) == 4096 and fp8gemm.rows_key(1) == 2
    inv = torch.tensor(3.0)
    y8 = fp8gemm.fp8_gemm(xq, wq, xs, wg, ws / wg, b, True, inv, torch.float32)
    assert y8.dtype == torch.float8_e4m3fn
    assert torch.equal(
        y8.float(), (y * inv).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn).float()
    )


def test_smoothquant_moves_activation_outliers_into_the_weights() -> None:
    """An activation channel 50x larger than the rest: per-token int8 loses the small channels,
    SmoothQuant's migration (alpha 0.5) keeps them, and X W^T is unchanged by the migration."""
    from ishowttsd.engine.f5 import quant

    torch.manual_seed(3)
    x = torch.randn(256, 64)
    x[:, 7] *= 50.0
    w = torch.randn(32, 64) / 8
    exact = x @ w.T

    def int8_err(smooth: torch.Tensor | None) -> float:
        wq, ws = quant.quantize_weight(w, "int8", smooth)
        xq, xs = quant.quantize_rows(x, "int8", None if smooth is None else 1.0 / smooth)
        return rel(quant.int8_mm(xq, wq, xs, ws, None, False, torch.float32), exact)

    s = quant.smooth_factors(x.abs().amax(dim=0), w)
    assert rel((x / s) @ (w * s).T, exact) < 1e-5
    assert int8_err(s) < 0.6 * int8_err(None)


INTERPRETED_INT8 = """
import torch
from ishowttsd.engine.f5 import quant
torch.manual_seed(4)
for m, k, n in ((70, 64, 96), (33, 128, 40)):
    x, w, b = torch.randn(m, k), torch.randn(n, k) / 8, torch.randn(n)
    wq, ws = quant.quantize_weight(w, "int8")
    xq, xs = quant.quantize_rows(x, "int8")
    for bias, gelu in ((b, False), (b, True), (None, False)):
        want = quant.int8_mm_reference(xq, wq, xs, ws, bias, gelu, torch.float32)
        got = quant._triton_int8_mm(xq, wq, xs, ws, bias, gelu, torch.float32, config=(32, 32, 32, 4, 1))
        assert float((got - want).abs().max()) < 1e-5, (m, k, n, gelu)
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton not installed (optional)")
def test_int8_triton_kernel_in_the_interpreter() -> None:
    """The int8 GEMM's Triton kernel (int32 accumulation, scales, bias, GELU epilogue) equals
    ``torch._int_mm`` plus the same epilogue, under Triton's interpreter on the CPU (in a fresh
    process: the interpreter must be chosen before Triton is first imported)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", INTERPRETED_INT8], env=env, capture_output=True, text=True,
                       timeout=300, check=False)  # fmt: skip
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_nfe_7_uses_f5s_own_epss_schedule() -> None:
    """``nfe_step = 7`` runs f5-tts's EPSS grid for 7 steps (its authors' pruned schedule),
    then sway; NFE 8 (no EPSS entry) stays uniform."""
    cfg7 = InferenceConfig(nfe_step=7, cfg_strength=2.0, sway_sampling_coef=None, use_epss=True)
    t7 = sampler.timesteps(cfg7, "cpu", torch.float32)
    assert torch.allclose(t7, torch.tensor([0, 2, 4, 6, 8, 16, 24, 32]) / 32)
    cfg8 = InferenceConfig(nfe_step=8, cfg_strength=2.0, sway_sampling_coef=None, use_epss=True)
    assert torch.allclose(sampler.timesteps(cfg8, "cpu", torch.float32), torch.linspace(0, 1, 9))
    assert InferenceConfig().nfe_step == 8


def test_the_bench_floor_takes_attention_out_and_puts_it_back(env: dict[str, Any]) -> None:
    """``ishowtts-bench``'s ``_noattn`` floor: while it lasts the block has no attention (the
    mel changes); afterwards the fast path is the stock sampler's again."""
    from ishowttsd.bench.measure import without_attention

    ref = stock_mel(env, workload.FIRST_CHUNK, 11)
    with without_attention():
        floor = FastSampler(env["m"].dit, env["cfg"], bucket_frames=0).sample(
            [make_job(env, workload.FIRST_CHUNK, 11)]
        )
    assert rel(floor[0], ref) > 1e-2
    again = FastSampler(env["m"].dit, env["cfg"], bucket_frames=0).sample(
        [make_job(env, workload.FIRST_CHUNK, 11)]
    )
    assert rel(again[0], ref) < TOL


def test_a_packed_batch_conditions_its_jobs_together_as_each_alone(env: dict[str, Any]) -> None:
    """``prepare_many``: one text-encoder pass over jobs of different texts and lengths (each to
    its own length) gives each job the conditioning it gets alone."""
    fs = FastSampler(env["m"].dit, env["cfg"], bucket_frames=0)
    texts = [workload.MIXED_LINES[i] for i in (0, 7, 3, 10)]
    together = [make_job(env, t, 1) for t in texts]
    fs.prepare_many(together)
    for t, j in zip(texts, together, strict=True):
        alone = fs.prepare(make_job(env, t, 1))
        assert j.consts is not None and alone.consts is not None
        assert j.consts.shape == alone.consts.shape == (2, j.frames, fs.fused.dim)
        assert rel(j.consts, alone.consts) < TOL, t
