"""The daemon's own F5 engine (fast path on) on a GPU: full-size F5TTS_v1_Base random weights,
written in F5's checkpoint layout and loaded by the engine's real loading code.

Measures what the daemon measures per job (synthesis seconds over audio seconds, time to the first
chunk) on the bench's chat line. Usage: python scripts/gpu_engine_check.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ishowttsd import config
from ishowttsd.bench.models import full_arch
from ishowttsd.engine.base import CancelToken
from ishowttsd.engine.f5 import tiny
from ishowttsd.engine.f5.engine import F5Engine
from ishowttsd.engine.f5.fetch import bundled_vocab

LINE = "Hello chat, thanks so much for the follow, welcome to the stream and enjoy your stay!"
REF_TEXT = "This is a short reference sentence that the streamer recorded for cloning."


def write_full(out: Path) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    vocab = out / "vocab.txt"
    shutil.copyfile(bundled_vocab(), vocab)
    n_vocab = sum(1 for _ in vocab.open(encoding="utf-8"))
    cfm = tiny.build_cfm(full_arch(), n_vocab, seed=0)
    from safetensors.torch import save_file

    save_file(tiny.ema_state(cfm), str(out / "model_1250000.safetensors"))
    voc = out / "vocos"
    voc.mkdir(exist_ok=True)
    vc = json.loads(json.dumps(tiny.VOCOS_CONFIG))
    vc["backbone"]["init_args"].update(dim=512, intermediate_dim=1536, num_layers=8)
    vc["head"]["init_args"].update(dim=512, padding="same")
    (voc / "config.yaml").write_text(yaml.safe_dump(vc, sort_keys=False))
    from vocos import Vocos

    torch.manual_seed(1)
    torch.save(Vocos.from_hparams(str(voc / "config.yaml")).state_dict(), voc / "pytorch_model.bin")
    sf.write(str(out / "ref.wav"), tiny.reference_wave(seconds=5.0), 24000, subtype="PCM_16")
    return {
        "f5": {
            "model": "F5TTS_v1_Base",
            "checkpoint": str(out / "model_1250000.safetensors"),
            "vocab": str(vocab),
            "vocoder": str(voc),
            "warmup": "none",
            "seed": 1,
        },
        "voices": [{"id": "streamer", "ref_audio": str(out / "ref.wav"), "ref_text": REF_TEXT}],
        "engine": {"kind": "f5"},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument(
        "--warmup-only",
        action="store_true",
        help="time the daemon's full warm-up (every shape, batched ones too) and stop",
    )
    a = ap.parse_args()
    if a.warmup_only:
        warmup_only(a.out)
        return
    t0 = time.perf_counter()
    doc = write_full(Path("/tmp/f5full"))
    settings = config.parse(doc, None)
    e = F5Engine(*config.f5_sections(settings))
    e.load(lambda m: print("load:", m, flush=True))
    t_load = time.perf_counter() - t0
    rows = []
    for i in range(a.runs + 1):
        t = time.perf_counter()
        first = None
        audio = 0.0
        for c in e.synthesize(LINE, None, CancelToken()):
            if first is None:
                first = time.perf_counter() - t
            audio += c.seconds
        total = time.perf_counter() - t
        rows.append({"total_s": total, "ttfa_s": first, "audio_s": audio, "rtf": total / audio})
        print(f"run {i}: {total * 1e3:.1f} ms, {audio:.2f} s audio, first {first * 1e3:.1f} ms", flush=True)
    warm = rows[1:]
    rec = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "fast_path": e._fast is not None,
        "nfe": settings.f5.inference.nfe_step,
        "plan": e.plan(LINE),
        "setup_and_load_s": t_load,
        "first_run_s (compiles this line's shapes)": rows[0]["total_s"],
        "median_total_ms": statistics.median(r["total_s"] for r in warm) * 1e3,
        "median_ttfa_ms": statistics.median(r["ttfa_s"] for r in warm) * 1e3,
        "audio_s": warm[0]["audio_s"],
        "median_rtf": statistics.median(r["rtf"] for r in warm),
        "runs": rows,
    }
    rec["batched"] = batched(e, a.runs)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "engine_gpu.json").write_text(json.dumps(rec, indent=2, default=str))
    print(json.dumps({k: v for k, v in rec.items() if k != "runs"}, default=str))


def warmup_only(out: Path) -> None:
    """What systemd waits for before READY: load, then ``warmup = "all"`` (every length bucket
    of every voice, and the batched shapes), as the daemon runs it. Run twice with the same
    TORCHINDUCTOR_CACHE_DIR for a cold start and a restart."""
    doc = write_full(Path("/tmp/f5full"))
    doc["f5"]["warmup"] = "all"  # type: ignore[index]
    settings = config.parse(doc, None)
    e = F5Engine(*config.f5_sections(settings))
    t0 = time.perf_counter()
    e.load(lambda m: None)
    t1 = time.perf_counter()
    lines: list[str] = []

    def progress(m: str) -> None:
        lines.append(m)
        print(f"  {time.perf_counter() - t1:7.1f} s  {m}", flush=True)

    e.warmup(progress)
    t2 = time.perf_counter()
    rec = {
        "device": torch.cuda.get_device_name(),
        "load_s": t1 - t0,
        "warmup_s": t2 - t1,
        "steps": len(lines),
        "shapes": e.warmup_shapes(),
        "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
    }
    out.mkdir(parents=True, exist_ok=True)
    print("warmup:", json.dumps(rec), flush=True)


def _pcm(chunks: object) -> np.ndarray:
    return np.concatenate([c.pcm for c in chunks])  # type: ignore[attr-defined]


def batched(e: F5Engine, runs: int) -> dict[str, object]:
    """The bench's 16 mixed chat lines through the engine: one at a time, then all 16 as one
    ``synthesize_many`` call (what the worker does with 16 waiting jobs); each job's audio is
    compared with the same job alone."""
    from ishowttsd.bench import workload
    from ishowttsd.engine.base import SynthRequest

    lines = list(workload.MIXED_LINES)
    solo_ms, many_ms = [], []
    solo: list[np.ndarray] = []
    many: list[np.ndarray] = []
    for _ in range(runs + 1):  # the first run of each compiles and captures the new shapes
        t = time.perf_counter()
        solo = [_pcm(list(e.synthesize(x, None, CancelToken()))) for x in lines]
        solo_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        streams = e.synthesize_many([SynthRequest(x, None, CancelToken()) for x in lines])
        many = [_pcm(list(s)) for s in streams]
        many_ms.append((time.perf_counter() - t) * 1e3)
    audio_s = sum(len(p) for p in solo) / e.sample_rate
    pairs = list(zip(solo, many, strict=True))
    diffs = [int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max()) for a, b in pairs]
    rel = [float(np.linalg.norm(a.astype(np.float64) - b) / max(1.0, np.linalg.norm(a.astype(np.float64))))
           for a, b in pairs]  # fmt: skip
    out = {
        "lines": len(lines),
        "audio_s": audio_s,
        "one_at_a_time_ms": statistics.median(solo_ms[1:]),
        "batched_ms": statistics.median(many_ms[1:]),
        "x_realtime_one_at_a_time": audio_s / (statistics.median(solo_ms[1:]) / 1e3),
        "x_realtime_batched": audio_s / (statistics.median(many_ms[1:]) / 1e3),
        "max_abs_int16_diff_per_job": diffs,
        "max_rel_error": max(rel),
        "same_lengths": all(len(a) == len(b) for a, b in pairs),
    }
    print("batched:", json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
