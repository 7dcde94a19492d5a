#!/usr/bin/env python3
"""GPU check of the daemon's batching: batched audio against each job alone, and what the first
batch of a shape costs after the engine's warm-up (tiny model, fast path as ``[f5.fast]``
configures it: fp16, compile, CUDA graphs).

  python scripts/f5_batch_check.py engine  # the engine's own warm-up (batched shapes included)
  python scripts/f5_batch_check.py cold    # without the batched warm-up (the first batch compiles)
  python scripts/f5_batch_check.py one     # with one warm-up batch of two lines instead

Prints one JSON line: per batch its size, seconds, and per job the largest int16 difference from
the same job alone and the relative (L2) difference. Use a fresh TORCHINDUCTOR_CACHE_DIR per run
(a warm Inductor cache hides compile time). Results: bench/results/f5_batch_check-h200-tiny.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import tomlkit
import torch

from ishowttsd import config
from ishowttsd.engine.base import CancelToken, SynthRequest
from ishowttsd.engine.f5.engine import F5Engine
from ishowttsd.engine.f5.tiny import write_tiny

LINES = [
    "gg",
    "Hello chat, thanks for the follow!",
    "Welcome in, everybody. Today we are trying a brand new game, so bear with me while I learn it.",
    "what game is this?",
    "Sentence number one is here to make this a long line. And another sentence follows it, long enough.",
    "lol",
    "Can you play the other map next time?",
    "Thanks for the raid, you are all amazing, welcome everybody!",
]


def pcm(chunks: Any) -> np.ndarray:
    return np.concatenate([c.pcm for c in chunks]).astype(np.int32)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "engine"
    d = Path(tempfile.mkdtemp(prefix="f5batch-")) / "m"
    write_tiny(d, seed=0)
    doc = tomlkit.parse((d / "f5.toml").read_text()).unwrap()
    doc["f5"].update(seed=7, warmup="all")
    doc["f5"].pop("cpu_threads", None)
    doc["f5"]["fast"] = {"conv_impl": "cudnn"}  # the Triton conv kernel needs K >= 16: not the tiny model
    e = F5Engine(*config.f5_sections(config.parse(doc, None)))
    if mode in ("cold", "one"):
        e._warm_batches = lambda progress: None  # type: ignore[method-assign]
    t = time.perf_counter()
    e.load(lambda _m: None)
    out: dict[str, Any] = {"mode": mode, "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    out["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    e.warmup(lambda _m: None)
    out["warmup_s"] = time.perf_counter() - t
    if mode == "one":
        t = time.perf_counter()
        warm = [SynthRequest(x, None, CancelToken()) for x in ("Warm up.", "Warm up, more.")]
        for s in e.synthesize_many(warm):
            list(s)
        out["batch_warmup_s"] = time.perf_counter() - t
    lines16 = LINES + [x + " Again!" for x in LINES]
    ref = {}
    for x in lines16:
        list(e.synthesize(x, None, CancelToken()))
        ref[x] = pcm(e.synthesize(x, None, CancelToken()))

    def batch(lines: list[str]) -> dict[str, Any]:
        torch.cuda.synchronize()
        t = time.perf_counter()
        streams = e.synthesize_many([SynthRequest(x, None, CancelToken()) for x in lines])
        got = [pcm(list(s)) for s in streams]
        dt = time.perf_counter() - t
        pairs = list(zip(got, [ref[x] for x in lines], strict=True))
        return {
            "n": len(lines),
            "s": round(dt, 4),
            "max_steps": [int(np.abs(g - r).max()) for g, r in pairs],
            "rel": [f"{np.linalg.norm(g - r) / np.linalg.norm(r):.2e}" for g, r in pairs],
        }

    for name, lines in (
        ("b5_first", LINES[:5]), ("b5_second", LINES[:5]), ("b8_first", LINES), ("b8_second", LINES),
        ("b3_first", LINES[5:]), ("b2_first", LINES[1:3]), ("pair_same", [LINES[1], LINES[1]]),
        ("b16_first", lines16), ("b16_second", lines16),
    ):  # fmt: skip
        out[name] = batch(lines)
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
