"""``client.aio.within``: a deadline on an await that never drops the caller's cancellation.

``asyncio.wait_for`` before Python 3.12 returns the result when the awaited thing completes in
the same loop tick as the caller is cancelled (CPython issue #86296). A Wyoming client that
disconnected just as the daemon answered ``queued`` was lost that way, and its job was
synthesised to the end for nobody."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ishowttsd.client.aio import within


def cancelled_in_the_same_tick(wait: Callable[[Awaitable[Any], float], Awaitable[Any]]) -> str:
    """Cancel a task waiting through ``wait`` in the very tick its future gets a result."""

    async def main() -> str:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        went_on: list[bool] = []

        async def waiter() -> None:
            await wait(asyncio.shield(fut), 10.0)
            went_on.append(True)

        task = asyncio.create_task(waiter())
        for _ in range(3):
            await asyncio.sleep(0)  # the waiter is inside ``wait`` now
        fut.set_result(1)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "went on" if went_on else "neither"

    return asyncio.run(main())


def test_a_cancellation_in_the_tick_the_result_arrives_is_kept() -> None:
    assert cancelled_in_the_same_tick(within) == "cancelled"


def test_results_errors_and_timeouts_pass_through() -> None:
    async def main() -> None:
        async def value() -> int:
            await asyncio.sleep(0.01)
            return 7

        async def boom() -> None:
            raise ValueError("from inside")

        assert await within(value(), 1.0) == 7
        assert await within(value(), None) == 7
        with pytest.raises(ValueError, match="from inside"):
            await within(boom(), 1.0)
        slow = asyncio.ensure_future(asyncio.sleep(5))
        with pytest.raises(asyncio.TimeoutError):
            await within(slow, 0.05)
        await asyncio.sleep(0)
        assert slow.cancelled()  # what timed out does not run on

    asyncio.run(main())
