"""The daemon's runtime: ``ishowttsd`` (the entry point ``ishowttsd.daemon:main``, and
``python -m ishowttsd.daemon``).

Modules: :mod:`~ishowttsd.daemon.lifecycle` (the Daemon, its signals, ``main``),
:mod:`~ishowttsd.daemon.sockets` (the ZeroMQ sockets and the I/O loop), :mod:`~ishowttsd.daemon.outbox`
(worker → I/O hand-off), :mod:`~ishowttsd.daemon.scheduler` (jobs and the queue),
:mod:`~ishowttsd.daemon.worker` (the engine's thread), :mod:`~ishowttsd.daemon.watchdog`,
:mod:`~ishowttsd.daemon.journal` (with :mod:`~ishowttsd.daemon.journal_repair`, its salvage),
:mod:`~ishowttsd.daemon.admission` (chat lines and ``say``
requests into the queue, job events out), :mod:`~ishowttsd.daemon.moderation` and
:mod:`~ishowttsd.daemon.faults` (the ``[debug]`` knobs).

``main`` imports the runtime when called, so that :mod:`ishowttsd.config` can read the
``[watchdog]`` table from here without importing the whole daemon.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon in the foreground; returns its exit status (see ``lifecycle``)."""
    from ishowttsd.daemon.lifecycle import main as run

    return run(argv)


__all__ = ["main"]
