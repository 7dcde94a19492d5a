"""Nothing in F5 loading or synthesis touches the network, even with HF_HUB_OFFLINE unset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from f5tiny import tiny_dir

GUARD = r"""
import json, socket, sys
attempts = []

def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request",
                 "http.client.connect"):
        attempts.append([event, repr(args)[:200]])
        raise OSError(f"network blocked by test: {event}")

sys.addaudithook(hook)

from pathlib import Path
from ishowttsd import config
from ishowttsd.engine import create_engine
from ishowttsd.engine.base import CancelToken

settings = config.load(Path(sys.argv[1]))
engine, why = create_engine(*config.engine_sections(settings))
engine.load(lambda m: None)
engine.warmup(lambda m: None)
pcm = [c.pcm for c in engine.synthesize("Hello chat, no network needed here. Second sentence.", None, CancelToken())]
during = list(attempts)
# Prove the guard is live: a real attempt must be seen and refused.
try:
    socket.create_connection(("huggingface.co", 443), timeout=2)
except OSError:
    pass
print(json.dumps({"why": why, "chunks": len(pcm), "during": during, "after": attempts[len(during):]}))
"""


def test_load_and_synthesis_make_no_network_attempt(tmp_path: os.PathLike[str]) -> None:
    d = tiny_dir()
    cfg = tmp_path / "c.toml"  # type: ignore[operator]
    cfg.write_text(
        '[engine]\nkind = "auto"\n' + (d / "f5.toml").read_text().replace("[f5]", '[f5]\nwarmup = "first"', 1)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env["HOME"] = str(tmp_path)  # no cached Hub token or files to fall back on
    r = subprocess.run(
        [sys.executable, "-c", GUARD, str(cfg)], capture_output=True, text=True, timeout=240, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["why"].startswith("f5:")
    assert out["chunks"] >= 2
    assert out["during"] == []
    assert out["after"], "the audit hook did not see a deliberate connection: the guard is not working"
