"""Does the Inductor cache make a restart's warm-up faster? (GPU)

Runs the bench's warm-up probe (the daemon's warm-up of the line and first-chunk shapes) for one
fast-path variant and prints its time with Inductor's FX-graph-cache counters. Run it twice
with the same TORCHINDUCTOR_CACHE_DIR: the second run should hit.

  python scripts/warm_cache_probe.py fp16_exact
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch._dynamo.utils

from ishowttsd.bench import measure

variant = sys.argv[1] if len(sys.argv) > 1 else "fp16_exact"
res = measure.warmup_probe(measure.Plan(size="full", device="cuda", main=variant), lambda s: None)
counters = {k: dict(v) for k, v in torch._dynamo.utils.counters.items() if k in ("inductor", "aot_autograd")}
keep = {k: v for c in counters.values() for k, v in c.items() if "cache" in k or "bypass" in k}
print(json.dumps({"variant": variant, **res, "cache": keep}))
