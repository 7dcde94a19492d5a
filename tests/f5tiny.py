"""Shared by the F5 tests: one ``ishowtts-models tiny`` directory per test process."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

_DIR: Path | None = None


def tiny_dir() -> Path:
    """A tiny random F5 model + Vocos + voice, written once by the product's own ``write_tiny``."""
    global _DIR
    if _DIR is None:
        from ishowttsd.engine.f5.tiny import write_tiny

        d = Path(tempfile.mkdtemp(prefix="f5tiny-"))
        atexit.register(shutil.rmtree, d, True)
        write_tiny(d / "m", seed=0)
        _DIR = d / "m"
    return _DIR


def f5_doc(**f5: Any) -> dict[str, Any]:
    """A config document with the tiny model's [f5] and [[voices]], plus ``f5`` overrides."""
    import tomlkit

    doc = tomlkit.parse((tiny_dir() / "f5.toml").read_text()).unwrap()
    doc["f5"].update(f5)
    return doc
