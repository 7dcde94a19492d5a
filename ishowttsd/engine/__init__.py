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
        raise StartupError(
            "[engine] kind = 'f5' but this build has no F5 engine; set kind = 'piper' or 'auto'"
        )
    return _piper(settings), "piper: [engine] kind = 'auto' and no F5 engine is available"


def _piper(settings: Settings) -> Engine:
    from ishowttsd.engine.piper_engine import PiperEngine

    return PiperEngine(settings)
