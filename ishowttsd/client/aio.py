"""An asyncio client of the daemon's control socket (one DEALER, ``zmq.asyncio``).

For processes that serve other protocols on an event loop (the web gateway, the Wyoming server,
the dashboard): many requests share one socket, and one reader task hands each reply to the
request it answers (by the ``req`` token, or for audio frames by the job id).

    async with DaemonClient(endpoint) as daemon:
        if not await daemon.ready():
            ...                                   # warming up (or not running)
        async with daemon.say("Hello chat", play=False) as speech:
            await speech.accepted()               # raises DaemonError: queue_full, unknown_voice, ...
            async for frame in speech:            # PcmFrame: s16le mono at frame.rate, as made
                ...
            print(speech.result)                  # the job's ``done`` event

Errors: :class:`DaemonError` carries the daemon's ``code`` and ``reason``: for an ``error``
event its ``code`` and ``reason``; for ``dropped`` the drop's reason as ``code`` (``queue_full``,
``stale``, ...) and its detail; for ``cancelled`` the code ``cancelled`` and the reason.
:class:`DaemonUnreachable` (a subclass, code ``unreachable``) when no answer came in time.

Memory: each :class:`Speech` buffers at most ``max_buffered_s`` seconds of audio its reader has
not taken yet; past that the job is cancelled and the stream ends with
``DaemonError("slow_reader")``, so a consumer that stops reading cannot grow the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from ishowttsd import paths, protocol, security

_T = TypeVar("_T")


async def within(aw: Awaitable[_T], timeout: float | None) -> _T:
    """``await aw`` for at most ``timeout`` seconds (None: no limit), else ``asyncio.TimeoutError``.

    Not ``asyncio.wait_for``: before Python 3.12 it returns the result and drops a cancellation of
    the caller that lands in the same loop tick as ``aw`` completing (CPython issue #86296). Here
    that lost a Wyoming client's disconnect whenever it came just as the daemon said ``queued``:
    the job was then synthesised to the end for nobody (1 run in ~10 of the test that checks it).
    ``asyncio.wait`` never absorbs the caller's cancellation."""
    if timeout is None:
        return await aw
    fut = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({fut}, timeout=timeout)
    except asyncio.CancelledError:
        if fut.done() and not fut.cancelled():
            fut.exception()  # retrieved: asyncio would log an error nobody is left to see
        fut.cancel()
        raise
    if not done:
        fut.cancel()
        raise asyncio.TimeoutError
    return fut.result()


TERMINAL = ("done", "cancelled", "dropped", "error")


class DaemonError(Exception):
    """The daemon refused or failed a request: ``code`` as in docs/PROTOCOL.md, ``reason`` for people."""

    def __init__(self, code: str, reason: str, event: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.event = event or {}
        """The event that carried the error (empty for client-side errors)."""


class DaemonUnreachable(DaemonError):
    """No answer within the timeout (the daemon is not running, or the endpoint is wrong)."""

    def __init__(self, reason: str) -> None:
        super().__init__("unreachable", reason)


@dataclass(frozen=True)
class PcmFrame:
    """A block of a job's audio (at most 0.25 s), in order."""

    job: str
    seq: int
    rate: int
    """Hertz (22050 for the embedded Piper voice, 24000 for F5-TTS)."""
    samples: bytes
    """Signed 16-bit little-endian mono samples (empty on the final frame)."""
    final: bool

    @property
    def seconds(self) -> float:
        return len(self.samples) / 2 / self.rate if self.rate else 0.0


@dataclass(frozen=True)
class Voice:
    id: str
    engine: str
    language: str | None
    description: str
    sample_rate: int
    """Hertz."""
    default: bool


class Speech:
    """One ``say`` request: an async iterator of its :class:`PcmFrame` (with ``pcm`` or
    ``play=False``), its events in :attr:`events`, its ``done`` event in :attr:`result`.

    Use it as an async context manager: leaving it before the job has finished cancels the job
    (an HTTP client that went away stops costing synthesis)."""

    def __init__(
        self, client: DaemonClient, job: str, request: dict[str, Any], max_buffered_s: float
    ) -> None:
        self._client = client
        self.job = job
        self._request = request
        self._max_buffered_s = max_buffered_s
        self._q: asyncio.Queue[PcmFrame | DaemonError | None] = asyncio.Queue()
        self._buffered_s = 0.0
        self._accepted: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.events: list[dict[str, Any]] = []
        """Every event received for this job, in order (``pcm`` ones without their samples)."""
        self.result: dict[str, Any] | None = None
        """The ``done`` event, once the job has finished."""
        self.finished = False
        self._sent = False

    # -- called by the client's reader -------------------------------------------------------
    def _deliver(self, ev: dict[str, Any], payload: bytes | None) -> None:
        if self.finished:
            return
        self.events.append(ev)
        name = ev.get("event")
        if name == "pcm":
            frame = PcmFrame(
                job=self.job,
                seq=int(ev.get("seq", 0)),
                rate=int(ev.get("rate", 0)),
                samples=payload or b"",
                final=bool(ev.get("final")),
            )
            self._buffered_s += frame.seconds
            if self._buffered_s > self._max_buffered_s:
                self._fail(
                    DaemonError("slow_reader", f"more than {self._max_buffered_s:g} s of audio unread")
                )
                self._client._forget(self)
                self._client._cancel_soon(self.job)
                return
            self._q.put_nowait(frame)
            return
        if name == "queued" and not self._accepted.done():
            self._accepted.set_result(ev)
        if name in TERMINAL:
            if name == "done":
                self.result = ev
                if not self._accepted.done():
                    self._accepted.set_result(ev)
                self.finished = True
                self._q.put_nowait(None)
            elif name == "dropped":  # code: why (queue_full, stale, ...); reason: the detail
                why = str(ev.get("reason") or "dropped")
                self._fail(DaemonError(why, str(ev.get("detail") or why), ev))
            else:
                code = str(ev.get("code") or name)
                self._fail(DaemonError(code, str(ev.get("reason") or name), ev))
            self._client._forget(self)

    def _fail(self, err: DaemonError) -> None:
        self.finished = True
        if not self._accepted.done():
            self._accepted.set_exception(err)
            self._accepted.exception()  # retrieved: no "never retrieved" warning if nobody awaits it
        self._q.put_nowait(err)

    # -- public -------------------------------------------------------------------------------
    async def accepted(self, timeout: float | None = None) -> dict[str, Any]:
        """The ``queued`` event (or ``done`` if it came first); raises :class:`DaemonError` when
        the daemon refused the job (``unknown_voice``, ``text_too_long``, ``queue_full``, ...)."""
        t = self._client.timeout if timeout is None else timeout
        try:
            return await within(asyncio.shield(self._accepted), t)
        except asyncio.TimeoutError:
            raise DaemonUnreachable(f"no answer to say within {t:g} s") from None

    def __aiter__(self) -> AsyncIterator[PcmFrame]:
        return self

    async def __anext__(self) -> PcmFrame:
        try:
            item = await within(self._q.get(), self._client.timeout)
        except asyncio.TimeoutError:
            self._fail(DaemonUnreachable(f"no audio or event for {self._client.timeout:g} s"))
            self._client._forget(self)
            raise DaemonUnreachable(f"no audio or event for {self._client.timeout:g} s") from None
        if item is None:
            self._q.put_nowait(None)  # stays ended for a second loop
            raise StopAsyncIteration
        if isinstance(item, DaemonError):
            self._q.put_nowait(item)
            raise item
        self._buffered_s -= item.seconds
        if item.final:
            # The done event follows the final frame: wait for it, so ``result`` is set.
            nxt = await within(self._q.get(), self._client.timeout)
            if isinstance(nxt, DaemonError):
                self._q.put_nowait(nxt)
                raise nxt
            self._q.put_nowait(None)
        return item

    async def cancel(self) -> None:
        """Cancel the job (no-op once finished)."""
        if not self.finished:
            await self._client.cancel(self.job)

    async def __aenter__(self) -> Speech:
        if not self._sent:
            self._sent = True
            await self._client._send(self._request)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.finished:
            self.finished = True
            self._client._forget(self)
            with contextlib.suppress(DaemonError, zmq.ZMQError):
                await self._client.cancel(self.job, timeout=1.0)


class DaemonClient:
    """The daemon's control socket for asyncio code. Safe to share between tasks of one loop.

    ``endpoint``: default ``$ISHOWTTS_CONTROL`` or the runtime dir's ``control.sock``;
    ``curve``: client keys for a tcp:// endpoint (see docs/SECURITY.md); ``timeout``: seconds to
    wait for any one answer (and between a job's events); ``max_buffered_s``: unread audio a
    :class:`Speech` may hold before its job is cancelled (seconds)."""

    def __init__(
        self,
        endpoint: str = "",
        curve: security.CurveKeys | None = None,
        timeout: float = 30.0,
        max_buffered_s: float = 120.0,
    ) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.timeout = timeout
        self.max_buffered_s = max_buffered_s
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        """Replies awaited, by ``req`` token."""
        self._speeches: dict[str, Speech] = {}
        """``say`` requests not finished, by job id (their ``req`` token is the job id too)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._counter = itertools.count()
        self._prefix = os.urandom(4).hex()

    def __repr__(self) -> str:
        return f"DaemonClient({self.endpoint!r}, timeout={self.timeout})"

    # -- lifecycle -------------------------------------------------------------------------------
    async def connect(self) -> DaemonClient:
        if self._sock is not None:
            return self
        self.endpoint = self.endpoint or paths.control_endpoint()
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        if self.curve is not None:
            security.apply_client(sock, self.curve)
        sock.connect(self.endpoint)
        self._sock = sock
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="daemon-reader")
        return self

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for t in list(self._tasks):
            t.cancel()
        err = DaemonUnreachable("client closed")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
                fut.exception()
        self._pending.clear()
        for s in list(self._speeches.values()):
            s._fail(err)
        self._speeches.clear()
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def __aenter__(self) -> DaemonClient:
        return await self.connect()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- requests ---------------------------------------------------------------------------------
    def _token(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"

    async def _send(self, obj: dict[str, Any]) -> None:
        if self._sock is None:
            await self.connect()
        assert self._sock is not None
        await self._sock.send(protocol.encode(obj))

    async def request(self, op: str, timeout: float | None = None, **fields: str | bool) -> dict[str, Any]:
        """Send one control op and return its reply (an ``error`` reply raises :class:`DaemonError`)."""
        token = self._token()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        t = self.timeout if timeout is None else timeout
        try:
            await self._send({"op": op, "req": token, **fields})
            reply = await within(fut, t)
        except asyncio.TimeoutError:
            raise DaemonUnreachable(f"no answer to {op!r} within {t:g} s from {self.endpoint}") from None
        finally:
            self._pending.pop(token, None)
        if reply.get("event") == "error":
            raise DaemonError(str(reply.get("code")), str(reply.get("reason")), reply)
        return reply

    async def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """The ``pong`` reply: ``ready`` is false while the engine warms up."""
        return await self.request("ping", timeout)

    async def ready(self, timeout: float = 2.0) -> bool:
        """Whether the daemon answers and is warm (False when it does not answer in ``timeout``)."""
        try:
            return bool((await self.ping(timeout)).get("ready"))
        except DaemonUnreachable:
            return False

    async def status(self) -> dict[str, Any]:
        """The ``status`` object (see docs/PROTOCOL.md)."""
        return await self.request("status")

    async def voices(self) -> list[Voice]:
        reply = await self.request("voices")
        return [
            Voice(
                id=str(v["id"]),
                engine=str(v.get("engine", "")),
                language=v.get("language"),
                description=str(v.get("description", "")),
                sample_rate=int(v.get("sample_rate", 0)),
                default=bool(v.get("default", False)),
            )
            for v in reply.get("voices", [])
        ]

    async def pause(self) -> None:
        await self.request("pause")

    async def resume(self) -> None:
        await self.request("resume")

    async def stop(self, job: str | None = None) -> list[str]:
        """Stop the job being spoken (only if it is ``job``); the ids stopped."""
        reply = await self.request("stop", None, **({"id": job} if job else {}))
        return [str(j) for j in reply.get("jobs", [])]

    async def cancel(self, job: str | None = None, timeout: float | None = None) -> list[str]:
        """Cancel ``job`` (also a private one), or without it the speech and the speaker's queue."""
        reply = await self.request("cancel", timeout, **({"id": job} if job else {}))
        return [str(j) for j in reply.get("jobs", [])]

    def say(
        self,
        text: str,
        *,
        voice: str | None = None,
        priority: str = "message",
        play: bool = True,
        pcm: bool = False,
        job: str | None = None,
    ) -> Speech:
        """A ``say`` request, sent when the returned :class:`Speech` is entered. ``play=False``:
        synthesised for this client only (its audio comes back, nothing is played or published);
        ``pcm=True``: a played job's audio comes back too."""
        job_id = job or protocol.new_job_id()
        obj: dict[str, Any] = {"op": "say", "text": text, "priority": priority, "id": job_id, "req": job_id}
        if voice is not None:
            obj["voice"] = voice
        if not play:
            obj["play"] = False
        if pcm:
            obj["pcm"] = True
        speech = Speech(self, job_id, obj, self.max_buffered_s)
        self._speeches[job_id] = speech
        return speech

    # -- reader -----------------------------------------------------------------------------------
    def _forget(self, speech: Speech) -> None:
        if self._speeches.get(speech.job) is speech:
            del self._speeches[speech.job]

    def _cancel_soon(self, job: str) -> None:
        task = asyncio.get_running_loop().create_task(self._quiet_cancel(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quiet_cancel(self, job: str) -> None:
        with contextlib.suppress(DaemonError, zmq.ZMQError):
            await self.cancel(job, timeout=2.0)

    async def _read(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart()
            try:
                ev = json.loads(frames[0])
            except ValueError:
                continue
            if not isinstance(ev, dict):
                continue
            token = ev.get("req")
            job = ev.get("job")
            if isinstance(token, str) and token in self._pending:
                fut = self._pending[token]
                if not fut.done():
                    fut.set_result(ev)
                continue
            speech = self._speeches.get(str(token)) or self._speeches.get(str(job))
            if speech is not None:
                speech._deliver(ev, frames[1] if len(frames) > 1 else None)


async def wait_ready(client: DaemonClient, timeout: float) -> bool:
    """Ping until the daemon is warm or ``timeout`` seconds pass; whether it became ready."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await client.ready(min(1.0, max(0.05, end - time.monotonic()))):
            return True
        await asyncio.sleep(0.1)
    return False


__all__ = ["DaemonClient", "DaemonError", "DaemonUnreachable", "PcmFrame", "Speech", "Voice", "wait_ready"]
