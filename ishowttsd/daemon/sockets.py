"""The I/O side: three ZeroMQ sockets and the loop that serves them.

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
from ishowttsd.daemon.outbox import EventOut, Outbox, PcmOut
from ishowttsd.daemon.scheduler import Job, QueueFull, Scheduler
from ishowttsd.endpoints import ipc_path
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

KIND_PRIORITY = {"paid": "important", "mod": "message"}
"""Chat ``kind`` → priority; anything else is ordinary chat (``text``)."""


class Server:
    """Owns the sockets. ``handle_*`` methods are the whole protocol; ``poll_once`` drives them."""

    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        outbox: Outbox,
        ctx: zmq.Context[Any],
        status_extra: Callable[[], dict[str, Any]],
        voices: Callable[[], list[dict[str, Any]]],
        voice_ids: Callable[[], set[str] | None],
        ready: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.outbox = outbox
        self.ctx = ctx
        self._status_extra = status_extra
        self._voices = voices
        self._voice_ids = voice_ids
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
        self.chat_hooks: list[Callable[[ChatMessage, Job], bool]] = []
        """Filters (chat moderation) that rewrite a chat job in place, or drop it (return False,
        having sent its ``dropped`` event); see :meth:`chat_job`."""
        self.accept_hooks: list[Callable[[Job], tuple[str, str] | None]] = []
        """Called before a job is queued (the journal records it); a ``(code, reason)`` refuses it."""
        self.event_listeners: list[Callable[[Job, dict[str, Any]], None]] = []
        """Called with every job event sent from the I/O side (the worker has its own list)."""
        self.topic_handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        """Handlers for the ingest moderation topics (``delete``, ``ban``, ...)."""
        self._pending_single: dict[str, bytes] = {}
        self.history: Callable[[int], list[dict[str, Any]]] = lambda _n: []
        """The ``history`` op's lines, newest first (the chat intake's journal)."""
        self.approval_ops: Callable[[str, dict[str, Any]], dict[str, Any]] = lambda op, _a: {
            "event": "error",
            "code": "unknown_op",
            "reason": f"{op}: no chat intake",
        }
        """``held``, ``approve``, ``reject``: lines waiting for a moderator (ishowttsd/daemon/streamer.py)."""
        self.voice_ops: VoiceOps | None = None
        """``reload_voices`` and ``default_voice`` (the daemon, which owns the engine)."""
        self.default_voice: str | None = None
        """A default voice chosen at run time (``default_voice`` op): given to jobs without one."""
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
            self.flush_outbox()
        if self.control in events:
            for _ in range(1000):  # bounded, so one busy client cannot starve the rest
                try:
                    frames = self.control.recv_multipart(zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                self._guard(self.handle_control, frames)
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
        self.flush_outbox()

    def _guard(self, fn: Callable[[list[bytes]], None], frames: list[bytes]) -> None:
        try:
            fn(frames)
        except Exception:
            _log.exception("handler failed", handler=fn.__name__)
            if fn == self.handle_control and frames:
                self._reply(
                    frames[0],
                    self._envelope(frames),
                    {
                        "event": "error",
                        "code": "internal_error",
                        "reason": "internal error; see the daemon log",
                    },
                )

    # -- outbound ---------------------------------------------------------------------------------------
    def flush_outbox(self) -> None:
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
        job = ev.payload.get("job")
        if ev.single_reply:
            # REQ-style peers get exactly one reply: the ack, or with 'wait' the outcome.
            want = self._pending_single.get(str(job))
            if want is None:
                return
            if ev.terminal or want == b"ack":
                self._pending_single.pop(str(job), None)
                self._reply(ev.peer, [b""], ev.payload)
            return
        self._reply(ev.peer, list(ev.envelope), ev.payload)

    def _send_pcm(self, item: PcmOut) -> None:
        header = protocol.encode(item.header)
        if item.publish:
            self._send(self.pcm, [protocol.pcm_topic(item.job), header, item.payload])
        if item.peer is not None:
            ev = protocol.encode({"event": "pcm", **item.header})
            self._send(self.control, [item.peer, ev, item.payload])

    def publish_event(self, payload: dict[str, Any]) -> None:
        self._send(self.pcm, [protocol.EVENT_TOPIC, protocol.encode(payload)])

    def _reply(self, peer: bytes, envelope: list[bytes], payload: dict[str, Any]) -> None:
        self._send(self.control, [peer, *envelope, protocol.encode(payload)])

    def _send(self, sock: zmq.Socket[Any], frames: list[bytes]) -> None:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.counters["dropped"] += 1  # a slow reader at its high-water mark: drop, never stall
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:  # the client went away: nothing to tell
                raise

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
            self._reply(
                peer,
                env,
                {
                    "event": "error",
                    "code": "too_large",
                    "reason": f"request of {size} bytes; [zmq] max_message_bytes is {limit}",
                    "limit": limit,
                    "size": size,
                },
            )
            return
        if len(body) != 1:
            self.counters["bad_messages"] += 1
            self._reply(
                peer,
                env,
                {
                    "event": "error",
                    "code": "bad_frames",
                    "reason": f"expected one JSON frame per request, got {len(body)}",
                },
            )
            return
        try:
            req = protocol.parse_request(body[0], self.settings.queue.max_text_chars)
        except ProtocolError as e:
            self.counters["bad_messages"] += 1
            out: dict[str, Any] = {"event": "error", "code": e.code, "reason": e.reason}
            token = _peek_req(body[0])
            if token is not None:
                out["req"] = token
            self._reply(peer, env, out)
            return
        reply = self._dispatch(req, peer, env)
        if reply is not None:
            if req.req is not None:
                reply["req"] = req.req
            self._reply(peer, env, reply)

    def _dispatch(self, req: Request, peer: bytes, env: list[bytes]) -> dict[str, Any] | None:
        op = req.op
        if op == "say":
            return self._say(req, peer, env)
        if op == "ping":
            # Not the status callback: that reads telemetry and counters, too much for a liveness probe.
            return {"event": "pong", "ready": self._ready(), "ts": time.time()}
        if op == "status":
            return self.status()
        if op == "voices":
            return {"event": "voices", "voices": self._voices()}
        if op == "pause":
            self.scheduler.pause()
            self.publish_event({"event": "paused"})
            return {"event": "ok", "op": op}
        if op == "resume":
            self.scheduler.resume()
            self.publish_event({"event": "resumed"})
            return {"event": "ok", "op": op}
        if op == "stop":
            job = self.scheduler.stop_current("stopped", req.id)
            return {"event": "ok", "op": op, "jobs": [job.id] if job else []}
        if op == "cancel":
            if req.id is not None:
                jobs = self.scheduler.remove(lambda j: j.id == req.id, "cancelled", private=True)
            else:
                jobs = self.scheduler.remove(lambda j: True, "cancelled")
            self.announce_removed(jobs, "cancelled", "cancelled")
            return {"event": "ok", "op": op, "jobs": [j.id for j in jobs]}
        if op == "clear":
            # The queue only: the line being spoken finishes (``cancel`` stops it too).
            jobs = self.scheduler.remove(lambda j: True, "cleared", include_current=False)
            self.announce_removed(jobs, "cancelled", "cleared")
            return {"event": "ok", "op": op, "jobs": [j.id for j in jobs]}
        if op == "queue":
            return self.queue_listing()
        if op == "history":
            return self._history(req)
        if op == "moderate":
            return self._moderate(req)
        if op in ("reload_voices", "default_voice"):
            return self._voice_op(req, peer, env)
        if op in ("held", "approve", "reject"):
            return self.approval_ops(op, dict(req.args))
        return {"event": "error", "code": "unknown_op", "reason": f"unknown op {op!r}"}

    def queue_listing(self) -> dict[str, Any]:
        """The ``queue`` op: the lines in flight (the speaking one first) and those waiting, in
        speaking order, each with how long it has waited."""
        now = time.monotonic()
        cur = self.scheduler.current

        def line(j: Job, position: int) -> dict[str, Any]:
            waited = round(max(0.0, now - j.accepted_at), 2)
            return {**j.describe(), "text": j.text, "position": position, "waiting_s": waited,
                    "est_s": round(j.est_seconds, 1)}  # fmt: skip

        return {
            "event": "queue",
            "paused": self.scheduler.paused,
            "current": {**line(cur, -1), "started": True} if cur is not None else None,
            "jobs": [line(j, i) for i, j in enumerate(self.scheduler.queued())],
        }

    def _history(self, req: Request) -> dict[str, Any]:
        raw = req.args.get("limit", 50)
        try:
            limit = int(raw)
        except (TypeError, ValueError):
            limit = -1
        if isinstance(raw, bool) or not 0 < limit <= protocol.MAX_HISTORY:
            return _bad_request(f"field 'limit' must be a number from 1 to {protocol.MAX_HISTORY}")
        return {"event": "history", "lines": self.history(limit)}

    def _moderate(self, req: Request) -> dict[str, Any]:
        """The ingest moderation topics for control clients (already trusted: socket access)."""
        action = req.args.get("action")
        if action not in protocol.MODERATE_ACTIONS or action not in self.topic_handlers:
            return _bad_request(f"field 'action' must be one of {', '.join(protocol.MODERATE_ACTIONS)}")
        before = self.counters["bad_messages"]
        self.topic_handlers[str(action)](dict(req.args))
        if self.counters["bad_messages"] != before:  # the handler said why on the event topic
            need = "'user'" if action != "delete" else "'id' (the chat message id)"
            return _bad_request(f"moderate {action}: field {need} is required")
        return {"event": "ok", "op": "moderate", "action": action}

    def _voice_op(self, req: Request, peer: bytes, env: list[bytes]) -> dict[str, Any] | None:
        if self.voice_ops is None:
            return {"event": "error", "code": "not_ready", "reason": "voices cannot be changed yet"}
        if req.op == "default_voice":
            voice = req.args.get("voice")
            if voice is not None and not isinstance(voice, str):
                return _bad_request("field 'voice' must be a voice id or null")
            return self.voice_ops.set_default_voice(voice)
        payload: dict[str, Any] = {"event": "voices_reloaded"}
        if req.req is not None:
            payload["req"] = req.req
        self.voice_ops.reload_voices(EventOut(payload, peer=peer, envelope=tuple(env), publish=False))
        return None  # answered by the worker once the engine has the new voices

    def _say(self, req: Request, peer: bytes, env: list[bytes]) -> dict[str, Any] | None:
        if not req.text.strip():
            return {"event": "error", "code": "empty_text", "reason": "field 'text' is empty"}
        known = self._voice_ids()
        if req.voice is not None and known is not None and req.voice not in known:
            return {
                "event": "error",
                "code": "unknown_voice",
                "reason": f"unknown voice {req.voice!r}; known: {', '.join(sorted(known))}",
            }
        if req.id is not None and self.scheduler.find([req.id]):
            return {
                "event": "error",
                "code": "duplicate_id",
                "reason": f"job id {req.id!r} is already queued",
            }
        wait = req.args.get("wait") is True
        job = Job(
            id=req.id or protocol.new_job_id(),
            text=req.text,
            priority=req.priority,
            voice=req.voice,
            source="control",
            peer=peer,
            single_reply=bool(env),
            wait=wait,
            req=req.req,
            # A private job's audio has nowhere else to go: it always comes back to a DEALER.
            want_pcm=(req.pcm or not req.play) and not env,
            play=req.play,
        )
        if env:
            self._pending_single[job.id] = b"wait" if wait else b"ack"
        self.submit(job)
        return None

    def submit(self, job: Job) -> bool:
        """Queue a job and send its ``queued`` (or ``dropped``) event; the one door into the queue."""
        if job.voice is None and self.default_voice is not None:
            known = self._voice_ids()
            if known is None or self.default_voice in known:  # a deleted default falls back
                job.voice = self.default_voice
        for hook in self.accept_hooks:
            refusal = hook(job)
            if refusal is not None:
                self.counters["rejected"] += 1
                self.emit(job, "error", code=refusal[0], reason=refusal[1], text=job.text)
                return False
        try:
            dropped = self.scheduler.submit(job)
        except QueueFull as e:
            self.counters["rejected"] += 1
            self.emit(job, "dropped", reason=e.code, detail=e.reason, text=job.text)
            return False
        for victim in dropped:
            self.counters["dropped"] += 1
            self.emit(
                victim, "dropped", reason="queue_full", detail="made room for newer speech", text=victim.text
            )
        # A job accepted while the journal cannot be written says so: it would not survive a crash.
        safe = {"crash_safe": False} if job.meta.get("crash_safe") is False else {}
        self.emit(job, "queued", position=self.scheduler.position(job), text=job.text, **safe)
        return True

    def announce_removed(self, jobs: list[Job], event: str, reason: str) -> None:
        for j in jobs:
            # The worker reports the jobs it holds (the speaking one, a batch's others) itself.
            if not self.scheduler.in_flight(j):
                self.emit(j, event, reason=reason)

    def emit(self, job: Job, event: str, **fields: Any) -> None:
        payload = {"event": event, **job.describe(), **fields}
        if job.req is not None:
            payload["req"] = job.req
        terminal = event in ("done", "cancelled", "dropped", "error")
        for listener in self.event_listeners:
            listener(job, payload)
        self._send_event(
            EventOut(
                payload, peer=job.peer, single_reply=job.single_reply, terminal=terminal, publish=job.play
            )
        )

    def status(self) -> dict[str, Any]:
        cur = self.scheduler.current
        queued = self.scheduler.queued()
        by_priority: dict[str, int] = {}
        for j in queued:
            by_priority[j.priority] = by_priority.get(j.priority, 0) + 1
        return {
            "event": "status",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "paused": self.scheduler.paused,
            "queue": {
                "jobs": len(queued),
                "by_priority": by_priority,
                "est_audio_s": round(sum(j.est_seconds for j in queued), 1),
                "in_flight": self.scheduler.in_flight_count,  # out of the queue, not yet done
                "private": self.scheduler.private_count,  # play: false, waiting or in flight
            },
            "current": {"job": cur.id, "text": cur.text, **cur.describe()} if cur else None,
            "counters": dict(self.counters),
            **self._status_extra(),
        }

    # -- ingest --------------------------------------------------------------------------------------------
    def handle_ingest(self, frames: list[bytes]) -> None:
        try:
            topic, body = protocol.parse_ingest(frames, 1 << 30)
        except ProtocolError as e:
            self._bad_ingest(e)
            return
        if topic != "chat":
            handler = self.topic_handlers.get(topic)
            if handler is None:
                self._bad_ingest(ProtocolError("unsupported_topic", f"topic {topic!r} is not handled"))
                return
            handler(dict(body))
            return
        try:
            msg = ChatMessage.from_json(body, 1 << 30)
        except ProtocolError as e:
            self._bad_ingest(e)
            return
        self.counters["chat_in"] += 1
        job = self.chat_job(msg)
        if job is not None:
            self.submit(job)

    def chat_job(self, msg: ChatMessage) -> Job | None:
        """Turn a chat message into a job (or None: dropped, with its event already sent)."""
        job = self._job_from_chat(msg, msg.text)
        for hook in self.chat_hooks:
            if not hook(msg, job):
                return None
        text = job.text
        if len(text) > self.settings.queue.max_text_chars:
            self.emit(
                job,
                "dropped",
                reason="text_too_long",
                detail=f"{len(text)} characters; limit {self.settings.queue.max_text_chars}",
            )
            return None
        if not text.strip():
            self.emit(job, "dropped", reason="empty_text")
            return None
        known = self._voice_ids()
        if job.voice is not None and known is not None and job.voice not in known:
            # A bot asking for a voice this box lacks still gets its line spoken, in the default voice.
            job.meta["voice_fallback"] = job.voice
            job.voice = None
        return job

    def _job_from_chat(self, msg: ChatMessage, text: str) -> Job:
        return Job(
            id=protocol.new_job_id(),
            text=text,
            priority=KIND_PRIORITY.get(msg.kind, "text"),
            voice=msg.voice,
            source="chat",
            user=msg.user,
            channel=msg.channel,
            platform=msg.platform,
            kind=msg.kind,
            msg_id=msg.id,
            posted_ts=msg.ts,
        )

    def _bad_ingest(self, e: ProtocolError) -> None:
        # A SUB socket has no way to answer the bot: log it and say so on the event topic.
        self.counters["bad_messages"] += 1
        _log.warning("bad ingest message", code=e.code, reason=e.reason[:200])
        self.publish_event({"event": "error", "source": "ingest", "code": e.code, "reason": e.reason[:500]})


def _bad_request(reason: str) -> dict[str, Any]:
    return {"event": "error", "code": "bad_request", "reason": reason}


class VoiceOps(Protocol):
    """What the ``reload_voices`` and ``default_voice`` ops call (the daemon implements it)."""

    def reload_voices(self, reply: EventOut | None = None) -> None:
        """Re-read the voices (config + studio) and hand them to the engine between jobs; then
        send ``reply`` (with the voices added) through the outbox."""

    def set_default_voice(self, voice: str | None) -> dict[str, Any]:
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
