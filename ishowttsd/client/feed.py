"""An async feed of the daemon's PCM PUB (audio frames and the ``event`` topic), fanned out.

One ZeroMQ SUB per process, however many consumers (overlay pages, Wyoming clients) read it:
each :meth:`Feed.subscribe` gets its own bounded queue. A consumer that stops reading (a
WebSocket whose peer never reads) costs at most its queue's bound: what does not fit is dropped
for that consumer alone, and counted (:attr:`Subscription.drops`); the others and the daemon
never wait for it. ZeroMQ reconnects by itself when the daemon restarts (ipc or tcp); a socket
monitor turns the link going down and up into :class:`Link` items, so a consumer can drop the
audio of a job whose end will never come.

Frames are passed on as the daemon sent them (the header's JSON bytes and the payload are kept,
so a gateway forwards them without re-encoding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ishowttsd import log
from ishowttsd.security import CurveKeys, apply_client

_log = log.get(__name__)

DEFAULT_QUEUE = 256
"""Items a consumer may fall behind by (at most 256 × 0.25 s frames ≈ 3 MB of 24 kHz audio)."""


@dataclass(frozen=True)
class PcmFrame:
    """One frame of a job's audio (``pcm/<job>`` topic)."""

    job: str
    seq: int
    rate: int
    """Hertz."""
    final: bool
    """The job's last frame (empty payload)."""
    cancelled: bool
    """On a final frame: the job was cut short; drop what is buffered of it."""
    header: bytes
    """The header JSON as the daemon sent it."""
    payload: bytes
    """Signed 16-bit little-endian mono samples."""

    @property
    def samples(self) -> int:
        return len(self.payload) // 2


@dataclass(frozen=True)
class FeedEvent:
    """One message of the ``event`` topic (job events, ``ready``, ``paused``, …)."""

    name: str
    data: dict[str, Any]
    raw: bytes
    """The JSON as the daemon sent it."""

    @property
    def job(self) -> str | None:
        j = self.data.get("job")
        return j if isinstance(j, str) else None


@dataclass(frozen=True)
class Link:
    """The connection to the daemon's PUB went up (``up``) or down."""

    up: bool


FeedItem = PcmFrame | FeedEvent | Link


def parse(frames: list[bytes]) -> PcmFrame | FeedEvent | None:
    """A PUB message as a typed item; None for a topic or shape this feed does not know."""
    if len(frames) == 2 and frames[0] == b"event":
        data = json.loads(frames[1])
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            return None
        return FeedEvent(data["event"], data, frames[1])
    if len(frames) == 3 and frames[0].startswith(b"pcm/"):
        h = json.loads(frames[1])
        if not isinstance(h, dict):
            return None
        return PcmFrame(
            job=str(h["job"]),
            seq=int(h["seq"]),
            rate=int(h["rate"]),
            final=bool(h.get("final", False)),
            cancelled=bool(h.get("cancelled", False)),
            header=frames[1],
            payload=frames[2],
        )
    return None


@dataclass(eq=False)
class Subscription:
    """One consumer's view of the feed: a bounded queue; iterate it or :meth:`get`."""

    feed: Feed
    maxsize: int
    drops: int = 0
    """Items dropped because this consumer had ``maxsize`` unread."""
    _q: asyncio.Queue[FeedItem] = field(init=False)

    def __post_init__(self) -> None:
        self._q = asyncio.Queue(self.maxsize)

    def offer(self, item: FeedItem) -> None:
        try:
            self._q.put_nowait(item)
        except asyncio.QueueFull:
            if not self.drops:
                _log.warning("a feed consumer is not reading; dropping its items", maxsize=self.maxsize)
            self.drops += 1

    @property
    def pending(self) -> int:
        return self._q.qsize()

    async def get(self) -> FeedItem:
        return await self._q.get()

    def __aiter__(self) -> AsyncIterator[FeedItem]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[FeedItem]:
        while True:
            yield await self._q.get()

    def close(self) -> None:
        self.feed.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Feed:
    """The daemon's PUB, read once, fanned out to every :class:`Subscription`."""

    def __init__(
        self,
        endpoint: str,
        keys: CurveKeys | None = None,
        ctx: zmq.asyncio.Context | None = None,
        topics: tuple[bytes, ...] = (b"pcm/", b"event"),
        rcvhwm: int = 10000,
    ) -> None:
        self.endpoint = endpoint
        self._keys = keys
        self._own_ctx = ctx is None
        self._ctx = ctx or zmq.asyncio.Context()
        self._topics = topics
        self._rcvhwm = rcvhwm
        self._subs: set[Subscription] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sock: zmq.asyncio.Socket | None = None
        self.rate: int | None = None
        """The sample rate of the last audio frame seen (Hertz)."""
        self.connected = False
        self.frames = 0
        self.events = 0
        self.bad = 0
        """Messages that could not be parsed (logged, skipped)."""

    # -- consumers -----------------------------------------------------------------------------
    def subscribe(self, maxsize: int = DEFAULT_QUEUE) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _fan_out(self, item: FeedItem) -> None:
        for sub in list(self._subs):
            sub.offer(item)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (ZeroMQ connects in the background and keeps reconnecting) and start reading."""
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        for t in self._topics:
            sock.setsockopt(zmq.SUBSCRIBE, t)
        if self._keys is not None:
            apply_client(sock, self._keys)
        monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        sock.connect(self.endpoint)
        self._sock = sock
        self._tasks = [
            asyncio.create_task(self._read(sock), name="feed-read"),
            asyncio.create_task(self._watch(sock, monitor), name="feed-monitor"),
        ]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self._sock.close(0)
            self._sock = None
        if self._own_ctx:
            self._ctx.term()

    async def __aenter__(self) -> Feed:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- tasks ---------------------------------------------------------------------------------
    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                item = parse(frames)
            except (ValueError, KeyError, TypeError) as e:
                self.bad += 1
                topic = frames[0][:40].decode(errors="replace")
                _log.warning("bad message on the pcm feed", topic=topic, error=str(e))
                continue
            if item is None:
                continue
            if isinstance(item, PcmFrame):
                self.frames += 1
                if item.rate > 0:
                    self.rate = item.rate
            else:
                self.events += 1
            self._fan_out(item)

    async def _watch(self, sock: zmq.asyncio.Socket, monitor: zmq.asyncio.Socket) -> None:
        try:
            while True:
                msg = parse_monitor_message(await monitor.recv_multipart())
                ev = msg["event"]
                if ev == zmq.EVENT_CONNECTED and not self.connected:
                    self.connected = True
                    _log.info("pcm feed connected", endpoint=self.endpoint)
                    self._fan_out(Link(True))
                elif ev == zmq.EVENT_DISCONNECTED and self.connected:
                    self.connected = False
                    _log.info("pcm feed lost the daemon; reconnecting", endpoint=self.endpoint)
                    self._fan_out(Link(False))
        finally:
            monitor.close(0)
