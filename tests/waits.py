"""Waiting on a condition with a deadline, the one way the tests wait for something to happen.

A fixed ``time.sleep`` before an assertion is either too short on a loaded machine (a flaky
test) or too long everywhere else (a slow suite). :func:`wait_until` polls the observable
condition instead and fails with what it was waiting for, so the test is as fast as the daemon
and says why when it is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    cond: Callable[[], T],
    timeout_s: float,
    what: str,
    detail: Callable[[], object] | None = None,
    poll_s: float = 0.05,
) -> T:
    """Call ``cond`` until it returns a truthy value, and return that value.

    ``what`` names the condition for the failure message ("the daemon to reload"); ``detail``,
    called only on failure, adds what the test can show about why (a log tail, the last status).
    ``cond`` may block for a while itself (a socket poll): the deadline is checked between calls.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            more = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{more}")
        time.sleep(poll_s)
