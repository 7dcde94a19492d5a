"""Batching for the fast path, torch-free: the ``[f5.fast]`` settings and the grouping of a batch
by length (the worker gathers concurrent jobs itself: :meth:`Scheduler.take`).

Each group runs as one padded, masked batch (``FastPipeline.run``). A batched job computes what
it would alone: padded keys are masked and every per-job tensor is computed at the job's own
length (tests/test_fast_paths.py; on an H100 in bf16 the batched mel equals the unbatched one bit
for bit at the same bucket, and within 4e-3 relative across buckets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ishowttsd.confread import Table

ATTN_MODES = ("auto", "sdpa", "augment", "flash_seqlen")
QUANTS = ("none", "fp8", "fp8_static", "int8", "auto")
DTYPES = ("bf16", "fp16", "fp32")
FP8_GEMMS = ("auto", "triton", "cublas")
SLOT_SIZES = (1, 2, 4, 8, 16)
"""Batch sizes graphs are captured for; a batch runs in the smallest that holds it."""


@dataclass(frozen=True)
class FastSettings:
    """``[f5.fast]``: the fast GPU path (CUDA only; on CPU the engine runs the reference sampler).

    Defaults are what ``ishowtts-bench`` measured best on an H100 (docs/PERFORMANCE.md)."""

    enabled: bool = True
    dtype: str = "fp16"
    """DiT compute dtype. fp16 and bf16 ran at the same speed; fp16's mel error against fp32 is
    7.9e-4, bf16's 6.1e-3."""
    fp8: bool = False
    """The old switch for ``quant = "fp8"`` (kept for existing configs; needs ``dtype = "bf16"``)."""
    quant: str = "auto"
    """Low-precision GEMMs in the transformer blocks: 'none'; 'fp8' (Hopper/Ada: row-wise e4m3
    ``torch._scaled_mm`` for the QKV projection, weights per output channel, activations per
    token with the quantisation inside the layer-norm/AdaLN kernel; the DiT then runs in bf16
    whatever ``dtype`` says); 'fp8_static' (QKV, FF1 and FF2 in fp8 with one scale per layer input,
    calibrated at load on the voices, through ``fp8_gemm``); 'int8' (W8A8 for all four linears,
    SmoothQuant-calibrated at load on the voices: the path for Ampere boards such as the Orin,
    whose int8 tensor cores run at twice fp16); 'auto' (default): fp8 where the GPU has fp8 tensor
    cores (compute capability >= 8.9), else none. Measured on an H200 in one run (session 5,
    docs/PERFORMANCE.md): line fp16 22.42, fp8 22.13, fp8_static 21.01 ms; first chunk 16.02,
    15.35, 16.12 ms; 16 x the line 293x, 331x, 365x; mel error 8.0e-4, 6.5e-3, 8.1e-3 (bound
    2e-2). fp8_static is not 'auto' because a lone line's first audio is what a viewer waits for."""
    fast_accum: bool = True
    """fp8: Hopper's fast accumulation in the GEMM."""
    fp8_gemm: str = "auto"
    """Which GEMM runs ``quant = "fp8_static"`` layers: 'triton' (ours, with the scales, bias,
    GELU and the next layer's quantisation in its epilogue), 'cublas' (``torch._scaled_mm``, the
    rest in elementwise kernels), or 'auto' (default): triton where Triton runs on CUDA (H200:
    21.01 vs 22.05 ms per line, session 5). ``fast_accum`` applies to cuBLASLt only."""
    compile: bool = True
    """torch.compile (default mode) of the transformer block, with torch's automatic dynamic
    shapes: the daemon's full-size engine ran as fast as with static shapes (38.1 vs 38.2 ms per
    line, H200) for less than half the warm-up (22.8 s vs 53.5 s cold). The bench compiles static."""
    cuda_graph: bool = True
    bucket_frames: int = 0
    """Pad (and mask) sequences up to a multiple of this; 0 = exact shapes. The engine's duration
    ladder (``[f5] bucket_ratio``) already limits the shapes, and unpadded shapes need no
    attention mask: 22.07 ms against 24.49 ms for the bench line (H200, same run)."""
    attn_mode: str = "auto"
    """How padded keys are masked: 'flash_seqlen' (FA2 told each sequence's key count: padded
    batches 15 % faster than 'sdpa', H200, session 6), 'sdpa' (SDPA's ``attn_mask``, 3-9 % faster
    than 'augment'), 'augment'; 'auto': flash_seqlen where FA2 runs, else sdpa."""
    conv_layout: str = "view"
    """Positional conv input: 'view' (transposed view), 'contiguous', or 'auto' (timed per shape);
    'view' and 'contiguous' measured equal inside the graph."""
    conv_impl: str = "auto"
    """The positional conv: 'auto' (a fused Triton implicit-GEMM kernel on CUDA where Triton
    imports, else cuDNN), 'triton', or 'cudnn' (``F.conv1d``, the layout per ``conv_layout``)."""
    gelu_epilogue: bool = True
    """The FF GELU inside the GEMM (cuBLASLt epilogue): 1.0-1.1 ms less per line on an H200, same
    run (docs/PERFORMANCE.md)."""
    on_cpu: bool = False
    """Run the fast pipeline on the CPU too (eager, no graphs): for testing that the daemon's
    fast path speaks exactly like the reference sampler. Off: on CPU the engine's own path runs."""
    batch_window_ms: float = 0.0
    """How long the first job of a batch waits for company. Jobs that arrive while a batch runs
    (26-400 ms) are queued and taken together anyway; a window only adds its own length to the
    time to first audio of a lone line, which already misses its 15 ms target."""
    max_batch: int = 16
    pack: bool = True
    """Jobs synthesised together run packed: one after another along the frame axis, each line
    attending and convolving only within itself (``FastSampler.sample_packed``), instead of as
    padded length groups; no padding rows. Measured through the daemon's engine (H200,
    docs/perf-log.md, sessions 7 and 8): 16 mixed lines 199x -> 236-240x real time
    (fp8_static), the same audio as alone (tests/test_pipeline_gpu.py); only batches of
    ``pack_min_frames``."""
    pack_min_frames: int = 6144
    """With ``pack``, only a batch of this many frames or more (reference included) is packed;
    smaller ones run as padded, captured batches (session 7 set it while packed batches had no
    CUDA graph: their host side, ~105 ms for 8 steps, outlasted a small batch's GPU work)."""
    pack_bucket_frames: int = 1024
    """A packed batch's total is padded up to a multiple of this (a dummy line fills the rest),
    so batches of different lines share one shape, captured as a CUDA graph on its first use
    (``fast.pack_shape``): the host then no longer queues every kernel of a packed batch itself.
    0: each packed batch runs at its exact length, uncaptured (session 7's path)."""


def parse_fast(t: Table) -> FastSettings:
    """Read ``[f5.fast]`` (every error names the key)."""
    d = FastSettings()
    s = FastSettings(
        enabled=t.flag("enabled", d.enabled),
        on_cpu=t.flag("on_cpu", d.on_cpu),
        dtype=t.choice("dtype", d.dtype, DTYPES),
        fp8=t.flag("fp8", d.fp8),
        quant=t.choice("quant", d.quant, QUANTS),
        fast_accum=t.flag("fast_accum", d.fast_accum),
        fp8_gemm=t.choice("fp8_gemm", d.fp8_gemm, FP8_GEMMS),
        compile=t.flag("compile", d.compile),
        cuda_graph=t.flag("cuda_graph", d.cuda_graph),
        bucket_frames=t.integer("bucket_frames", d.bucket_frames, min=0, max=1024),
        attn_mode=t.choice("attn_mode", d.attn_mode, ATTN_MODES),
        conv_layout=t.choice("conv_layout", d.conv_layout, ("view", "contiguous", "auto")),
        conv_impl=t.choice("conv_impl", d.conv_impl, ("auto", "triton", "cudnn")),
        gelu_epilogue=t.flag("gelu_epilogue", d.gelu_epilogue),
        batch_window_ms=t.number("batch_window_ms", d.batch_window_ms, min=0.0, max=100.0),
        max_batch=t.integer("max_batch", d.max_batch, min=1, max=SLOT_SIZES[-1]),
        pack=t.flag("pack", d.pack),
        pack_min_frames=t.integer("pack_min_frames", d.pack_min_frames, min=0, max=1_000_000),
        pack_bucket_frames=t.integer("pack_bucket_frames", d.pack_bucket_frames, min=0, max=16384),
    )
    if s.fp8 and s.dtype != "bf16":
        raise t.error("fp8", "fp8 matmuls write bf16: set dtype = 'bf16' with fp8 = true")
    t.finish()
    return s


def slots_for(n: int) -> int:
    """The captured batch size that holds ``n`` jobs."""
    for s in SLOT_SIZES:
        if n <= s:
            return s
    raise ValueError(f"{n} jobs exceed the largest batch ({SLOT_SIZES[-1]})")


def bucket(frames: int, granularity: int) -> int:
    return frames if granularity <= 0 else -(-frames // granularity) * granularity


def group_by_length(
    frames: Sequence[int], granularity: int, *, overhead_frames: int = 2048, attn_frames: int = 4096
) -> list[list[int]]:
    """Split a batch into groups of similar length, minimising the padded work.

    Cost of a group: ``slots * bucket * (1 + bucket / attn_frames)`` (linear layers grow with
    frames, attention with frames squared) plus ``overhead_frames`` per extra launch. Exact
    dynamic programme over the jobs sorted by length. Returns lists of indices into ``frames``,
    longest group first.
    """
    order = sorted(range(len(frames)), key=lambda i: frames[i])
    n = len(order)
    if n == 0:
        return []

    def cost(a: int, b: int) -> float:  # jobs order[a:b]
        bk = bucket(frames[order[b - 1]], granularity)
        return slots_for(b - a) * bk * (1 + bk / attn_frames) + overhead_frames

    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for b in range(1, n + 1):
        for a in range(max(0, b - SLOT_SIZES[-1]), b):
            c = best[a] + cost(a, b)
            if c < best[b]:
                best[b], cut[b] = c, a
    groups = []
    b = n
    while b > 0:
        a = cut[b]
        groups.append([order[i] for i in range(a, b)])
        b = a
    return groups
