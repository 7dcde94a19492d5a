"""Logging set-up: one structlog configuration, made once at each entry point."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(level: str = "info", fmt: str = "console") -> None:
    """Route structlog (and stdlib logging) to stderr as key=value or JSON lines.

    stderr, never stdout: under systemd both go to the journal, and for the CLI tools stdout
    carries their results (``--json`` events), which log lines must not corrupt.
    """
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        # Look sys.stderr up at each logger's creation (caching is off), not once here: tests and
        # tools that swap stderr must not leave loggers writing to a closed stream.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _stderr_logger(*args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(file=sys.stderr)


def get(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
