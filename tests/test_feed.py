"""The async PCM/event feed: typed items, fan-out with bounded per-consumer queues, and a feed that
keeps working across a daemon restart (real daemon, real ZeroMQ)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

from ishowttsd.client.feed import Feed, FeedEvent, FeedItem, Link, PcmFrame, Subscription
from tests.support import PROBE, Daemon, running_daemon


async def _until(sub: Subscription, pred: object, timeout_s: float = 30.0) -> list[FeedItem]:
    """Read ``sub`` until an item matches ``pred``; return everything read."""
    got: list[FeedItem] = []
    deadline = time.monotonic() + timeout_s
    while True:
        item = await asyncio.wait_for(sub.get(), max(0.01, deadline - time.monotonic()))
        got.append(item)
        if pred(item):  # type: ignore[operator]
            return got


async def _joined(d: Daemon, reader: Subscription, timeout_s: float = 10.0) -> list[FeedItem]:
    """Wait until the feed's subscription has reached the daemon's PUB (a SUB hears nothing sent
    before it arrives): publish probes (a moderator's delete of an id no line has) until one is
    heard; return everything read meanwhile."""
    got: list[FeedItem] = []
    deadline = time.monotonic() + timeout_s
    probes = itertools.count()
    while True:
        assert time.monotonic() < deadline, f"the feed did not hear the daemon's PUB: {got}"
        d.request({"op": "moderate", "action": "delete", "id": f"{PROBE}{next(probes)}"})
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(item := await asyncio.wait_for(reader.get(), 0.1))
                if isinstance(item, FeedEvent) and item.name == "moderation":
                    return got


def _done(job: str) -> object:
    return lambda i: isinstance(i, FeedEvent) and i.name == "done" and i.job == job


def test_fan_out_bounded_and_across_a_daemon_restart() -> None:
    with running_daemon() as d:

        async def main() -> None:
            async with Feed(d.pcm_endpoint) as feed:
                reader = feed.subscribe()
                stuck = feed.subscribe(maxsize=4)  # a consumer that never reads
                seen = len(await _until(reader, lambda i: isinstance(i, Link) and i.up, 10))
                seen += len(await _joined(d, reader))
                job = d.request({"op": "say", "text": "One, two, three. Four, five, six."})["job"]
                got = await _until(reader, _done(job))
                frames = [i for i in got if isinstance(i, PcmFrame) and i.job == job]
                assert [f.seq for f in frames] == list(range(len(frames)))
                assert frames[-1].final and not frames[-1].cancelled
                assert sum(f.samples for f in frames) > 22050
                assert feed.rate == 22050
                names = [i.name for i in got if isinstance(i, FeedEvent) and i.job == job]
                assert names[0] == "queued" and names[-1] == "done"
                assert stuck.pending == 4
                assert stuck.drops == seen + len(got) - 4  # all it was offered but 4
                assert reader.drops == 0
                stuck.close()
                assert feed.subscribers == 1

                # the daemon restarts: the link goes down and up, and the next line comes through
                d.stop()
                await _until(reader, lambda i: isinstance(i, Link) and not i.up, 10)
                d.start()
                await _until(reader, lambda i: isinstance(i, Link) and i.up, 30)
                d.wait_ready()
                await _joined(d, reader)
                job = d.request({"op": "say", "text": "Back again."})["job"]
                got = await _until(reader, _done(job))
                assert any(isinstance(i, PcmFrame) and i.job == job and i.samples for i in got)

        asyncio.run(main())
