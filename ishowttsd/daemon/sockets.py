"""The I/O side: three ZeroMQ sockets and the loop that serves them (what comes in; what goes
out leaves through :class:`~ishowttsd.daemon.outbox.Sender`).

It only moves bytes and bookkeeping; it never waits on synthesis. Every control request gets
an answer, every malformed message an ``error`` event, and no message can raise out of the
loop (a bug in one handler is logged and answered as ``internal_error``).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from ishowttsd import log, protocol, security
from ishowttsd.config import Settings
from ishowttsd.daemon.admission import Admission
from ishowttsd.daemon.outbox import EventOut, Outbox, Sender
from ishowttsd.daemon.scheduler import Scheduler
from ishowttsd.events import (
    Error,
    Event,
    History,
    Ok,
    Paused,
    Pong,
    QueueListing,
    Resumed,
    Status,
    TooLarge,
    Voices,
    VoicesReloaded,
)
from ishowttsd.job import Job
from ishowttsd.paths import ipc_path
from ishowttsd.protocol import ChatMessage, ProtocolError, Request

_log = log.get(__name__)

TRANSPORT_MAX_BYTES = 8 << 20
"""Largest control frame libzmq accepts (ZMQ_MAXMSGSIZE) when ``[zmq] max_message_bytes`` is
smaller: frames up to this are read and, over max_message_bytes, answered ``too_large``; a larger
one drops the sender's connection at its header, before anything is allocated."""


def transport_bound(max_message_bytes: int) -> int:
    """ZMQ_MAXMSGSIZE of the control socket."""
    return max(TRANSPORT_MAX_BYTES, max_message_bytes)


INGEST_SLICE_S = 0.01
"""Longest stretch spent on queued chat before control requests get their turn (a ping stays fast)."""


class Sockets:
    """Owns the sockets. ``handle_*`` methods are the whole protocol; ``poll_once`` drives them.

    Chat lines, ``say`` requests and the moderation topics go to
    :class:`~ishowttsd.daemon.admission.Admission`; every job event they
    make goes through the outbox, which this loop flushes before any direct reply or publish, so
    the wire carries them in the order they were made."""

    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        outbox: Outbox,
        ctx: zmq.Context[Any],
        admission: Admission,
        status_extra: Callable[[], dict[str, Any]],
        voices: Callable[[], list[dict[str, Any]]],
        ready: Callable[[], bool],
        voice_ops: VoiceOps,
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.outbox = outbox
        self.ctx = ctx
        self._status_extra = status_extra
        self.admission = admission
        self.moderator = admission.moderator
        self._voices = voices
        self._ready = ready
        self.started = time.monotonic()
        self.counters: dict[str, int] = {
            "requests": 0,
            "chat_in": 0,
            "rejected": 0,
            "dropped": 0,
            "bad_messages": 0,
            "too_large": 0,
        }
        self.voice_ops = voice_ops
        """``reload_voices`` and ``default_voice`` (the daemon, which owns the engine)."""
        z = settings.zmq
        self.curve = security.start(settings.security, ctx)
        """CURVE for non-ipc endpoints (None: ipc only; config refuses tcp without keys)."""
        self.control = self._socket(zmq.ROUTER)
        # Replies to a client that has gone raise EHOSTUNREACH instead of vanishing silently.
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.ingest = self._socket(zmq.SUB)
        self.ingest.setsockopt(zmq.SUBSCRIBE, b"")
        self.pcm = self._socket(zmq.PUB)
        self.pcm.setsockopt(zmq.SNDHWM, z.pcm_hwm)
        self._bind(self.control, z.control)
        self._bind(self.ingest, z.ingest)
        for ep in z.ingest_connect:
            if self.curve is not None:
                self.curve.protect(self.ingest, ep)
            self.ingest.connect(ep)
        self._bind(self.pcm, z.pcm)
        self.out = Sender(outbox, pub=self.pcm, control=self.control)
        """Every outbound frame: the outbox's, then the direct replies and publishes."""
        self.poller = zmq.Poller()
        for s in (self.control, self.ingest, outbox.pull):
            self.poller.register(s, zmq.POLLIN)

    # -- sockets ------------------------------------------------------------------------------------
    def _socket(self, kind: int) -> zmq.Socket[Any]:
        s: zmq.Socket[Any] = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if kind != zmq.PUB:
            # A peer sending a larger frame is disconnected before it can exhaust memory. The
            # control socket takes frames up to the transport bound and answers the ones over
            # [zmq] max_message_bytes with ``too_large``; a bot on ingest cannot be answered.
            z = self.settings.zmq
            bound = transport_bound(z.max_message_bytes) if kind == zmq.ROUTER else z.max_message_bytes
            s.setsockopt(zmq.MAXMSGSIZE, bound)
            s.setsockopt(zmq.RCVHWM, 10000)
        return s

    def _bind(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        if self.curve is not None:
            self.curve.protect(sock, endpoint)
        path = ipc_path(endpoint)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o770)
            if path.exists():
                # A second daemon binding the same path would silently steal it: refuse instead.
                if self._is_live(endpoint):
                    raise OSError(f"{endpoint} is in use by a running daemon")
                path.unlink()
            old = os.umask(0o007)  # sockets group-accessible (the 'ishowtts' group), no one else
            try:
                sock.bind(endpoint)
            finally:
                os.umask(old)
        else:
            sock.bind(endpoint)
        _log.info("bound", endpoint=endpoint, kind=sock.socket_type)

    def _is_live(self, endpoint: str) -> bool:
        path = ipc_path(endpoint)
        if path is None or not stat.S_ISSOCK(path.lstat().st_mode):
            return False
        import socket

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(0.5)
            s.connect(str(path))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def close(self) -> None:
        for s in (self.control, self.ingest, self.pcm):
            s.close(0)
        if self.curve is not None:
            self.curve.close()
        for ep in (self.settings.zmq.control, self.settings.zmq.ingest, self.settings.zmq.pcm):
            path = ipc_path(ep)
            if path is not None:
                try:
                    path.unlink()
                except OSError:
                    pass

    # -- loop -----------------------------------------------------------------------------------------
    def poll_once(self, timeout_ms: int) -> None:
        try:
            events = dict(self.poller.poll(timeout_ms))
        except zmq.ZMQError as e:
            if e.errno == errno.EINTR:
                return
            raise
        if self.outbox.pull in events:
            self.out.flush()
        if self.control in events:
            for _ in range(1000):  # bounded, so one busy client cannot starve the rest
                try:
                    frames = self.control.recv_multipart(zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                self._guard(self.handle_control, frames)
                self.out.flush()
        if self.ingest in events:
            # A raid must not delay control requests: yield to the poller after a few milliseconds.
            budget = time.monotonic() + INGEST_SLICE_S
            for _ in range(1000):
                if time.monotonic() > budget:
                    break
                try:
                    frames = self.ingest.recv_multipart(zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                self._guard(self.handle_ingest, frames)
            self.out.flush()
        self.out.flush()

    def _guard(self, fn: Callable[[list[bytes]], None], frames: list[bytes]) -> None:
        try:
            fn(frames)
        except Exception:
            _log.exception("handler failed", handler=fn.__name__)
            if fn == self.handle_control and frames:
                error = Error(code="internal_error", reason="internal error; see the daemon log")
                self.out.reply(frames[0], self._envelope(frames), error.to_json())

    # -- control -------------------------------------------------------------------------------------------
    @staticmethod
    def _envelope(frames: list[bytes]) -> list[bytes]:
        """REQ peers (and DEALERs imitating them) put an empty delimiter before the body."""
        return [b""] if len(frames) >= 3 and frames[1] == b"" else []

    def handle_control(self, frames: list[bytes]) -> None:
        self.counters["requests"] += 1
        peer = frames[0]
        env = self._envelope(frames)
        body = frames[1 + len(env) :]
        limit = self.settings.zmq.max_message_bytes
        size = sum(len(f) for f in body)
        if size > limit:  # answered unread: never parsed, never queued
            self.counters["bad_messages"] += 1
            self.counters["too_large"] += 1
            reason = f"request of {size} bytes; [zmq] max_message_bytes is {limit}"
            self.out.reply(peer, env, TooLarge(reason=reason, limit=limit, size=size).to_json())
            return
        if len(body) != 1:
            self.counters["bad_messages"] += 1
            reason = f"expected one JSON frame per request, got {len(body)}"
            self.out.reply(peer, env, Error(code="bad_frames", reason=reason).to_json())
            return
        try:
            req = protocol.parse_request(body[0], self.settings.queue.max_text_chars)
        except ProtocolError as e:
            self.counters["bad_messages"] += 1
            out = Error(code=e.code, reason=e.reason).to_json()
            token = _peek_req(body[0])
            if token is not None:
                out["req"] = token
            self.out.reply(peer, env, out)
            return
        reply = self._dispatch(req, peer, env)
        if reply is not None:
            self.out.flush()  # the job events this request made go first
            payload = reply.to_json()
            if req.req is not None:
                payload["req"] = req.req
            self.out.reply(peer, env, payload)

    def _dispatch(self, req: Request, peer: bytes, env: list[bytes]) -> Event | None:
        op = req.op
        if op == "say":
            return self.admission.say(req, peer, single_reply=bool(env))
        if op == "ping":
            # Not the status callback: that reads telemetry and counters, too much for a liveness probe.
            return Pong(ready=self._ready(), ts=time.time())
        if op == "status":
            return self.status()
        if op == "voices":
            return Voices(voices=tuple(self._voices()))
        if op == "pause":
            self.scheduler.pause()
            self.out.publish(Paused())
            return Ok(op=op)
        if op == "resume":
            self.scheduler.resume()
            self.out.publish(Resumed())
            return Ok(op=op)
        if op == "stop":
            job = self.scheduler.stop_current("stopped", req.id)
            return Ok(op=op, jobs=(job.id,) if job else ())
        if op == "cancel":
            if req.id is not None:
                jobs = self.scheduler.remove(lambda j: j.id == req.id, "cancelled", private=True)
            else:
                jobs = self.scheduler.remove(lambda j: True, "cancelled")
            self.admission.cancelled(jobs, "cancelled")
            return Ok(op=op, jobs=tuple(j.id for j in jobs))
        if op == "clear":
            # The queue only: the line being spoken finishes (``cancel`` stops it too).
            jobs = self.scheduler.remove(lambda j: True, "cleared", include_current=False)
            self.admission.cancelled(jobs, "cleared")
            return Ok(op=op, jobs=tuple(j.id for j in jobs))
        if op == "queue":
            return self.queue_listing()
        if op == "history":
            return self._history(req)
        if op == "moderate":
            return self._moderate(req)
        if op in ("reload_voices", "default_voice"):
            return self._voice_op(req, peer, env)
        if op in ("held", "approve", "reject"):
            return self.admission.approval(op, dict(req.args))
        return Error(code="unknown_op", reason=f"unknown op {op!r}")

    def queue_listing(self) -> QueueListing:
        """The ``queue`` op: the lines in flight (the speaking one first) and those waiting, in
        speaking order, each with how long it has waited."""
        now = time.monotonic()
        cur = self.scheduler.current

        def line(j: Job, position: int) -> dict[str, Any]:
            waited = round(max(0.0, now - j.accepted_at), 2)
            return {**j.describe(), "text": j.text, "position": position, "waiting_s": waited,
                    "est_s": round(j.est_seconds, 1)}  # fmt: skip

        return QueueListing(
            paused=self.scheduler.paused,
            current={**line(cur, -1), "started": True} if cur is not None else None,
            jobs=tuple(line(j, i) for i, j in enumerate(self.scheduler.queued())),
        )

    def _history(self, req: Request) -> Event:
        raw = req.args.get("limit", 50)
        try:
            limit = int(raw)
        except (TypeError, ValueError):
            limit = -1
        if isinstance(raw, bool) or not 0 < limit <= protocol.MAX_HISTORY:
            return _bad_request(f"field 'limit' must be a number from 1 to {protocol.MAX_HISTORY}")
        return History(lines=tuple(o.to_json() for o in self.admission.report.history(limit)))

    def _moderate(self, req: Request) -> Event:
        """The ingest moderation topics for control clients (already trusted: socket access)."""
        action = req.args.get("action")
        if action not in protocol.MODERATE_ACTIONS or action not in self.moderator.topics:
            return _bad_request(f"field 'action' must be one of {', '.join(protocol.MODERATE_ACTIONS)}")
        refused = self._moderation(str(action), dict(req.args))
        if refused:  # said why on the event topic, too
            need = "'user'" if action != "delete" else "'id' (the chat message id)"
            return _bad_request(f"moderate {action}: field {need} is required")
        return Ok(op="moderate", action=str(action))

    def _voice_op(self, req: Request, peer: bytes, env: list[bytes]) -> Event | None:
        if req.op == "default_voice":
            voice = req.args.get("voice")
            if voice is not None and not isinstance(voice, str):
                return _bad_request("field 'voice' must be a voice id or null")
            return self.voice_ops.set_default_voice(voice)
        reply = VoicesReloaded(req=req.req).to_json()
        self.voice_ops.reload_voices(EventOut(reply, peer=peer, envelope=tuple(env), publish=False))
        return None  # answered by the worker once the engine has the new voices

    def status(self) -> Status:
        cur = self.scheduler.current
        queued = self.scheduler.queued()
        by_priority: dict[str, int] = {}
        for j in queued:
            by_priority[j.priority] = by_priority.get(j.priority, 0) + 1
        counters = dict(self.counters)
        counters["rejected"] = self.admission.queue_counters["rejected"]
        counters["dropped"] = self.out.dropped + self.admission.queue_counters["dropped"]
        return Status(
            uptime_s=round(time.monotonic() - self.started, 1),
            paused=self.scheduler.paused,
            queue={
                "jobs": len(queued),
                "by_priority": by_priority,
                "est_audio_s": round(self.scheduler.queued_seconds, 1),  # kept as jobs come and go
                "in_flight": self.scheduler.in_flight_count,  # out of the queue, not yet done
                "private": self.scheduler.private_count,  # play: false, waiting or in flight
            },
            current={"job": cur.id, "text": cur.text, **cur.describe()} if cur else None,
            counters=counters,
            extra=self._status_extra(),
        )

    # -- ingest --------------------------------------------------------------------------------------------
    def handle_ingest(self, frames: list[bytes]) -> None:
        try:
            topic, body = protocol.parse_ingest(frames, 1 << 30)
        except ProtocolError as e:
            self._bad_ingest(e)
            return
        if topic != "chat":
            if topic not in self.moderator.topics:
                self._bad_ingest(ProtocolError("unsupported_topic", f"topic {topic!r} is not handled"))
                return
            self._moderation(topic, dict(body))
            return
        try:
            msg = ChatMessage.from_json(body, 1 << 30)
        except ProtocolError as e:
            self._bad_ingest(e)
            return
        self.counters["chat_in"] += 1
        self.admission.chat(msg)

    def _moderation(self, topic: str, body: dict[str, Any]) -> bool:
        """Act on one moderation message and publish what it did; True if it was refused."""
        refused = False
        for event in self.admission.moderation(topic, body):
            if isinstance(event, Error):
                self.counters["bad_messages"] += 1
                refused = True
            self.out.publish(event)
        return refused

    def _bad_ingest(self, e: ProtocolError) -> None:
        # A SUB socket has no way to answer the bot: log it and say so on the event topic.
        self.counters["bad_messages"] += 1
        _log.warning("bad ingest message", code=e.code, reason=e.reason[:200])
        self.out.publish(Error(code=e.code, reason=e.reason[:500], source="ingest"))


def _bad_request(reason: str) -> Error:
    return Error(code="bad_request", reason=reason)


class VoiceOps(Protocol):
    """What the ``reload_voices`` and ``default_voice`` ops call (the daemon implements it)."""

    def reload_voices(self, reply: EventOut | None = None) -> None:
        """Re-read the voices (config + studio) and hand them to the engine between jobs; then
        send ``reply`` (with the voices added) through the outbox."""

    def set_default_voice(self, voice: str | None) -> Event:
        """Make ``voice`` the default (None: the configured one); the reply to send."""
        ...


def _peek_req(frame: bytes) -> str | None:
    """Best effort: echo a client's ``req`` token even on an error about another field."""
    try:
        obj = protocol.decode_json_object(frame, "request")
    except ProtocolError:
        return None
    v = obj.get("req")
    return v if isinstance(v, str) and len(v) <= protocol.MAX_ID_CHARS else None
