"""From mel to PCM on the host, for the fast path: Vocos in the same CUDA stream (graph-captured,
without its host sync), int16 or float32 on the GPU, pinned async copies, and the pipeline that
chains the fast sampler (``fast.FastSampler``) to it. ``build_pipeline`` is the engine's entry."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ishowttsd import log
from ishowttsd.engine.f5.fast import FastJob, FastSampler
from ishowttsd.engine.f5.quant import FP8

_log = log.get(__name__)


@dataclass
class Pcm:
    """One job's audio on the host, and where its time went."""

    samples: Any  # numpy int16 (or float32), mono
    stages: dict[str, float]
    """Seconds by stage from CUDA events (``prepare``, ``dit``, ``vocoder``, ``copy``), per batch."""


class Vocoder:
    """``Vocos.decode`` without its host sync.

    Vocos's "same"-padding iSTFT asserts ``(window_envelope > 1e-11).all()`` on every call, which
    waits for the GPU; with it, queueing the next chunk's DiT behind this chunk's vocoder is
    impossible. The envelope depends only on the frame count, so it is computed (and checked)
    once per length and cached; everything else is Vocos's own arithmetic on its own weights.
    """

    def __init__(self, vocos: Any, int16: bool = True) -> None:
        self.vocos = vocos
        # applied on the GPU before the copy out: int16 (half the bytes) or float32 samples
        self._out = _to_int16 if int16 else _as_float
        ist = getattr(vocos.head, "istft", None)
        self.native = ist is not None and getattr(ist, "padding", "") == "same" and hasattr(vocos.head, "out")
        self._env: dict[int, Tensor] = {}
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None
        self.native_graphs = True

    def _envelope(self, frames: int) -> Tensor:
        env = self._env.get(frames)
        if env is None:
            ist = self.vocos.head.istft
            pad = (ist.win_length - ist.hop_length) // 2
            size = (frames - 1) * ist.hop_length + ist.win_length
            wsq = ist.window.square().expand(1, frames, -1).transpose(1, 2)
            env = F.fold(
                wsq, output_size=(1, size), kernel_size=(1, ist.win_length), stride=(1, ist.hop_length)
            )
            env = env.squeeze()[pad:-pad]
            if not bool((env > 1e-11).all()):  # the check Vocos makes, once per length
                raise ValueError(f"iSTFT window envelope vanishes for {frames} frames")
            self._env[frames] = env
        return env

    def pcm(self, mel: Tensor) -> Tensor:
        """(mel, T) -> samples on the device (int16 or float32, see ``int16``). On CUDA one graph
        per frame count replays Vocos (~40 small kernels, ~1 ms of launches eagerly)."""
        frames = int(mel.shape[-1])
        if mel.device.type != "cuda" or not self.native or not self.native_graphs:
            return self._out(self.decode(mel[None].float())[0])
        g = self._graphs.get(frames)
        if g is None:
            try:
                g = self._capture(frames, mel.device)
            except RuntimeError as e:  # a driver/cuFFT that refuses capture: stay correct, eager
                _log.warning("vocoder graph capture failed; running Vocos eagerly", error=str(e))
                self.native_graphs = False
                return self._out(self.decode(mel[None].float())[0])
        g[1].copy_(mel)
        g[0].replay()
        # A copy: the graph's output buffer is overwritten by its next replay, and a batch whose
        # jobs share a length replays it once per job before any of them is copied out.
        return g[2].clone()

    def _capture(self, frames: int, device: torch.device) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
        static = torch.zeros(self.vocos.backbone.embed.in_channels, frames, device=device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._out(self.decode(static[None])[0])  # also computes (and checks) the envelope
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._out(self.decode(static[None])[0])
        if len(self._graphs) >= 128:
            self._graphs.pop(next(iter(self._graphs)))
        entry = (graph, static, out)
        self._graphs[frames] = entry
        return entry

    def decode(self, mel: Tensor) -> Tensor:
        """(B, mel, T) -> (B, samples), identical to ``Vocos.decode``."""
        if not self.native:
            out: Tensor = self.vocos.decode(mel)
            return out
        head, ist = self.vocos.head, self.vocos.head.istft
        x = head.out(self.vocos.backbone(mel)).transpose(1, 2)
        mag, p = x.chunk(2, dim=1)
        mag = torch.clip(torch.exp(mag), max=1e2)
        spec = mag * (torch.cos(p) + 1j * torch.sin(p))
        frames = spec.shape[-1]
        pad = (ist.win_length - ist.hop_length) // 2
        ifft = torch.fft.irfft(spec, ist.n_fft, dim=1, norm="backward") * ist.window[None, :, None]
        size = (frames - 1) * ist.hop_length + ist.win_length
        y = F.fold(ifft, output_size=(1, size), kernel_size=(1, ist.win_length), stride=(1, ist.hop_length))
        return y[:, 0, 0, pad:-pad] / self._envelope(frames)


class FastPipeline:
    """Jobs in, PCM out: the fast sampler, then Vocos (fp32) on each job's generated frames,
    then an async copy into pinned memory; the host waits once, on the last event.

    ``int16`` (default) hands out 16-bit samples; ``int16=False`` float32 in [-1, 1] (the
    engine's cross-fader works on floats)."""

    def __init__(self, fs: FastSampler, vocoder: Any, *, int16: bool = True) -> None:
        self.fs, self.vocoder = fs, Vocoder(vocoder, int16=int16)
        self.dtype = torch.int16 if int16 else torch.float32
        self.cuda = fs.device.type == "cuda"

    def _host(self, n: int) -> Tensor:
        """A pinned buffer of its own for each enqueue: any number may be queued before the first
        finish() (``run_grouped`` queues every length group first). torch's caching host
        allocator reuses a freed block only after the copies that used it are done."""
        return torch.empty(max(n, 1), dtype=self.dtype, pin_memory=self.cuda)

    def _event(self) -> Any:
        if not self.cuda:
            return _HostEvent()
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    @torch.no_grad()
    def enqueue(self, jobs: Sequence[FastJob], slots: int | None = None) -> Callable[[], list[Pcm]]:
        """Queue all GPU work for ``jobs``; returns a function that waits and hands out the PCM.

        Between the two calls the host is free: the streaming engine queues the next chunk's DiT
        here before it waits for this chunk's audio, so Vocos and copies overlap the next chunk.
        """
        e0 = self._event()
        for j in jobs:
            self.fs.prepare(j)
        e1 = self._event()
        mels = self.fs.sample(jobs, slots)
        e2 = self._event()
        waves = [self.vocoder.pcm(mel[j.ref_frames :].T) for j, mel in zip(jobs, mels, strict=True)]
        e3 = self._event()
        total = sum(int(w.numel()) for w in waves)
        host = self._host(total)
        offs = []
        o = 0
        for w in waves:
            host[o : o + w.numel()].copy_(w, non_blocking=True)
            offs.append((o, int(w.numel())))
            o += w.numel()
        e4 = self._event()

        def finish() -> list[Pcm]:
            e4.synchronize()
            stages = {
                "prepare": e0.elapsed_time(e1) / 1e3,
                "dit": e1.elapsed_time(e2) / 1e3,
                "vocoder": e2.elapsed_time(e3) / 1e3,
                "copy": e3.elapsed_time(e4) / 1e3,
            }
            return [Pcm(host[a : a + n].numpy().copy(), stages) for a, n in offs]

        return finish

    def run(self, jobs: Sequence[FastJob], slots: int | None = None) -> list[Pcm]:
        return self.enqueue(jobs, slots)()

    def run_grouped(self, jobs: Sequence[FastJob]) -> list[Pcm]:
        """Concurrent jobs as length groups (``batch.group_by_length``), each one padded batch in
        a captured batch size; all groups are queued before the host waits. Output in input order.
        With ``pack`` (``[f5.fast] pack``) they run as one packed batch instead where
        ``FastSampler.packs`` says so."""
        from ishowttsd.engine.f5 import batch

        if self.fs.packs(jobs):
            return self.run(jobs)
        groups = batch.group_by_length([j.frames for j in jobs], self.fs.bucket)
        waits = [(g, self.enqueue([jobs[i] for i in g], batch.slots_for(len(g)))) for g in groups]
        out: list[Pcm | None] = [None] * len(jobs)
        for g, wait in waits:
            for i, pcm in zip(g, wait(), strict=True):
                out[i] = pcm
        return [p for p in out if p is not None]


def _as_float(w: Tensor) -> Tensor:
    return w.float()


def _to_int16(w: Tensor) -> Tensor:
    """[-1, 1] floats to int16 on the device (half the bytes to copy; clipped, never wrapped)."""
    return (w.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16)


class _HostEvent:
    """CPU stand-in for ``torch.cuda.Event``: wall-clock stamps (work is synchronous there)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        return None

    def elapsed_time(self, other: _HostEvent) -> float:
        return (other.t - self.t) * 1e3


def build_pipeline(
    dit: Any, vocoder: Any, cfg: Any, settings: Any, *, int16: bool = True, allow_cpu: bool = False
) -> FastPipeline | None:
    """The fast path as ``[f5.fast]`` (``batch.FastSettings``) configures it, for a loaded DiT
    and Vocos; None where it does not apply (disabled, or not on CUDA unless ``allow_cpu``)."""
    device = next(dit.parameters()).device
    if not settings.enabled or (device.type != "cuda" and not allow_cpu):
        return None
    from ishowttsd.engine.f5 import posconv

    compile_ = can_compile(settings.compile, device.type, posconv.triton_available())
    if compile_ != settings.compile:
        _log.warning(
            "torch.compile needs Triton on CUDA and Triton does not import here (a JetPack torch "
            "without it?): the fast path runs uncompiled, CUDA graphs only, and the positional "
            "conv through cuDNN",
            key="f5.fast.compile",
        )
    quant = resolve_quant(settings, device)
    fs = FastSampler(
        dit, cfg, dtype="bf16" if quant in FP8 else settings.dtype, quant=quant,
        fast_accum=settings.fast_accum, compile=compile_,
        # torch.compile's default (automatic dynamic: static first, dynamic from the second length
        # on), not the bench's static shapes: measured on the full-size engine (H200), the same
        # speed (line 38.1 vs 38.2 ms, first chunk 16.5 vs 16.8 ms) for less than half the
        # warm-up (all 15 lengths + batches: 22.8 s vs 53.5 s cold, 12.5 s vs 21.2 s restarting)
        compile_dynamic=None,
        cuda_graph=settings.cuda_graph, bucket_frames=settings.bucket_frames,
        attn_mode=settings.attn_mode, conv_layout=settings.conv_layout, conv_impl=settings.conv_impl,
        gelu_epilogue=settings.gelu_epilogue, fp8_gemm=settings.fp8_gemm, pack=settings.pack,
        pack_min_frames=settings.pack_min_frames, pack_bucket_frames=settings.pack_bucket_frames,
    )  # fmt: skip
    return FastPipeline(fs, vocoder, int16=int16)


def resolve_quant(settings: Any, device: torch.device) -> str:
    """``[f5.fast] quant`` (or the old ``fp8 = true``) for this device: 'auto' per
    :func:`auto_quant`; fp8 elsewhere (an Orin, a CPU) falls back to none with a warning;
    ``fp8_static`` runs on a CPU too (the arithmetic, for tests)."""
    want = "fp8" if settings.fp8 else settings.quant
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    fp8_ok = cap is not None and cap >= (8, 9)
    if want == "auto":
        return auto_quant(cap)
    if want == "fp8_static" and device.type == "cpu":
        return want  # the same arithmetic on the CPU (tests; slow)
    if want in FP8 and not fp8_ok:
        _log.warning("fp8 needs fp8 tensor cores (Hopper/Ada); running without", key="f5.fast.quant")
        return "none"
    return str(want)


def auto_quant(capability: tuple[int, int] | None) -> str:
    """``quant = "auto"`` on a GPU of this compute capability (None: no GPU): the per-token
    ``fp8`` on QKV where fp8 tensor cores exist, else none (the Orin: int8 is asked for
    explicitly). Not ``fp8_static``, though it measured faster for whole lines and batches on an
    H200 (same run: line 21.01 vs 22.13 ms, 16 x the line 365x vs 331x, the daemon's 16 mixed
    lines 187x vs 172x; bench/results/20261203T022917Z-gpu.json): its first chunk is slower (16.12
    vs 15.35 ms; a short line alone in the daemon 16.47 vs 15.55 ms), and a lone chat line's first
    audio must not get worse; it also warms up 10 s longer (calibration and tile timing)."""
    if capability is None or capability < (8, 9):
        return "none"
    return "fp8"


def can_compile(wanted: bool, device_type: str, triton_ok: bool) -> bool:
    """Whether ``[f5.fast] compile`` can take effect: Inductor generates Triton kernels on CUDA,
    so without Triton a compile would fail at the first warm-up call and the daemon would not
    start. CPU compiles go through C++ and need no Triton."""
    return wanted and (device_type != "cuda" or triton_ok)
