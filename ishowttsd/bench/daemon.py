"""The daemon's own F5 engine in the bench: full-size F5TTS_v1_Base random weights written in
F5's checkpoint layout and loaded by ``F5Engine.load``, warmed up as the daemon warms up
(``warmup = "all"``, which also measures the GPU time per shape that the first-chunk rule uses),
then the bench's line alone (as an idle worker speaks it: its first audio) and from a backlog (as
one ``synthesize_many`` call: whole, the GPU time a line costs), and the 16 mixed chat lines as one
``synthesize_many`` call (what the worker does with 16 waiting jobs).

Numbers are what a listener waits for: wall time from the request until the last (or first)
chunk's PCM is in host memory.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ishowttsd.bench import workload
from ishowttsd.bench.models import FULL_VOCOS, full_arch

LONG_LINE = (
    "Okay chat, quick update before we start the next run: the giveaway winners are announced at the "
    "end of the stream, so stick around, and thank you all for the support this week!"
)
"""A long chat line (170 characters): where a short first chunk can buy time to first audio."""


def write_full(out: Path) -> dict[str, Any]:
    """Random full-size F5 weights, a random full-size Vocos and a 5 s reference, written where the
    engine's loader reads them; returns the config document (``[f5]``, ``[[voices]]``)."""
    import yaml  # type: ignore[import-untyped]
    from safetensors.torch import save_file

    from ishowttsd.engine.f5 import tiny
    from ishowttsd.engine.f5.fetch import bundled_vocab

    out.mkdir(parents=True, exist_ok=True)
    vocab = out / "vocab.txt"
    shutil.copyfile(bundled_vocab(), vocab)
    n_vocab = sum(1 for _ in vocab.open(encoding="utf-8"))
    ckpt = out / "model_1250000.safetensors"
    if not ckpt.exists():
        cfm = tiny.build_cfm(full_arch(), n_vocab, seed=0)
        save_file(tiny.ema_state(cfm), str(ckpt))
    voc = out / "vocos"
    voc.mkdir(exist_ok=True)
    if not (voc / "pytorch_model.bin").exists():
        vc = json.loads(json.dumps(tiny.VOCOS_CONFIG))
        vc["backbone"]["init_args"].update(FULL_VOCOS)
        vc["head"]["init_args"].update(dim=FULL_VOCOS["dim"], padding="same")
        (voc / "config.yaml").write_text(yaml.safe_dump(vc, sort_keys=False))
        from vocos import Vocos

        torch.manual_seed(1)
        torch.save(Vocos.from_hparams(str(voc / "config.yaml")).state_dict(), voc / "pytorch_model.bin")
    import soundfile as sf

    sf.write(str(out / "ref.wav"), workload.reference_audio(), workload.SAMPLE_RATE, subtype="PCM_16")
    return {
        "f5": {
            "model": "F5TTS_v1_Base",
            "checkpoint": str(ckpt),
            "vocab": str(vocab),
            "vocoder": str(voc),
            "warmup": "all",
            "seed": 1,
        },
        "voices": [{"id": "streamer", "ref_audio": str(out / "ref.wav"), "ref_text": workload.REF_TEXT}],
        "engine": {"kind": "f5"},
    }


def load_engine(doc: dict[str, Any], fast: dict[str, Any], nfe: int = 8) -> Any:
    from ishowttsd import config
    from ishowttsd.engine.f5.engine import F5Engine

    d = json.loads(json.dumps(doc))
    d["f5"]["fast"] = dict(fast)
    d["f5"]["nfe_step"] = nfe
    e = F5Engine(*config.f5_sections(config.parse(d, None)))
    e.load(lambda _m: None)
    return e


def _timed_line(e: Any, text: str) -> tuple[float, float, float, int]:
    """(total ms, first-audio ms, audio s, chunks) for one line spoken alone."""
    from ishowttsd.engine.base import CancelToken

    t0 = time.perf_counter()
    first = None
    audio = 0.0
    n = 0
    for c in e.synthesize(text, None, CancelToken()):
        if first is None:
            first = time.perf_counter() - t0
        audio += c.seconds
        n += 1
    return (time.perf_counter() - t0) * 1e3, (first or 0.0) * 1e3, audio, n


def _timed_queued(e: Any, text: str) -> float:
    """ms until the whole line's PCM is in host memory when the worker takes it from a backlog
    (``synthesize_many``, which never splits for first audio): the GPU time a line costs the
    lines queued behind it."""
    from ishowttsd.engine.base import CancelToken, SynthRequest

    t0 = time.perf_counter()
    for s in e.synthesize_many([SynthRequest(text, None, CancelToken())]):
        for _c in s:
            pass
    return (time.perf_counter() - t0) * 1e3


def measure_engine(e: Any, reps: int) -> dict[str, Any]:
    """The line alone (idle: first audio) and queued (whole: GPU time), a long line alone, and the
    16 mixed lines batched, after ``e.warmup``."""
    from ishowttsd.engine.base import CancelToken, SynthRequest

    t0 = time.perf_counter()
    e.warmup(lambda _m: None)
    out: dict[str, Any] = {"warmup_s": time.perf_counter() - t0}
    out["shape_gpu_ms"] = {str(k): round(v, 3) for k, v in sorted(e._shape_ms.items())}
    for key, text in (
        ("line", workload.LINE),
        ("long_line", LONG_LINE),
        ("first_chunk", workload.FIRST_CHUNK),
    ):
        _timed_line(e, text)  # a new shape's graph capture, if any
        rows = [_timed_line(e, text) for _ in range(reps)]
        out[key] = {
            "text": text,
            "plan_idle": e.plan(text),
            "plan_backlog": e.plan(text, idle=False),
            "total_ms": statistics.median(r[0] for r in rows),
            "ttfa_ms": statistics.median(r[1] for r in rows),
            "audio_s": rows[0][2],
            "chunks": rows[0][3],
        }
        out[key]["rtf"] = out[key]["total_ms"] / 1e3 / out[key]["audio_s"]
    _timed_queued(e, workload.LINE)
    out["line"]["queued_ms"] = statistics.median(_timed_queued(e, workload.LINE) for _ in range(reps))
    lines = list(workload.MIXED_LINES)
    times, audio = [], 0.0
    for _ in range(reps + 1):  # the first run captures the batch shapes' graphs
        t = time.perf_counter()
        streams = e.synthesize_many([SynthRequest(x, None, CancelToken()) for x in lines])
        pcm = [np.concatenate([c.pcm for c in s]) for s in streams]
        times.append((time.perf_counter() - t) * 1e3)
        audio = sum(len(p) for p in pcm) / e.sample_rate
    ms = statistics.median(times[1:])
    out["mixed_16"] = {
        "lines": len(lines), "audio_s": audio, "wall_ms": ms, "x_realtime": audio / (ms / 1e3),
        "first_ms": times[0],  # with the capture of any shape the warm-up did not meet
        "packed_plans": len(e._fast.fs.packed_plans) if getattr(e, "_fast", None) else 0,
    }  # fmt: skip
    return out
