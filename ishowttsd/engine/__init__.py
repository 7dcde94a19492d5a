"""Speech engines behind one interface, and the choice between them.

Heavy engines are imported lazily here so that the daemon's I/O side, the CLI tools and
the tests of plain code never load torch. Each engine takes only its own settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ishowttsd.engine.base import Engine, StartupError
from ishowttsd.engine.f5.settings import F5Settings, VoiceSettings
from ishowttsd.engine.settings import EngineSettings, PiperSettings

__all__ = ["Engine", "StartupError", "create_engine"]


def create_engine(
    engine: EngineSettings,
    f5: F5Settings,
    voices: Sequence[VoiceSettings],
    piper: PiperSettings,
    cache_dir: Path,
) -> tuple[Engine, str]:
    """Build (not load) the configured engine; the string says which one and why."""
    kind = engine.kind
    if kind == "piper":
        return _piper(piper), "piper: [engine] kind = 'piper'"
    if kind == "f5":
        return _f5(f5, voices, engine.voice, cache_dir), "f5: [engine] kind = 'f5'"
    from ishowttsd.engine.f5.settings import availability

    ok, why = availability(f5, tuple(voices))
    if ok:
        return _f5(f5, voices, engine.voice, cache_dir), f"f5: [engine] kind = 'auto' and {why}"
    return _piper(piper), f"piper: [engine] kind = 'auto' and {why}"


def _f5(
    f5: F5Settings, voices: Sequence[VoiceSettings], default_voice: str | None, cache_dir: Path
) -> Engine:
    try:
        from ishowttsd.engine.f5.engine import F5Engine
    except ImportError as e:  # torch / f5-tts / vocos missing: a startup error naming the package
        raise StartupError(f"[engine] kind = 'f5' needs torch, f5-tts and vocos: {e}") from e
    return F5Engine(f5, voices, default_voice, cache_dir)


def _piper(piper: PiperSettings) -> Engine:
    from ishowttsd.engine.piper_engine import PiperEngine

    return PiperEngine(piper)
