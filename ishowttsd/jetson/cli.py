"""``ishowtts-clocks lock | restore | status [--root DIR]``: the Jetson clock lock.

The work is done in :mod:`ishowttsd.jetson.clocks`.

Run as root by ``ishowtts-clocks.service`` before the daemon starts. Exit status: 0 done (or
not a Jetson: nothing to do), 1 a step or the verification failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ishowttsd import log
from ishowttsd.jetson.clocks import Clocks, Tools, default_state_dir, run_action


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ishowtts-clocks",
        description="Lock a Jetson's GPU/CPU/EMC clocks at the MAXN maximum, restore them, or show them.",
    )
    p.add_argument("action", choices=("lock", "restore", "status"))
    p.add_argument("--root", type=Path, default=Path("/"), help="read every file under DIR (tests)")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the pre-lock clocks are kept (default: $STATE_DIRECTORY or ROOT/var/lib/ishowtts-clocks)",
    )
    p.add_argument(
        "--verify-timeout", type=float, default=3.0, metavar="S", help="seconds to wait for max GPU clock"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.configure(args.log_level)
    root: Path = args.root
    if not root.is_dir():
        print(f"ishowtts-clocks: --root {root}: not a directory", file=sys.stderr)
        return 2
    clocks = Clocks(
        root=root,
        state_dir=args.state_dir or default_state_dir(root),
        tools=Tools(),
        verify_timeout_s=max(0.0, args.verify_timeout),
    )
    report = run_action(args.action, clocks)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
