"""``ishowtts-models``: put F5-TTS weights where the daemon looks for them.

``fetch`` downloads F5TTS_v1_Base and Vocos (pinned revisions, verified sizes and SHA-256) into
the state directory (needs network; run it on a connected box and copy the folder over);
``tiny DIR`` writes a small random model plus ``DIR/f5.toml`` for smoke tests without weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ishowttsd import log, paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="ishowtts-models", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download F5TTS_v1_Base + Vocos into the state directory (verified)")
    f.add_argument("--dir", type=Path, default=None, help="models folder (default: <state dir>/models)")
    t = sub.add_parser("tiny", help="write a small random F5 model and DIR/f5.toml (smoke tests)")
    t.add_argument("dir", type=Path)
    t.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    log.configure("warning")
    if args.cmd == "fetch":
        from ishowttsd.engine.f5.fetch import FetchError, fetch

        target = args.dir or paths.state_dir() / "models"
        try:
            fetch(target)
        except FetchError as e:
            print(f"ishowtts-models: {e}", file=sys.stderr)
            return 1
        except Exception as e:  # huggingface_hub/httpx errors have no common base we could name
            print(f"ishowtts-models: download failed ({type(e).__name__}): {e}", file=sys.stderr)
            return 1
        print(f"models ready in {target}")
        return 0
    from ishowttsd.engine.f5.tiny import write_tiny

    toml = write_tiny(args.dir, seed=args.seed)
    print(toml)
    return 0


if __name__ == "__main__":
    sys.exit(main())
