"""The way out: the hand-off from any thread to the I/O thread, and the sending of what it holds.

ZeroMQ sockets are not thread-safe, so threads that make events or audio put them on a
queue and ring a bell (:class:`Outbox`): an inproc PUSH socket (one per producing thread, behind
a lock) whose PULL end sits in the I/O loop's poller, so the loop wakes at once instead of
polling. On the I/O thread, :class:`Sender` drains it onto the PUB and the control ROUTER
(:mod:`ishowttsd.daemon.sockets` binds them and reads what comes in): every outbound frame,
queued or a direct reply, leaves through it, the queued ones first, so the wire carries
events in the order they were made.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import zmq

from ishowttsd import log, protocol
from ishowttsd.events import Event, Pcm

_log = log.get(__name__)


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


class Sender:
    """The I/O thread's end of the :class:`Outbox`: it alone sends on the PUB and the control
    ROUTER (only the I/O thread may call it)."""

    def __init__(self, outbox: Outbox, pub: zmq.Socket[Any], control: zmq.Socket[Any]) -> None:
        self.outbox = outbox
        self.pub = pub
        self.control = control
        self.dropped = 0
        """Frames dropped at a slow reader's high-water mark (never stall the loop)."""
        self._answered: set[str] = set()
        """Jobs of single-reply (REQ-style) peers whose one reply has gone out."""

    def flush(self) -> None:
        """Send everything the outbox holds, in order."""
        for item in self.outbox.drain():
            try:
                if isinstance(item, PcmOut):
                    self._send_pcm(item)
                else:
                    self._send_event(item)
            except Exception:  # one unsendable event must not take the I/O loop down
                _log.exception("outbound message failed", kind=type(item).__name__)

    def _send_event(self, ev: EventOut) -> None:
        if ev.publish:
            self.publish_event(ev.payload)
        if ev.peer is None:
            return
        job = str(ev.payload.get("job"))
        if ev.single_reply:
            # REQ-style peers get exactly one reply: the ack, or with 'wait' the outcome.
            if ev.terminal:
                if job in self._answered:
                    self._answered.discard(job)
                    return
            elif ev.wait or job in self._answered:
                return
            else:
                self._answered.add(job)
            self.reply(ev.peer, [b""], ev.payload)
            return
        self.reply(ev.peer, list(ev.envelope), ev.payload)

    def _send_pcm(self, item: PcmOut) -> None:
        header = protocol.encode(item.header)
        if item.publish:
            self._send(self.pub, [protocol.pcm_topic(item.job), header, item.payload])
        if item.peer is not None:
            ev = protocol.encode(Pcm(header=item.header).to_json())
            self._send(self.control, [item.peer, ev, item.payload])

    def publish(self, event: Event) -> None:
        """Publish one event on the PUB ``event`` topic (after the job events made before it)."""
        self.flush()
        self.publish_event(event.to_json())

    def publish_event(self, payload: dict[str, Any]) -> None:
        self._send(self.pub, [protocol.EVENT_TOPIC, protocol.encode(payload)])

    def reply(self, peer: bytes, envelope: list[bytes], payload: dict[str, Any]) -> None:
        """A reply to one control peer (``envelope``: the REQ delimiter, if it needs one)."""
        self._send(self.control, [peer, *envelope, protocol.encode(payload)])

    def _send(self, sock: zmq.Socket[Any], frames: list[bytes]) -> None:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1  # a slow reader at its high-water mark: drop, never stall
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:  # the client went away: nothing to tell
                raise
