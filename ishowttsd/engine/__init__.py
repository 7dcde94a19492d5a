"""Speech engines behind one interface, and the choice between them.

Heavy engines are imported lazily here so that the daemon's I/O side, the CLI tools and
the tests of plain code never load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ishowttsd.engine.base import Engine, StartupError

if TYPE_CHECKING:  # config imports engine.f5.settings: a runtime import here would be circular
    from ishowttsd.config import Settings

__all__ = ["Engine", "StartupError", "create_engine"]


def create_engine(settings: Settings) -> tuple[Engine, str]:
    """Build (not load) the configured engine; the string says which one and why."""
    kind = settings.engine.kind
    if kind == "piper":
        return _piper(settings), "piper: [engine] kind = 'piper'"
    if kind == "f5":
        return _f5(settings), "f5: [engine] kind = 'f5'"
    from ishowttsd.engine.f5.settings import availability

    ok, why = availability(settings.f5, settings.voices)
    if ok:
        return _f5(settings), f"f5: [engine] kind = 'auto' and {why}"
    return _piper(settings), f"piper: [engine] kind = 'auto' and {why}"


def _f5(settings: Settings) -> Engine:
    try:
        from ishowttsd.engine.f5.engine import F5Engine
    except ImportError as e:  # torch / f5-tts / vocos missing: a startup error naming the package
        raise StartupError(f"[engine] kind = 'f5' needs torch, f5-tts and vocos: {e}") from e
    return F5Engine(settings)


def _piper(settings: Settings) -> Engine:
    from ishowttsd.engine.piper_engine import PiperEngine

    return PiperEngine(settings)
