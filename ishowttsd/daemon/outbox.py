"""Hand-off from the worker threads to the I/O thread, which alone owns the ZeroMQ sockets.

ZeroMQ sockets are not thread-safe, so threads that make events or audio put them on a
queue and ring a bell: an inproc PUSH socket (one per producing thread, behind a lock)
whose PULL end sits in the I/O loop's poller, so the loop wakes at once instead of polling.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import zmq


@dataclass(frozen=True)
class EventOut:
    """A job event: to the job's client (if any) and to the PUB ``event`` topic."""

    payload: dict[str, Any]
    peer: bytes | None = None
    single_reply: bool = False
    terminal: bool = False
    wait: bool = False
    """A single-reply peer that asked to be answered with the outcome, not the acknowledgement."""
    publish: bool = True
    envelope: tuple[bytes, ...] = ()
    """A reply that is not about a job (``reload_voices``): the REQ delimiter, if the peer needs one."""


@dataclass(frozen=True)
class PcmOut:
    """One block of a job's audio: to the PUB (if the pcm sink is on) and/or its client."""

    job: str
    header: dict[str, Any]
    payload: bytes
    publish: bool
    peer: bytes | None = None


class Outbox:
    WAKE_ENDPOINT = "inproc://ishowttsd-outbox"

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self._ctx = ctx
        self._q: queue.SimpleQueue[EventOut | PcmOut] = queue.SimpleQueue()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._bells: list[zmq.Socket[Any]] = []
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(self.WAKE_ENDPOINT)

    def put(self, item: EventOut | PcmOut) -> None:
        self._q.put(item)
        bell: zmq.Socket[Any] | None = getattr(self._local, "bell", None)
        if bell is None:
            with self._lock:
                bell = self._ctx.socket(zmq.PUSH)
                bell.setsockopt(zmq.LINGER, 0)
                bell.setsockopt(zmq.SNDHWM, 1)
                bell.connect(self.WAKE_ENDPOINT)
                self._bells.append(bell)
            self._local.bell = bell
        try:
            bell.send(b"", zmq.NOBLOCK)
        except zmq.Again:
            pass  # a ring is already pending: the loop will drain everything queued

    def drain(self) -> list[EventOut | PcmOut]:
        """Called by the I/O thread: clear the bells and return everything queued, in order."""
        while True:
            try:
                self.pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        items: list[EventOut | PcmOut] = []
        while True:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        with self._lock:
            for b in self._bells:
                b.close(0)
            self._bells.clear()
        self.pull.close(0)
