"""The F5-TTS engine: cloned voices from local files, streamed chunk by chunk.

Lifecycle: ``F5Engine(f5, voices, default_voice, cache_dir)`` only stores them; :meth:`load`
reads the checkpoint, vocab, Vocos and every voice's reference (failing with the path to fix);
:meth:`warmup` runs every length bucket once (compiling first if configured); :meth:`synthesize`
yields one :class:`AudioChunk` per text chunk, cross-faded into the next, checking ``cancel``
between chunks.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ishowttsd import log
from ishowttsd.engine.base import (
    AudioChunk,
    CancelToken,
    EngineError,
    Progress,
    StartupError,
    SynthRequest,
    UnknownVoice,
    Voice,
    float_to_int16,
)
from ishowttsd.engine.f5 import model as f5model
from ishowttsd.engine.f5 import rounds, sampler, text, upstream
from ishowttsd.engine.f5.quant import CALIBRATED
from ishowttsd.engine.f5.refaudio import Reference, ReferenceCache
from ishowttsd.engine.f5.settings import F5Settings, InferenceConfig, VoiceSettings
from ishowttsd.engine.f5.stream import CrossFader

_log = log.get(__name__)

BUCKET_QUANTUM = 16
"""Bucket sizes are multiples of this many frames (~0.17 s)."""
FALLBACK_COST_MS = (7.3, 0.0148)
"""GPU ms per chunk as ``a + b * total frames`` where warm-up measured no shape (the fast path's
fp16 one-shot times on an H200: 15.9 ms at 580 frames, 22.1 ms at 998; docs/PERFORMANCE.md)."""
CALIBRATION_TEXTS = (
    "Hello chat, thanks so much for the follow, welcome to the stream!",
    "That boss fight was insane, how many tries did it take?",
)
"""What the calibrated precisions sample with each voice at load (``[f5.fast] quant = "int8"``:
SmoothQuant factors; ``"fp8_static"``: the activation scales)."""


@dataclass(frozen=True)
class LoadedVoice:
    settings: VoiceSettings
    ref: Reference
    ref_text: str
    """As prepared for F5 (see :func:`text.reference_text`)."""
    speed: float

    @property
    def ref_frames(self) -> int:
        return int(self.ref.mel.shape[1])

    def frames_per_byte(self) -> float:
        """The voice's speech rate, in mel frames per UTF-8 byte of text (f5-tts's estimate)."""
        return self.ref_frames / max(1, len(self.ref_text.encode("utf-8")))


def bucket_ladder(ratio: float, max_frames: int) -> list[int]:
    """Total-length buckets: multiples of :data:`BUCKET_QUANTUM` growing by ``ratio``."""
    out = [4 * BUCKET_QUANTUM]
    while out[-1] < max_frames:
        nxt = math.ceil(out[-1] * ratio / BUCKET_QUANTUM) * BUCKET_QUANTUM
        out.append(max(nxt, out[-1] + BUCKET_QUANTUM))
    return out


class _LogWriter(io.TextIOBase):
    """Where f5-tts's and vocos' ``print`` output goes while we call them: the debug log.

    Through stdlib logging (stderr), never structlog: structlog's default logger prints to
    ``sys.stdout``, which is this writer while the redirect is active (it would recurse)."""

    def write(self, s: str) -> int:
        if s.strip():
            logging.getLogger(__name__).debug("upstream output: %s", s.strip())
        return len(s)


WARMUP_LINES = ("Warm up.", "Warm up, a longer line.", "Warm.", "Warm up, the longest line of these.", "Up.")
"""The warm-up's batched lines, of different lengths."""
WARMUP_LONG_LINE = "Warm up, a line much longer than the others, so that a batch's longest line changes too."
"""The second packed warm-up batch's longest line: it moves the batch's ``max_len`` to another
step of the ladder, so torch.compile has seen that change before READY too."""


class F5Engine:
    name = "f5"

    def __init__(
        self,
        settings: F5Settings,
        voices: Sequence[VoiceSettings],
        default_voice: str | None,
        cache_dir: Path,
    ) -> None:
        self._s: F5Settings = settings
        self._cfg: InferenceConfig = settings.inference
        self._voice_defs = tuple(voices)
        self._want_default = default_voice
        """``[engine] voice``: the default voice id (None: the first voice)."""
        self._cache_dir = cache_dir
        self._m: f5model.Loaded | None = None
        self._refs: ReferenceCache | None = None
        self._voices: dict[str, LoadedVoice] = {}
        self._default: str = ""
        self._step: sampler.VelocityFn = sampler.velocity
        self._ladder: list[int] = []
        self._fast: Any = None
        """The fast pipeline (``pipeline.FastPipeline``) where it applies (CUDA), else None."""
        self._shape_ms: dict[int, float] = {}
        """GPU ms (DiT + Vocos, CUDA events) per total frame count, measured at warm-up: what
        the first-chunk rule predicts with."""

    # -- lifecycle -----------------------------------------------------------------------------
    def load(self, progress: Progress) -> None:
        if not self._voice_defs:
            raise StartupError("the F5 engine needs at least one [[voices]] entry (id, ref_audio, ref_text)")
        progress("loading F5-TTS")
        t0 = time.perf_counter()
        if self._s.cpu_threads:
            torch.set_num_threads(self._s.cpu_threads)
        with contextlib.redirect_stdout(_LogWriter()):
            upstream.modules()
        self._m = f5model.load(self._s, quiet=_LogWriter())
        m = self._m
        self._refs = ReferenceCache(m.cfm.mel_spec, m.mel.target_sample_rate, m.device, m.dtype)
        self._voices = self._load_voices(self._voice_defs, strict=True)
        want = self._want_default
        if want is not None and want not in self._voices:
            raise StartupError(
                f"[engine] voice = {want!r} is not an F5 voice; known: {', '.join(self._voices)}"
            )
        self._default = want or next(iter(self._voices))
        from ishowttsd.engine.f5 import pipeline

        fs = self._s.fast
        self._fast = pipeline.build_pipeline(
            m.dit, m.vocoder, self._cfg, fs, int16=False, allow_cpu=fs.on_cpu
        )
        if self._fast is not None and self._fast.fs.fused.quant in CALIBRATED:
            with torch.inference_mode():
                jobs = [self._fast_job(v, t) for v in self._voices.values() for t in CALIBRATION_TEXTS]
                self._fast.fs.calibrate(jobs[:4])
        max_frames = self._seconds_to_frames(self._s.max_total_s)
        ratio = self._s.ladder_ratio
        if self._fast is not None and fs.compile and self._s.bucket_ratio is None:
            ratio = 1.1  # compiled graphs per shape: the ladder keeps the shapes few, warm-up runs each
        self._ladder = bucket_ladder(ratio, max_frames) if ratio > 1 else []
        if self._s.compile != "none" and self._fast is None:
            self._step = self._compiled_step(self._s.compile)
        elif self._fast is not None and self._fast.fs.options["compile"] != "none":
            # the fast path compiles at warm-up: its kernels go to the same persistent cache, so
            # a restart finds them (measured: warm-up 12.6 s cold, 6.0 s warm, H200 bench)
            self._use_compile_cache()
        _log.info(
            "f5 engine loaded",
            voices=list(self._voices),
            nfe_step=self._cfg.nfe_step,
            cfg_strength=self._cfg.cfg_strength,
            compile=self._s.compile,
            fast_path=self._fast is not None,
            load_s=round(time.perf_counter() - t0, 3),
        )

    def warmup(self, progress: Progress) -> None:
        if self._s.warmup == "none":
            return
        t0 = time.perf_counter()
        shapes = self.warmup_shapes()
        if self._s.warmup == "first":
            shapes = shapes[:1]
        min_gen = self._seconds_to_frames(self._s.min_chunk_s)
        for i, frames in enumerate(shapes, 1):
            progress(f"warming up F5 ({i}/{len(shapes)}: {frames} frames)")
            # A voice whose reference fits this shape (shapes come from every voice's range).
            voice = next(v for v in self._voices.values() if v.ref_frames + min_gen <= frames)
            self._chunk_audio(voice, "Warm up.", frames)
            if self._fast is not None and self._fast.cuda:
                # once more, compiled and captured: this shape's GPU time for the first-chunk rule
                _wave, t = self._chunk_audio(voice, "Warm up.", frames)
                self._shape_ms[frames] = 1e3 * (t["model"] + t["vocoder"])
        if self._s.warmup == "all" and self.max_batch() > 1:
            self._warm_batches(progress)
        _log.info("f5 warm-up done", shapes=len(shapes), warmup_s=round(time.perf_counter() - t0, 3))

    def _warm_batches(self, progress: Progress) -> None:
        """Compile the batched shapes before READY. torch.compile recompiles the block for a new
        batch size until it has seen two (then the batch dimension is dynamic), and once more for
        the unmasked variant: without this the daemon's first batch stalled 10.1 s on an H200
        (tiny model; 6.2 s still after one warm-up batch) and its first unmasked pair 4.0 s; with
        it every first batch took 0.08-0.29 s, for 17 s more warm-up
        (bench/results/f5_batch_check-h200-tiny.json). An unmasked pair, then masked batches of
        two sizes; a new batch shape's CUDA graph is still captured on its first use."""
        lines = list(WARMUP_LINES)
        for batch in (["Warm up."] * 2, lines[:3], lines, *self._packed_warmup_batches()):
            progress(f"warming up F5 batches ({len(batch)} lines)")
            for stream in self.synthesize_many([SynthRequest(t, None, CancelToken()) for t in batch]):
                for _chunk in stream:
                    pass

    def _packed_warmup_batches(self) -> list[list[str]]:
        """With ``[f5.fast] pack``: two batches, each over ``pack_min_frames``, that differ in
        total length and longest line, so the packed block is compiled for any packed shape
        (``fast.pack_shape``) before READY rather than on the first big backlog (a full-size
        compile is seconds of silence). None where no batch of ``max_batch`` lines would be
        packed."""
        fast = self._s.fast
        if self._fast is None or not fast.pack:
            return []
        line, longer = WARMUP_LINES[1], WARMUP_LONG_LINE
        v = next(iter(self._voices.values()))
        k = max(2, -(-fast.pack_min_frames // self.frames_for(v, line)))
        if k > fast.max_batch:
            return []
        return [[line] * k, [line] * (k - 1) + [longer]]

    def close(self) -> None:
        on_cuda = self._m is not None and self._m.device.type == "cuda"
        self._m = None
        self._voices = {}
        self._refs = None
        if on_cuda:
            torch.cuda.empty_cache()  # give the memory back to other processes on a shared board

    # -- voices ---------------------------------------------------------------------------------
    def voices(self) -> Sequence[Voice]:
        rate = self.sample_rate
        return [
            Voice(
                id=v.settings.id,
                engine=self.name,
                language=v.settings.language,
                description=v.settings.description or f"F5-TTS clone of {v.settings.ref_audio.name}",
                sample_rate=rate,
            )
            for v in self._voices.values()
        ]

    def default_voice(self) -> str:
        return self._default

    def reload_voices(self, voices_in: Sequence[VoiceSettings]) -> None:
        """Take new voice definitions (the configured ``[[voices]]`` and the studio's). A broken
        entry is logged and skipped (its previous version, if any, stays): a typo must not
        silence the stream. A new clip is prepared here, between jobs; the reference cache
        (keyed by the clip's bytes) keeps every unchanged voice's mel."""
        if self._refs is None:
            return
        voices = self._load_voices(voices_in, strict=False)
        if not voices:
            _log.error("voices not reloaded: no usable voice")
            return
        self._voices = voices
        self._refs.retain({v.ref.key for v in voices.values()})
        if self._default not in voices:
            self._default = next(iter(voices))
        _log.info("voices reloaded", voices=list(voices), default=self._default)

    def _load_voices(self, defs: Sequence[VoiceSettings], strict: bool) -> dict[str, LoadedVoice]:
        assert self._refs is not None
        out: dict[str, LoadedVoice] = {}
        for i, v in enumerate(defs):
            key = f"voices[{i}].ref_audio"
            try:
                ref = self._refs.get(v.ref_audio, key, self._s.max_ref_s, self._s.target_rms)
            except StartupError as e:
                if strict:
                    raise
                _log.error("voice skipped", voice=v.id, error=str(e))
                if v.id in self._voices:
                    out[v.id] = self._voices[v.id]
                continue
            speed = v.speed if v.speed is not None else self._cfg.speed
            out[v.id] = LoadedVoice(
                settings=v, ref=ref, ref_text=text.reference_text(v.ref_text), speed=speed
            )
            _log.info("voice ready", voice=v.id, ref_s=round(ref.seconds, 2), frames=out[v.id].ref_frames)
        return out

    # -- synthesis ------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self._m.mel.target_sample_rate if self._m is not None else 24000

    @property
    def inference(self) -> InferenceConfig:
        return self._cfg

    def plan(self, line: str, voice: str | None = None, idle: bool = True) -> list[tuple[str, int]]:
        """The chunks ``line`` is spoken in and each one's total frame count (reference included):
        alone (``idle``, :meth:`synthesize`) or in a batch (:meth:`synthesize_many`)."""
        v = self._voice(voice)
        return [(c, self.frames_for(v, c)) for c in self._chunks(v, text.normalise(line), idle)]

    def predict_ms(self, frames: int) -> float:
        """Predicted GPU ms for one chunk of ``frames`` total frames: the smallest shape measured
        at warm-up that holds it (the ladder rounds up to those), else :data:`FALLBACK_COST_MS`."""
        fits = [f for f in self._shape_ms if f >= frames]
        if fits:
            return self._shape_ms[min(fits)]
        a, b = FALLBACK_COST_MS
        return a + b * frames

    def synthesize(self, line: str, voice: str | None, cancel: CancelToken) -> Iterator[AudioChunk]:
        if self._m is None:
            raise EngineError("engine not loaded", "not_ready")
        v = self._voice(voice)
        t0 = time.perf_counter()
        chunks = self._chunks(v, text.normalise(line))
        prep = time.perf_counter() - t0
        if self._fast is not None:
            yield from self._stream_fast(v, chunks, prep, cancel)
            return
        fader = CrossFader(int(self._cfg.cross_fade_s * self.sample_rate))
        for i, chunk in enumerate(chunks):
            if cancel.cancelled:
                return
            wave, timings = self._chunk_audio(v, chunk, self.frames_for(v, chunk))
            timings["text"] += prep
            timings["total"] += prep
            prep = 0.0
            out = fader.push(wave)
            if i == len(chunks) - 1:
                out = np.concatenate([out, fader.flush()])
            yield AudioChunk(pcm=float_to_int16(out), rate=self.sample_rate, timings=timings, text=chunk)

    def _stream_fast(
        self, v: LoadedVoice, chunks: list[str], prep: float, cancel: CancelToken
    ) -> Iterator[AudioChunk]:
        """One job on the fast pipeline, chunk ``i + 1``'s GPU work queued before chunk ``i``'s
        audio is awaited: the GPU goes from one chunk's Vocos straight into the next chunk's DiT
        while the host hands the audio out (the pattern the bench's ``stream`` figure measures).
        A cancel stops it at the next chunk boundary; work already queued finishes on the GPU
        and is dropped."""
        fast = self._fast
        assert fast is not None

        def start(chunk: str) -> tuple[str, float, float, Any]:
            t0 = time.perf_counter()
            with torch.inference_mode():
                job = self._fast_job(v, chunk)
                t1 = time.perf_counter()
                finish = fast.enqueue([job])
            return chunk, t0, t1 - t0, finish

        fader = CrossFader(int(self._cfg.cross_fade_s * self.sample_rate))
        nxt = start(chunks[0]) if chunks and not cancel.cancelled else None
        for i in range(len(chunks)):
            if nxt is None or cancel.cancelled:
                return
            chunk, t0, t_text, finish = nxt
            nxt = start(chunks[i + 1]) if i + 1 < len(chunks) else None
            with torch.inference_mode():
                pcm = finish()[0]
            timings = {
                "text": t_text + prep,
                **_gpu_stages(pcm.stages),
                "total": time.perf_counter() - t0 + prep,
            }
            prep = 0.0
            out = fader.push(np.asarray(pcm.samples, dtype=np.float32))
            if i == len(chunks) - 1:
                out = np.concatenate([out, fader.flush()])
            yield AudioChunk(pcm=float_to_int16(out), rate=self.sample_rate, timings=timings, text=chunk)

    # -- batching (engine.base.BatchingEngine) ------------------------------------------------------
    def max_batch(self) -> int:
        """``[f5.fast] max_batch`` where the fast pipeline runs, else 1 (no batching)."""
        return self._s.fast.max_batch if self._fast is not None else 1

    def batch_window_s(self) -> float:
        return self._s.fast.batch_window_ms / 1000.0

    def synthesize_many(self, requests: Sequence[SynthRequest]) -> list[Iterator[AudioChunk]]:
        """Concurrent jobs in rounds (``rounds.Rounds``): round ``r`` is the ``r``-th chunk of
        every job still wanting one, run as the fast pipeline's length groups of padded, masked
        batches, with each chunk's noise drawn as :meth:`synthesize` draws it. Audio equals each
        job's alone within a few int16 steps in fp32 (tests/test_f5_batching.py)."""
        if self._m is None:
            raise EngineError("engine not loaded", "not_ready")
        if self._fast is None:  # nothing to share: each job on its own, lazily
            return [self.synthesize(r.text, r.voice, r.cancel) for r in requests]
        plans = []
        for r in requests:
            fader = CrossFader(int(self._cfg.cross_fade_s * self.sample_rate))
            t0 = time.perf_counter()
            try:
                v = self._voice(r.voice)
            except EngineError as e:
                plans.append(rounds.Plan(None, [], r.cancel, fader, error=e))
                continue
            chunks = self._chunks(v, text.normalise(r.text), idle=False)
            plans.append(rounds.Plan(v, chunks, r.cancel, fader, prep_s=time.perf_counter() - t0))
        return rounds.Rounds(plans, self._batch_step, self.sample_rate).streams()

    def _batch_step(self, items: Sequence[tuple[Any, str]]) -> tuple[list[np.ndarray], dict[str, float]]:
        """One round: each (voice, chunk) as :meth:`_fast_job` makes it, all through
        ``FastPipeline.run_grouped``; the round's seconds by stage."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            # the jobs' conditioning is queued before the batch's sampling, which needs it all
            # (its GPU time is in no stage then); a packed batch conditions its jobs together,
            # in sample_packed
            fs = self._fast.fs
            jobs = [self._fast_job(v, chunk) for v, chunk in items]
            if not fs.packs(jobs):
                jobs = [fs.prepare(j) for j in jobs]
            t1 = time.perf_counter()
            pcms = self._fast.run_grouped(jobs)
        # Each length group's CUDA-event stages are shared by its jobs' Pcm: count each group once.
        groups = list({id(p.stages): p.stages for p in pcms}.values())
        per_group = [_gpu_stages(st) for st in groups]
        stages = {
            "text": t1 - t0,
            "model": sum(g["model"] for g in per_group),
            "vocoder": sum(g["vocoder"] for g in per_group),
        }
        return [np.asarray(p.samples, dtype=np.float32) for p in pcms], stages

    def warmup_shapes(self) -> list[int]:
        """Every total frame count the daemon can use, over all voices (bucketed), smallest first.
        Without bucketing (eager default, or ``bucket_ratio = 1``) the shortest and longest chunk
        of each voice."""
        shapes: set[int] = set()
        max_total = self._seconds_to_frames(self._s.max_total_s)
        min_gen = self._seconds_to_frames(self._s.min_chunk_s)
        for v in self._voices.values():
            lo, hi = v.ref_frames + min_gen, max(v.ref_frames + min_gen, max_total)
            if self._ladder:
                shapes.update(
                    b for b in self._ladder if lo <= b and self._bucket(lo) <= b <= self._bucket(hi)
                )
            else:
                shapes.update((lo, hi))
        return sorted(shapes)

    # -- internals ------------------------------------------------------------------------------
    def _voice(self, voice: str | None) -> LoadedVoice:
        vid = voice or self._default
        v = self._voices.get(vid)
        if v is None:
            raise UnknownVoice(vid, list(self._voices))
        return v

    def _seconds_to_frames(self, s: float) -> int:
        m = self._m
        rate, hop = (m.mel.target_sample_rate, m.mel.hop_length) if m is not None else (24000, 256)
        return int(s * rate / hop)

    def _chunks(self, v: LoadedVoice, line: str, idle: bool = True) -> list[str]:
        """The line as chunks: as few as the length budget allows, plus a short first chunk only
        when ``idle`` (one job, nobody queued behind it) and it is predicted to bring the first
        audio at least ``first_chunk_gain_ms`` sooner (:meth:`predict_ms`). Under a backlog
        (``idle=False``) every extra chunk would cost GPU time that the queued lines wait for."""
        # f5-tts's budget: reference + chunk within max_total_s at this voice's speech rate.
        # Durations count UTF-8 bytes (f5-tts's estimate) while chunks count characters: scale by
        # the line's bytes per character, or a CJK chunk (3 bytes each) would overrun the budget.
        room = self._seconds_to_frames(self._s.max_total_s) - v.ref_frames
        bytes_per_char = len(line.encode("utf-8")) / max(1, len(line))
        max_chars = max(8, int(room / v.frames_per_byte() * v.speed / bytes_per_char))
        whole = text.chunk(line, max_chars, 0)
        if not idle or self._s.first_chunk_chars <= 0 or not whole:
            return whole
        split = text.chunk(line, max_chars, self._s.first_chunk_chars)
        if len(split) <= len(whole) or self._fast is None:
            # the reference sampler (CPU, no fast path): seconds per chunk, always worth it
            return split
        gain = self.predict_ms(self.frames_for(v, whole[0])) - self.predict_ms(self.frames_for(v, split[0]))
        return split if gain >= self._s.first_chunk_gain_ms else whole

    def _bucket(self, frames: int) -> int:
        for b in self._ladder:
            if b >= frames:
                return b
        return frames

    def frames_for(self, v: LoadedVoice, chunk: str) -> int:
        """Total frames for ``chunk``: f5-tts's duration estimate (reference frames per byte of
        reference text, times the chunk's bytes, over speed), at least ``min_chunk_s``, rounded up
        to the bucket ladder."""
        gen = int(v.frames_per_byte() * len(chunk.encode("utf-8")) / v.speed)
        gen = max(gen, self._seconds_to_frames(self._s.min_chunk_s))
        return self._bucket(v.ref_frames + gen)

    def _tokens(self, v: LoadedVoice, chunk: str) -> torch.Tensor:
        assert self._m is not None
        u = upstream.modules().utils
        chars = u.convert_char_to_pinyin([v.ref_text + chunk])
        ids: torch.Tensor = u.list_str_to_idx(chars, self._m.vocab)
        if self._m.device.type == "cuda":
            # from pinned memory, asynchronously: a pageable copy waits for the whole stream,
            # which would hold a chunk's audio until the next chunk's work is queued behind it
            return ids.pin_memory().to(self._m.device, non_blocking=True)
        return ids.to(self._m.device)

    def _fast_job(self, v: LoadedVoice, chunk: str, frames: int | None = None) -> Any:
        """One chunk as the fast pipeline takes it (``fast.FastJob``): tokens, the total length
        (``frames``, default the chunk's own, raised to f5's floor) and its noise, drawn the same
        way alone and in a batch."""
        from ishowttsd.engine.f5.fast import FastJob

        tokens = self._tokens(v, chunk)
        want = self.frames_for(v, chunk) if frames is None else frames
        n = sampler.total_frames(v.ref_frames, int(tokens.shape[1]), want)
        return FastJob(v.ref.mel[0], tokens, n, self._noise(n)[0])

    def _chunk_audio(self, v: LoadedVoice, chunk: str, frames: int) -> tuple[np.ndarray, dict[str, float]]:
        m = self._m
        assert m is not None
        t0 = time.perf_counter()
        if self._fast is not None:
            with torch.inference_mode():
                job = self._fast_job(v, chunk, frames)
                t1 = time.perf_counter()
                pcm = self._fast.run([job])[0]
            wave_fast = np.asarray(pcm.samples, dtype=np.float32)
            return wave_fast, {"text": t1 - t0, **_gpu_stages(pcm.stages), "total": time.perf_counter() - t0}
        tokens = self._tokens(v, chunk)
        frames = sampler.total_frames(v.ref_frames, int(tokens.shape[1]), frames)
        t1 = time.perf_counter()
        with torch.inference_mode():
            noise = self._noise(frames)
            c = sampler.prepare(m.dit, v.ref.mel, tokens, frames, self._cfg)
            mel = sampler.sample(c, noise, self._step)
            if m.device.type == "cuda":
                torch.cuda.synchronize(m.device)
            t2 = time.perf_counter()
            gen = mel[:, v.ref_frames :, :].float().permute(0, 2, 1)
            wave = m.vocoder.decode(gen).squeeze(0).cpu().numpy().astype(np.float32)
        t3 = time.perf_counter()
        return wave, {"text": t1 - t0, "model": t2 - t1, "vocoder": t3 - t2, "total": t3 - t0}

    def _noise(self, frames: int) -> torch.Tensor:
        """One chunk's initial noise (1, N, D): the same draw alone and in a batch."""
        m = self._m
        assert m is not None
        return sampler.make_noise(1, frames, m.mel.n_mel_channels, self._cfg.seed, m.device, m.dtype)

    def _compiled_step(self, mode: str) -> sampler.VelocityFn:
        """torch.compile the step, with inductor/triton caches in the persistent cache directory
        so the second start of the daemon reuses the first one's kernels."""
        self._use_compile_cache()
        # One static-shape graph per length bucket: dynamo's default limit (8 recompiles) would
        # silently drop the larger buckets back to eager.
        import torch._dynamo.config as dynamo_config

        need = len(self._ladder) + 8
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, need)
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, need)
        compiled: Any = torch.compile(
            sampler.velocity, mode=None if mode == "default" else mode, dynamic=False
        )
        step: sampler.VelocityFn = compiled
        return step

    def _use_compile_cache(self) -> None:
        """Inductor's and Triton's caches in ``[daemon] cache_dir`` (the unit sets them in its
        environment too; outside systemd torch's default is a /tmp folder)."""
        cache = Path(self._cache_dir)
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        # An explicit setting in the environment wins; torch itself writes its /tmp default back
        # into the environment the first time anything asks, which must not count as explicit.
        current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "inductor")
        os.environ.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
        _log.info("torch.compile caches", inductor_cache=os.environ["TORCHINDUCTOR_CACHE_DIR"])


def _gpu_stages(st: dict[str, float]) -> dict[str, float]:
    """The fast pipeline's CUDA-event stages (``pipeline.Pcm.stages``) as the engine reports them."""
    return {"model": st["prepare"] + st["dit"], "vocoder": st["vocoder"] + st["copy"]}
