"""The fast GPU sampling path over f5's own DiT weights: batches of jobs on static buffers,
replayed through CUDA graphs (the fused forward itself is ``fused.py``).

What makes it fast, each a measured choice (docs/PERFORMANCE.md has the numbers):

* **What does not change is computed once per job, not per step.** The input projection is
  linear in ``[x, cond, text]``; the ``cond`` and ``text`` parts (and the text encoder in front
  of them) are fixed for the whole ODE solve, so only ``W_x @ x`` runs per step, and it is
  shared by the conditional and the unconditional CFG halves. The time embedding and every
  block's AdaLN modulation depend only on the timestep, so they are computed once per
  schedule for all steps.
* **Static shapes.** Exact frame counts (the engine's duration ladder already limits them) or
  padded up to a length bucket, with padded keys masked out of attention (and of the conv
  positional embedding), so a padded or batched job computes what the unpadded stock path
  computes; one CUDA graph per (batch, frames) replays all NFE steps with no host sync and no
  per-kernel launch cost. The per-job conditioning and Vocos are graph-captured per shape too.
* **Fewer, larger kernels** and **low-precision GEMMs**: ``fused.py``.

The ODE state stays fp32 (it is tiny: 100 channels); the DiT runs in the configured dtype.
Stock semantics kept: CFG ``v = c + (c - u) * cfg_strength`` on one batched forward, Euler
steps on f5's EPSS timesteps with sway sampling, reference frames replaced by the cond mel.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ishowttsd import log
from ishowttsd.engine.f5.attention import MASKED_LOGIT
from ishowttsd.engine.f5.fused import DTYPES, FusedDiT
from ishowttsd.engine.f5.quant import CALIBRATED, FP8

_log = log.get(__name__)


def bucket_for(frames: int, granularity: int) -> int:
    """Smallest multiple of ``granularity`` that holds ``frames`` (granularity 0 means no padding)."""
    if granularity <= 0:
        return frames
    return -(-frames // granularity) * granularity


PACK_LINE_STEP = 256
"""A packed batch's longest line is rounded up to this for its graph: FA2 launches one 128-row
query tile per line per ``max_len`` step, so a line past its own length wastes at most two
early-exiting tiles, while a coarser ladder means fewer graphs."""
PACK_SLOT_STEP = 4
"""A packed batch's line count (FA2's sequences, idle ones empty) is rounded up to this."""


def pack_shape(lengths: Sequence[int], bucket: int) -> tuple[int, int, list[int], int]:
    """``(frames, max_len, segments, slots)`` that packed lines of these frame counts run as.

    ``bucket`` > 0 (``[f5.fast] pack_bucket_frames``): the total is padded up to a multiple of
    it with dummy lines (each no longer than ``max_len``, so FA2's query tiles cover them), the
    longest line to :data:`PACK_LINE_STEP` and the line count to
    :data:`PACK_SLOT_STEP`, so that batches of different lines share one captured graph.
    ``bucket`` 0: the exact lengths (no graph)."""
    total = sum(lengths)
    if bucket <= 0:
        return total, max(lengths), list(lengths), len(lengths)
    frames = bucket_for(total, bucket)
    max_len = bucket_for(max(lengths), PACK_LINE_STEP)
    segments = list(lengths)
    rest = frames - total
    while rest > 0:
        segments.append(min(rest, max_len))
        rest -= segments[-1]
    return frames, max_len, segments, bucket_for(len(segments), PACK_SLOT_STEP)


# --------------------------------------------------------------------------------------------
# Batches of jobs on static buffers, replayed through CUDA graphs. The loop itself is the
# reference sampler's (``sampler.sample``) with the fused velocity as its step function.


@dataclass
class FastJob:
    """One chunk to synthesise, as the reference sampler takes it.

    ``ref_mel``: (R, D) reference mel; ``text``: (1, T) token ids (-1 padded); ``frames``: total
    length N (``sampler.total_frames``); ``noise``: (N, D) initial state (``sampler.make_noise``).
    """

    ref_mel: Tensor
    text: Tensor
    frames: int
    noise: Tensor
    consts: Tensor | None = None  # (2, N, dim): the fixed input-projection part, cond then uncond

    @property
    def ref_frames(self) -> int:
        return int(self.ref_mel.shape[0])


class _Plan:
    """Static buffers (and, on CUDA, one captured graph) for one (batch, frames, masked) shape."""

    def __init__(self, fs: FastSampler, batch: int, frames: int, masked: bool) -> None:
        f = fs.fused
        dev, dt = f.device, f.dtype
        self.fs, self.batch, self.frames, self.masked = fs, batch, frames, masked
        self.x = torch.zeros(batch, frames, f.mel_dim, device=dev, dtype=torch.float32)
        self.consts = torch.zeros(2 * batch, frames, f.dim, device=dev, dtype=dt)
        self.kmask = torch.ones(2 * batch, frames, device=dev, dtype=torch.bool)
        self.kbias = torch.zeros(2 * batch, frames, device=dev, dtype=torch.float32)
        self.klen = torch.full((2 * batch,), frames, device=dev, dtype=torch.int32)
        self.ref_mel = torch.zeros(batch, frames, f.mel_dim, device=dev, dtype=torch.float32)
        self.ref_mask = torch.zeros(batch, frames, 1, device=dev, dtype=torch.bool)
        self.cond = _sampler().Conditioning(
            dit=f.dit, cond_in=self.x, text_in=self.x, rope=(None, 1.0), ref_mel=self.ref_mel,
            ref_mask=self.ref_mask, cfg_strength=fs.cfg.cfg_strength, t=fs.schedule.to(dev),
        )  # fmt: skip
        self.out: Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self._calls = 0
        key = (2 * batch, frames)
        if f.uses_triton_conv(self.x):
            pass  # the fused kernel has no layout choice
        elif fs.conv_layout == "auto":
            f.tune_conv(*key)
        else:
            f.conv_contiguous.setdefault(key, fs.conv_layout == "contiguous")

    def _step(self, x: Tensor, t: Tensor, c: Any) -> Tensor:
        """The reference sampler's step signature; the step index picks the precomputed AdaLN."""
        i = self._calls
        self._calls += 1
        fs = self.fs
        km, kb, kl = (self.kmask, self.kbias, self.klen) if self.masked else (None, None, None)
        return fs.fused.velocity(x, self.consts, km, kb, fs.mods[i], fs.final[i], fs.cfg.cfg_strength, kl)

    def _loop(self) -> Tensor:
        self._calls = 0
        out: Tensor = _sampler().sample(self.cond, self.x, step=self._step)
        return out

    def capture(self) -> None:
        """Warm up on a side stream (compiles, autotunes), then capture the whole NFE loop."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._loop()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.fs.pool):
            self.out = self._loop()
        self.graph = graph

    def run(self) -> Tensor:
        if self.graph is None:
            return self._loop()
        self.graph.replay()
        assert self.out is not None
        return self.out


class _PackedPlan(_Plan):
    """Static buffers (and, on CUDA, one captured graph) for packed batches of one shape: total
    frames, longest line (``max_len``) and line slots (:func:`pack_shape`). :meth:`fill` lays
    out each batch's lines, then the graph replays, so lines of any lengths that pack into
    this shape share it. The frame and slot dimensions are marked dynamic for
    ``torch.compile``: the compiled block then serves every packed shape from its first
    compile (and from its second, when ``max_len`` first changes)."""

    def __init__(
        self, fs: FastSampler, frames: int, max_len: int, slots: int, segments: Sequence[int]
    ) -> None:
        super().__init__(fs, batch=1, frames=frames, masked=False)
        self.max_len, self.slots = max_len, slots
        self.segments = list(segments)
        self.packed = fs.fused.pack(segments, frames, slots, max_len)
        # the layout tensors the compiled block takes (its activations are marked in velocity)
        for t, dim in (
            (self.packed.segments, 1),
            (self.packed.cu, 0),
            (self.packed.cos, 2),
            (self.packed.sin, 2),
        ):
            torch._dynamo.maybe_mark_dynamic(t, dim)

    def _step(self, x: Tensor, t: Tensor, c: Any) -> Tensor:
        i = self._calls
        self._calls += 1
        fs = self.fs
        return fs.fused.velocity(x, self.consts, None, None, fs.mods[i], fs.final[i], fs.cfg.cfg_strength,
                                 packed=self.packed)  # fmt: skip

    def fill(self, jobs: Sequence[FastJob], segments: Sequence[int]) -> None:
        """The jobs one after another, then the dummy lines (zeros) up to ``frames``; the line
        layout is laid out again only where these lines' lengths differ from the last batch's."""
        if list(segments) != self.segments:
            layout = self.fs.fused.pack(segments, self.frames, self.slots, self.max_len)
            for dst, src in zip(self.packed, layout, strict=True):
                if isinstance(dst, Tensor) and isinstance(src, Tensor):
                    dst.copy_(src)
            self.segments = list(segments)
        self.x.zero_()
        self.consts.zero_()
        self.ref_mel.zero_()
        self.ref_mask.zero_()
        start = 0
        for j in jobs:
            assert j.consts is not None
            n, r = j.frames, j.ref_frames
            self.x[0, start : start + n].copy_(j.noise[:n], non_blocking=True)
            self.consts[:, start : start + n].copy_(j.consts)
            self.ref_mel[0, start : start + r].copy_(j.ref_mel, non_blocking=True)
            self.ref_mask[0, start : start + r] = True
            start += n


class _PrepPlan:
    """A captured graph of :meth:`FastSampler._conditioning` for one (frames, reference) shape;
    the text ids sit in a buffer of ``frames`` slots, -1 padded."""

    def __init__(self, fs: FastSampler, frames: int, ref_frames: int) -> None:
        f = fs.fused
        self.text = torch.full((1, frames), -1, dtype=torch.long, device=f.device)
        self.ref = torch.zeros(ref_frames, f.mel_dim, dtype=f.dtype, device=f.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fs._conditioning(self.text, self.ref, frames)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=fs.pool):
            self.out = fs._conditioning(self.text, self.ref, frames)

    def run(self, text: Tensor, ref: Tensor) -> Tensor:
        if text.shape[1] > self.text.shape[1]:
            raise ValueError(f"{text.shape[1]} text tokens do not fit {self.text.shape[1]} frames")
        self.text.fill_(-1)
        self.text[:, : text.shape[1]].copy_(text)
        self.ref.copy_(ref)
        self.graph.replay()
        return self.out


def _text_encoder(dit: Any, dtype: torch.dtype) -> Any:
    """The text encoder in the compute dtype (as the stock path runs it in the model dtype): in
    fp32 its ConvNeXt matmuls cost ~1 ms per chunk on an H100."""
    te = dit.text_embed
    return copy.deepcopy(te).to(dtype) if next(te.parameters()).dtype != dtype else te


def _sampler() -> Any:
    from ishowttsd.engine.f5 import sampler

    return sampler


def _for_device(
    device: torch.device, dtype: str, quant: str, compile: bool, cuda_graph: bool
) -> tuple[str, str, bool, bool]:
    """``(dtype, quant, compile, cuda_graph)`` as they run on ``device``: off CUDA, fp32, eager,
    uncaptured, and no dynamic fp8 (its GEMMs are CUDA's)."""
    if device.type == "cuda":
        return dtype, quant, compile, cuda_graph
    return "fp32", "none" if quant == "fp8" else quant, False, False


class FastSampler:
    """Samples mels for one or many jobs at once; shapes bucketed, loops graph-captured on CUDA.

    On CPU it runs the same fused code eagerly in fp32 (the tests' check that fast == stock).
    """

    def __init__(
        self,
        dit: Any,
        cfg: Any,
        *,
        dtype: str = "bf16",
        fp8: bool = False,
        compile: bool = True,
        compile_mode: str = "default",
        compile_dynamic: bool | None = None,
        cuda_graph: bool = True,
        bucket_frames: int = 32,
        attn_mode: str = "auto",
        fused: FusedDiT | None = None,
        conv_layout: str = "view",
        conv_impl: str = "auto",
        gelu_epilogue: bool = False,
        defer_residual: bool = True,
        quant: str = "none",
        fast_accum: bool = False,
        fp8_layers: Sequence[str] | None = None,
        fp8_gemm: str = "auto",
        pack: bool = False,
        pack_min_frames: int = 0,
        pack_bucket_frames: int = 0,
    ) -> None:
        """``fused``: share another sampler's fused weights (and compiled block), e.g. for a
        different NFE; ``dtype``/``quant``/``compile`` then come from it. ``quant``: 'none',
        'fp8' (with ``dtype = 'bf16'``; CUDA only), 'fp8_static' or 'int8' (these two need
        :meth:`calibrate` before the first sample; both run on CPU too). ``fp8=True`` means
        ``quant='fp8'``. ``pack``, ``pack_min_frames``: :meth:`packs`; ``pack_bucket_frames``:
        :meth:`sample_packed`."""
        self.device = next(dit.parameters()).device
        dtype, quant, compile, cuda_graph = _for_device(
            self.device, dtype, "fp8" if fp8 else quant, compile, cuda_graph
        )
        fp8 = quant == "fp8"
        if quant in FP8 and dtype != "bf16" and self.device.type == "cuda":
            raise ValueError("fp8 matmuls write bf16: set dtype = 'bf16' with fp8 = true")
        self.cfg = cfg
        if conv_layout not in ("view", "contiguous", "auto"):
            raise ValueError(f"conv_layout must be 'view', 'contiguous' or 'auto', got {conv_layout!r}")
        self.conv_layout = conv_layout
        if fused is not None:
            self.fused = fused
            dtype = next(k for k, v in DTYPES.items() if v == fused.dtype)
            quant, compile = fused.quant, fused.compiled
            fp8 = quant == "fp8"
        else:
            self.fused = FusedDiT(dit, DTYPES[dtype], attn_mode=attn_mode, conv_impl=conv_impl,
                                  gelu_epilogue=gelu_epilogue, defer_residual=defer_residual,
                                  quant_mode=quant, fast_accum=fast_accum, fp8_layers=fp8_layers,
                                  fp8_gemm=fp8_gemm)  # fmt: skip
            if compile:
                self.fused.compile_blocks(compile_mode, compile_dynamic)
        self.schedule = _sampler().timesteps(cfg, "cpu", torch.float32)
        self.mods, self.final = self.fused.modulations(self.schedule)
        self.cuda_graph = cuda_graph
        self.bucket = bucket_frames
        self.pack, self.pack_min_frames, self.pack_bucket = pack, pack_min_frames, pack_bucket_frames
        self.packed_runs = 0  # packed batches sampled so far (the warm-up's are counted too)
        self.text_embed = _text_encoder(dit, self.fused.dtype)
        self.plans: dict[tuple[int, int, bool], _Plan] = {}
        self.packed_plans: dict[tuple[int, int, int], _PackedPlan] = {}
        self.prep_plans: dict[tuple[int, int], _PrepPlan] = {}
        self.max_packed_plans, self.max_prep_plans = 32, 256
        if self.device.type == "cuda":
            # cuDNN picks the conv algorithms by timing them (the positional conv is grouped, k=31)
            torch.backends.cudnn.benchmark = True
        self.pool = torch.cuda.graph_pool_handle() if cuda_graph else None
        self.options = {
            "dtype": dtype, "fp8": fp8, "quant": quant, "fast_accum": self.fused.fast_accum,
            "fp8_layers": list(self.fused.fp8_layers) if quant in FP8 else None,
            "fp8_gemm": None if quant != "fp8_static" else "triton" if self.fused.fp8_epilogue else "cublas",
            "compile": compile_mode if compile else "none",
            "compile_dynamic": compile_dynamic, "cuda_graph": cuda_graph, "bucket_frames": bucket_frames,
            "attn_mode": self.fused.attn_mode, "conv_layout": conv_layout, "conv_impl": conv_impl,
            "gelu_epilogue": self.fused.gelu_epilogue, "defer_residual": self.fused.defer_residual,
            "pack": pack, "pack_min_frames": pack_min_frames, "pack_bucket_frames": pack_bucket_frames,
        }  # fmt: skip

    def plan(self, batch: int, frames: int, masked: bool) -> _Plan:
        """The plan for this shape, built (and captured) on first use; warm-up calls this ahead."""
        key = (batch, frames, masked)
        p = self.plans.get(key)
        if p is None:
            self._require_calibrated()
            t0 = time.perf_counter()
            p = _Plan(self, batch, frames, masked)
            if self.cuda_graph:
                p.capture()
            self.plans[key] = p
            _log.info("fast plan ready", batch=batch, frames=frames, masked=masked, graph=self.cuda_graph,
                      seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
        return p

    def _require_calibrated(self) -> None:
        if self.fused.quant in CALIBRATED and not self.fused.calibrated:
            raise RuntimeError(f"{self.fused.quant} fast path: calibrate() on a few jobs before sampling")

    def shape_for(self, frame_counts: Sequence[int], slots: int | None = None) -> tuple[int, int, bool]:
        """(batch slots, bucket frames, masked) that a batch of these lengths runs as."""
        n = len(frame_counts)
        b = max(n, slots or n)
        bucket = bucket_for(max(frame_counts), self.bucket)
        masked = b > n or any(f != bucket for f in frame_counts)
        return b, bucket, masked

    @torch.no_grad()
    def prepare(self, job: FastJob) -> FastJob:
        """The job's fixed conditioning (``sampler.prepare``'s guided ``cond_in``/``text_in``,
        projected). On CUDA one graph per (frames, reference frames) replays it: eagerly it is
        ~60 small launches (the text ConvNeXt), ~5 ms of host time per chunk."""
        if job.consts is not None:
            return job
        f = self.fused
        text = job.text.to(f.device)
        ref = job.ref_mel.to(f.device, f.dtype)
        if not self.cuda_graph:
            job.consts = self._conditioning(text, ref, job.frames)
            return job
        key = (job.frames, job.ref_frames)
        pp = self.prep_plans.get(key)
        if pp is None:
            pp = _PrepPlan(self, job.frames, job.ref_frames)
            if len(self.prep_plans) >= self.max_prep_plans:
                self.prep_plans.pop(next(iter(self.prep_plans)))
            self.prep_plans[key] = pp
        job.consts = pp.run(text, ref).clone()
        return job

    @torch.no_grad()
    def prepare_many(self, jobs: Sequence[FastJob]) -> None:
        """:meth:`prepare` for a packed batch's jobs at once: one text-encoder pass and one
        projection for all of them, where one job at a time costs a graph replay each (~0.9 ms
        of GPU per line on the H200, 16 lines ~15 ms; docs/perf-log.md, session 8). Each job's
        text runs to its own length (the encoder's per-sample lengths), which equals it alone
        where the encoder masks its padding (``text_mask_padding``, F5 v1); else one by one."""
        todo = [j for j in jobs if j.consts is None]
        if len(todo) < 2 or not getattr(self.text_embed, "mask_padding", False):
            for j in todo:
                self.prepare(j)
            return
        f, b = self.fused, len(todo)
        n = max(j.frames for j in todo)
        text = torch.full((b, n), -1, dtype=torch.long)
        cond = torch.zeros(b, n, f.mel_dim, dtype=f.dtype, device=f.device)
        for i, j in enumerate(todo):
            ids = j.text[0, : j.frames]
            text[i, : ids.shape[0]] = ids
            cond[i, : j.ref_frames] = j.ref_mel.to(f.device, f.dtype)
        out = self._guided(text.to(f.device), cond, torch.tensor([j.frames for j in todo], device=f.device))
        for i, j in enumerate(todo):
            j.consts = torch.stack((out[i, : j.frames], out[b + i, : j.frames]))

    def _conditioning(self, text: Tensor, ref_mel: Tensor, frames: int) -> Tensor:
        """What ``sampler.prepare`` computes for the guided case, then projected: text embeddings
        with and without text, the reference mel padded (and zeros for the unconditional half).
        ``text`` may be -1 padded up to ``frames`` (the text encoder pads with the same filler)."""
        cond = F.pad(ref_mel[None], (0, 0, 0, frames - ref_mel.shape[0]), value=0.0)
        return self._guided(text, cond, frames)

    def _guided(self, text: Tensor, cond: Tensor, seq_len: int | Tensor) -> Tensor:
        """[2B, N, dim]: the projected conditioning of B jobs, the conditional halves first, from
        their token ids [B, T] and reference mels padded to N frames [B, N, mel]; ``seq_len`` is
        N, or each job's own length (the text encoder's per-sample lengths)."""
        te = self.text_embed
        text_in = torch.cat(
            (te(text, seq_len=seq_len, drop_text=False), te(text, seq_len=seq_len, drop_text=True))
        )
        return self.fused.project_conditioning(
            torch.cat((cond, torch.zeros_like(cond))), text_in.to(cond.dtype)
        )

    @torch.no_grad()
    def calibrate(self, jobs: Sequence[FastJob]) -> None:
        """int8 and fp8_static: calibrate the activation statistics on ``jobs`` (each sampled
        once, eagerly, on the unquantised weights) and quantise. Nothing to do for other
        precisions or a second time.
        Plans captured before this would replay the unquantised weights: call it first."""
        if self.fused.quant not in CALIBRATED or self.fused.calibrated:
            return

        def run() -> None:
            for j in jobs:
                self.sample([j], eager=True)

        self.fused.calibrate(run)
        self.plans.clear()

    @torch.no_grad()
    def sample(self, jobs: Sequence[FastJob], slots: int | None = None, eager: bool = False) -> list[Tensor]:
        """Mel (N_i, D) fp32 per job, reference frames pasted back, like ``sampler.sample``.

        All jobs run as one padded, masked batch; ``slots`` pads the batch dimension too (so a
        graph captured for B slots serves fewer jobs). With ``pack``, two or more jobs run as one
        packed batch instead (:meth:`sample_packed`; ``slots`` does not apply) where
        :meth:`packs` says so. Nothing here waits for the GPU.
        """
        if self.packs(jobs) and not eager:
            return self.sample_packed(jobs)
        n = len(jobs)
        b, frames, masked = self.shape_for([j.frames for j in jobs], slots)
        p = _Plan(self, b, frames, masked) if eager else self.plan(b, frames, masked)
        for j in jobs:
            self.prepare(j)
        p.x.zero_()
        p.consts.zero_()
        p.ref_mel.zero_()
        p.ref_mask.zero_()
        p.kmask.zero_()
        for i, j in enumerate(jobs):
            assert j.consts is not None
            f, r = j.frames, j.ref_frames
            p.x[i, :f].copy_(j.noise[:f], non_blocking=True)
            p.consts[i, :f].copy_(j.consts[0])
            p.consts[b + i, :f].copy_(j.consts[1])
            p.ref_mel[i, :r].copy_(j.ref_mel, non_blocking=True)
            p.ref_mask[i, :r] = True
            p.kmask[i, :f] = True
            p.kmask[b + i, :f] = True
        for i in range(n, b):
            # idle slots: one valid key, so no softmax row is empty (their output is dropped)
            p.kmask[i, 0] = True
            p.kmask[b + i, 0] = True
        if masked:
            p.kbias.copy_((~p.kmask).float() * MASKED_LOGIT)
            p.klen.copy_(p.kmask.sum(1, dtype=torch.int32))
        out = p._loop() if eager else p.run()
        return [out[i, : j.frames] for i, j in enumerate(jobs)]

    @torch.no_grad()
    def packs(self, jobs: Sequence[FastJob]) -> bool:
        """Whether these jobs run as one packed batch: ``pack`` is on, there are two or more, and
        they hold ``pack_min_frames`` frames in all. Without ``pack_bucket_frames`` a packed batch
        has no CUDA graph, and the host queues its kernels one by one (~105 ms for 8 steps on the
        H200's host: 4 short lines took 111 ms packed against 45 ms as a padded, captured batch;
        docs/perf-log.md, session 7)."""
        return self.pack and len(jobs) > 1 and sum(j.frames for j in jobs) >= self.pack_min_frames

    def sample_packed(self, jobs: Sequence[FastJob]) -> list[Tensor]:
        """Mel (N_i, D) fp32 per job, like :meth:`sample`, from one packed batch: the jobs one
        after another along the frame axis (``FusedDiT.pack``), so the linear layers run over
        real frames only and attention and the positional conv stay inside each job.

        With ``pack_bucket_frames`` the batch runs in the plan of its :func:`pack_shape` (dummy
        lines pad it to the ladder), captured as a CUDA graph on its first use; without, in a
        plan of its exact length, uncaptured (the host then queues every kernel itself)."""
        self._require_calibrated()
        self.packed_runs += 1
        self.prepare_many(jobs)
        lengths = [j.frames for j in jobs]
        frames, max_len, segments, slots = pack_shape(lengths, self.pack_bucket)
        key = (frames, max_len, slots)
        t0 = time.perf_counter()
        p = self.packed_plans.get(key)
        fresh = p is None
        if p is None:
            p = _PackedPlan(self, frames, max_len, slots, segments)
        p.fill(jobs, segments)
        if fresh and self.pack_bucket > 0:
            # cuDNN's conv knows no line bounds, and the bounded reference reads them on the
            # host: only the Triton kernel's packed conv can be captured
            graph = self.cuda_graph and self.fused.uses_triton_conv(p.consts)
            if graph:
                p.capture()
            if len(self.packed_plans) >= self.max_packed_plans:
                self.packed_plans.pop(next(iter(self.packed_plans)))
            self.packed_plans[key] = p
            _log.info("fast packed plan ready", frames=frames, max_len=max_len, slots=slots,
                      graph=graph, seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
        out = p.run()
        starts = [0, *itertools.accumulate(lengths)][:-1]
        return [out[0, a : a + n] for a, n in zip(starts, lengths, strict=True)]
