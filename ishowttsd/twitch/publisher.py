"""Publishing to the daemon's ingest SUB without ever blocking on it.

The socket is an XPUB (wire-compatible with PUB: the daemon's SUB cannot tell) because an XPUB
*sees subscriptions*, which is how we know whether the daemon is there. Measured with pyzmq 27 /
libzmq 4.3.5 on a connecting socket:

- plain PUB, default options: while the daemon is away a message is dropped silently, or --
  once it had been connected -- queued to the HWM and delivered late, when it comes back;
- ``IMMEDIATE=1``: the pipe goes away with the daemon, the XPUB receives the unsubscription, and
  nothing is queued for a peer that is not there;
- ``XPUB_NODROP=1`` + ``NOBLOCK``: a full pipe (daemon alive but not reading) raises ``EAGAIN``
  instead of dropping silently.

So every drop is seen and counted with its reason: ``daemon_away`` (no subscriber for the topic)
or ``hwm`` (the daemon is connected but ``hwm`` messages behind).

A line read while the daemon's subscription is missing is *held*, not dropped, for up to
``hold_s`` seconds (and at most ``hwm`` lines), and sent in order as soon as the subscription
arrives. That closes the slow-joiner gap at start (the bridge joins the channel and reads its
first line before the daemon's SUB subscription has reached our XPUB: 1 start in 5 lost its first
line) and rides out a short daemon restart; a line held longer is dropped as ``daemon_away``
(counted and logged), since chat read aloud late is worse than chat not read.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import zmq

from ishowttsd import log, security
from ishowttsd.protocol import encode

_log = log.get(__name__)

DROP_LOG_EVERY_S = 10.0
"""While drops go on, one summary line per this many seconds (the first drop is logged at once)."""


class Publisher:
    def __init__(
        self,
        endpoint: str,
        hwm: int = 1000,
        ctx: zmq.Context[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        curve: security.CurveKeys | None = None,
        hold_s: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        self.hold_s = hold_s
        """Seconds a line may wait for the daemon's subscription (0: drop at once)."""
        self._hwm = hwm
        self._held: deque[tuple[float, bytes, dict[str, Any]]] = deque()
        self._ctx = ctx or zmq.Context.instance()
        self._clock = clock
        s = self._ctx.socket(zmq.XPUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.IMMEDIATE, 1)
        s.setsockopt(zmq.XPUB_NODROP, 1)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if curve is not None:
            security.apply_client(s, curve)  # a tcp:// ingest: the daemon admits only CURVE clients
        s.connect(endpoint)
        self._sock: zmq.Socket[Any] = s
        self._subs: set[bytes] = set()
        self.published: Counter[str] = Counter()
        """Messages handed to ZeroMQ, by topic."""
        self.dropped: Counter[str] = Counter()
        """Messages dropped, by reason (``daemon_away``, ``hwm``)."""
        self._pending_drops: Counter[str] = Counter()
        self._last_drop_log = -1e18
        self._was_up = False
        self.held_total = 0
        """Lines that had to wait for the daemon's subscription (sent or dropped later)."""

    # -- subscriptions -----------------------------------------------------------------------------
    def poll_subscriptions(self) -> None:
        """Read (un)subscriptions the daemon's SUB sent; cheap, call it before sending and on each tick."""
        while True:
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if not frame:
                continue
            if frame[0] == 1:
                self._subs.add(frame[1:])
            elif frame[0] == 0:
                self._subs.discard(frame[1:])
        up = bool(self._subs)
        self._release_held()
        if up != self._was_up:
            self._was_up = up
            if up:
                _log.info(
                    "daemon connected", endpoint=self.endpoint, dropped_total=sum(self.dropped.values())
                )
                self._flush_drop_log(force=True)
            else:
                _log.warning(
                    "daemon went away; chat waits for it, then is dropped until it is back",
                    endpoint=self.endpoint,
                    hold_s=self.hold_s,
                )

    def connected(self, topic: bytes = b"chat") -> bool:
        """True when the daemon has a subscription that matches ``topic``."""
        return any(topic.startswith(p) for p in self._subs)

    # -- sending -------------------------------------------------------------------------------------
    def publish(self, topic: bytes, body: dict[str, Any]) -> bool:
        """Send ``[topic, JSON]`` now, hold it for the daemon's subscription (``hold_s``), or drop it
        (counted, logged); never blocks. True if sent or held."""
        self.poll_subscriptions()
        if self._subs and not self.connected(topic):
            self._drop("daemon_away", topic)  # the daemon is there but does not take this topic
            return False
        if self._subs and not self._held:
            return self._send(topic, body)
        if self.hold_s <= 0:
            self._drop("daemon_away", topic)
            return False
        if len(self._held) >= self._hwm:
            self._drop("daemon_away", self._held.popleft()[1])
        self._held.append((self._clock(), topic, body))
        self.held_total += 1
        self._release_held()
        return True

    @property
    def held(self) -> int:
        """Lines waiting for the daemon's subscription now."""
        return len(self._held)

    def _release_held(self) -> None:
        """Send held lines, oldest first, while their topic is subscribed; drop the expired ones."""
        now = self._clock()
        while self._held:
            t, topic, body = self._held[0]
            if self._subs:
                self._held.popleft()
                if not self.connected(topic):
                    self._drop("daemon_away", topic)
                elif not self._send(topic, body):
                    break  # hwm (counted): the rest wait in order for the next poll
            elif now - t > self.hold_s:
                self._held.popleft()
                self._drop("daemon_away", topic)
            else:
                break

    def _send(self, topic: bytes, body: dict[str, Any]) -> bool:
        try:
            self._sock.send_multipart([topic, encode(body)], zmq.NOBLOCK)
        except zmq.Again:
            self._drop("hwm", topic)
            return False
        self.published[topic.decode()] += 1
        return True

    def _drop(self, reason: str, topic: bytes) -> None:
        self.dropped[reason] += 1
        self._pending_drops[reason] += 1
        self._flush_drop_log()

    def _flush_drop_log(self, force: bool = False) -> None:
        if not self._pending_drops:
            return
        now = self._clock()
        if force or now - self._last_drop_log >= DROP_LOG_EVERY_S:
            _log.warning(
                "dropped messages for the daemon",
                since_last_report=dict(self._pending_drops),
                total=dict(self.dropped),
                endpoint=self.endpoint,
            )
            self._pending_drops.clear()
            self._last_drop_log = now

    def tick(self) -> None:
        """Housekeeping from the main loop: subscriptions, and the pending drop summary."""
        self.poll_subscriptions()
        self._flush_drop_log()

    def close(self) -> None:
        while self._held:  # still waiting for a daemon that never came: counted, not lost silently
            self._drop("daemon_away", self._held.popleft()[1])
        self._flush_drop_log(force=True)
        self._sock.close(0)
