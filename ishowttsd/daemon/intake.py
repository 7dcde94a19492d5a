"""Stream-chat intake: the ``[chat]`` pipeline, moderation topics and the job journal, wired into
the daemon core through its hooks (no sockets or threads of its own).

- ``Server.chat_hooks``: each chat line goes through :class:`~ishowttsd.chat.Pipeline`; a drop
  becomes a ``dropped`` event with its reason and the text as it stood; a rewrite a ``filtered``
  event with the final text and what was replaced.
- ``Server.accept_hooks``: every job (chat or ``say``) is journalled before its ``queued`` reply.
- ``Server.event_listeners`` / ``Worker.event_listeners``: ``started``, ``done``, ``dropped``, ...
  move the job's journal row along; ``done`` is recorded before the event leaves.
- ``Worker.turn_hooks``: just before a chat job is spoken, staleness and the announce prefix.
- ``Server.topic_handlers``: ``delete``, ``ban``, ``timeout`` (any bot); ``skip``, ``clear``,
  ``pause``, ``resume`` (a bot whose ``token`` is in ``chat.moderator_tokens``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from typing import Any

from ishowttsd import log
from ishowttsd.chat import Accept, Drop, Pipeline
from ishowttsd.chat.pipeline import Clock, SystemClock
from ishowttsd.chat.voicestore import VoiceStore
from ishowttsd.config import Settings
from ishowttsd.daemon.journal import FILENAME as JOURNAL_FILE
from ishowttsd.daemon.journal import Entry, Journal, JournalError, Outcome, Reopener
from ishowttsd.daemon.scheduler import Job, Scheduler
from ishowttsd.daemon.sockets import Server
from ishowttsd.daemon.streamer import StreamerControls
from ishowttsd.daemon.worker import Worker
from ishowttsd.protocol import ChatMessage

_log = log.get(__name__)

DEFAULT_TIMEOUT_S = 600.0
"""A ``timeout`` without a duration mutes for Twitch's default ten minutes."""
PRUNE_EVERY = 100
"""Finished journal rows are deleted every this many finished jobs (and at start)."""
HISTORY_ROWS = 200
"""Finished and dropped jobs kept in the journal as the history (``history`` control op)."""
UNJOURNALED_DROPS = 100
"""Lines dropped before they were accepted (filters, limits) are never journalled: the newest
this many are remembered in memory for the history."""
AUTHORISED_TOPICS = ("skip", "clear", "pause", "resume")
CHAT_SOURCES = ("chat",)


def _origin(job: Job) -> str:
    """``chat`` or ``control``: where a job came from, also after it was replayed."""
    return str(job.meta.get("origin", job.source))


class ChatIntake:
    def __init__(
        self,
        settings: Settings,
        server: Server,
        scheduler: Scheduler,
        worker: Worker,
        clock: Clock | None = None,
        voice_ids: Callable[[], Collection[str] | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.server = server
        self.scheduler = scheduler
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.pipeline = Pipeline(settings.chat, clock=self.clock)
        self.counters: Counter[str] = Counter()
        self._count_lock = threading.Lock()  # events arrive from the I/O thread and the worker
        self.journal: Journal | None = None
        self.journal_problem: str | None = None
        self._reopen: Reopener | None = None
        self._paused_kept: bool | None = None
        """The pause state last written to the journal (None: not yet)."""
        self._ready = False
        self._finished_since_prune = 0
        self._to_announce: list[dict[str, Any]] = []
        if settings.chat.journal:
            try:
                self.journal = self._open_journal()
            except (sqlite3.Error, OSError) as e:
                # Speech without a journal beats no speech on stream: serve, say so, and retry.
                self.journal_problem = f"{settings.daemon.state_dir}: {e}"
                _log.error("journal unavailable; accepted lines are not crash-safe until it opens (retrying)",
                           state_dir=str(settings.daemon.state_dir), error=str(e))  # fmt: skip
                self._reopen = Reopener(lambda: self._open_journal(busy_timeout_s=0.5), self.journal_problem)
        self._unjournaled: deque[Outcome] = deque(maxlen=UNJOURNALED_DROPS)
        server.chat_hooks.append(self.on_chat)
        server.accept_hooks.append(self.on_accept)
        server.event_listeners.append(self.on_event)
        worker.event_listeners.append(self.on_event)
        worker.turn_hooks.append(self.on_turn)
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "delete": self._delete,
            "ban": lambda body: self._mute(body, timeout=False),
            "timeout": lambda body: self._mute(body, timeout=True),
            "clear": self._clear,
            "skip": self._skip,
            "pause": self._pause,
            "resume": self._resume,
        }
        self._handlers = handlers
        for topic, fn in handlers.items():
            server.topic_handlers[topic] = self._topic(topic, fn)
        self.controls = StreamerControls(self, VoiceStore.in_dir(settings.daemon.state_dir), voice_ids)
        """Read mode, who is read, rewards, chat commands, sticky voices, voice tags, approval."""
        server.approval_ops = self.controls.approval_op

    # -- chat in ---------------------------------------------------------------------------------------------
    def on_chat(self, msg: ChatMessage, job: Job) -> bool:
        """Filter one chat line into ``job`` (rewritten in place); False: dropped (or a command, or held
        for approval), its event sent."""
        read = self.controls.before(msg, job)  # who is read, commands (ishowttsd/daemon/streamer.py)
        if read is None:
            return False
        msg = read
        d = self.pipeline.process(msg, commit=False)  # committed when queued (see on_event)
        if isinstance(d, Drop):
            job.priority = d.priority
            self.server.emit(job, "dropped", reason=d.reason, detail=d.detail, text=d.text)
            return False
        job.text = d.text
        job.priority = d.priority
        job.voice = d.voice
        if d.ttl_s is not None:
            job.expires_at = time.monotonic() + d.ttl_s  # the worker's clock
        job.meta["expires_wall"] = d.expires_at
        job.meta["est_seconds"] = d.seconds
        job.meta["chat_accept"] = d
        if d.notes:
            self.server.publish_event(
                {
                    "event": "filtered",
                    **job.describe(),
                    "text": d.text,
                    "original": d.original,
                    "replacements": [n.to_json() for n in d.notes],
                }
            )
        return self.controls.after(msg, job)

    # -- journal ---------------------------------------------------------------------------------------------
    def _open_journal(self, busy_timeout_s: float = 5.0) -> Journal:
        c = self.settings.chat
        return Journal(
            self.settings.daemon.state_dir / JOURNAL_FILE,
            sync=c.journal_sync,
            max_bytes=int(c.journal_max_mb * 1024 * 1024),
            clock=self.clock.time,
            busy_timeout_s=busy_timeout_s,
        )

    def on_accept(self, job: Job) -> tuple[str, str] | None:
        """Journal ``job`` before it is queued and acknowledged; a (code, reason) refuses it."""
        if job.meta.get("journaled") or not job.play:
            # A private job is not replayed after a restart: its requester is gone by then.
            return None
        if self.journal is None:
            if self.settings.chat.journal:
                job.meta["crash_safe"] = False  # said in its ``queued`` reply
            return None
        entry = Entry(
            id=job.id,
            priority=job.priority,
            text=job.text,
            source=job.source,
            accepted_at=self.clock.time(),
            expires_at=job.meta.get("expires_wall"),
            voice=job.voice,
            user=job.user,
            channel=job.channel,
            platform=job.platform,
            kind=job.kind,
            msg_id=job.msg_id,
        )
        try:
            self.journal.add(entry)
        except JournalError as e:
            self.counters[f"refused.{e.code}"] += 1
            _log.error("job refused: journal write failed", job=job.id, code=e.code, error=str(e))
            return e.code, str(e)
        job.meta["journaled"] = True
        return None

    def on_event(self, job: Job, payload: dict[str, Any]) -> None:
        """Every job event (I/O thread and worker): counters, and the job's journal row."""
        event = payload.get("event")
        reason = str(payload.get("reason", ""))
        if event == "dropped":
            with self._count_lock:
                self.counters[f"dropped.{reason}"] += 1
        elif event == "queued":
            accepted = job.meta.pop("chat_accept", None)
            if isinstance(accepted, Accept):
                self.pipeline.commit(accepted)
        if self.journal is None or not job.meta.get("journaled"):
            if event in ("dropped", "error") and job.source != "replay":
                self._remember(job, payload)
            return
        if event == "started":
            self.journal.started(job.id)
        elif event == "done":
            self.journal.finished(job.id)  # before the event leaves: spoken once, never replayed
            self._finished_since_prune += 1
            if self._finished_since_prune >= PRUNE_EVERY:
                self._finished_since_prune = 0
                self.journal.prune(keep_last=HISTORY_ROWS)
        elif event in ("dropped", "cancelled", "error"):
            if event == "cancelled" and reason == "shutdown":
                return  # a restart is not a reason to lose accepted speech: replayed next start
            if event == "error":
                reason = str(payload.get("code") or reason or "error")
            self.journal.dropped(job.id, reason or str(event), str(event))

    def _remember(self, job: Job, payload: dict[str, Any]) -> None:
        now = self.clock.time()
        reason = str(payload.get("reason") if payload.get("event") == "dropped" else payload.get("code"))
        with self._count_lock:
            self._unjournaled.append(
                Outcome(
                    job=job.id, text=str(payload.get("text", job.text)), priority=job.priority,
                    source=job.source, outcome=str(payload["event"]), reason=reason, accepted_at=now,
                    finished_at=now, voice=job.voice, user=job.user, channel=job.channel,
                    platform=job.platform,
                )
            )  # fmt: skip

    def history(self, limit: int) -> list[Outcome]:
        """The newest ``limit`` lines that are over, newest first: the journal's, and the lines
        dropped before they were accepted (remembered in memory only)."""
        rows = self.journal.history(limit) if self.journal is not None else []
        with self._count_lock:
            rows.extend(self._unjournaled)
        rows.sort(key=lambda o: o.finished_at, reverse=True)
        return rows[:limit]

    def replay(self, restore_pause: bool = True) -> int:
        """Queue the journal's unfinished, unexpired jobs again (call once, before serving), and
        pause again if the daemon was paused when it stopped."""
        if self.journal is None:
            if self._reopen is not None:
                self._to_announce.append({"event": "journal_unavailable", **self._reopen.status(),
                                          "pause_restored": False})  # fmt: skip
                _log.warning("pause state not restored: the journal is unavailable")
            return 0
        damage = self.journal.damage
        r = self.journal.replay()
        wall, mono = self.clock.time(), time.monotonic()
        for e in r.expired:
            self._to_announce.append(
                {"event": "dropped", "job": e.id, "priority": e.priority, "source": "replay",
                 "reason": "stale", "detail": "expired while the daemon was down", "text": e.text}
            )  # fmt: skip
        for e in r.pending:
            job = Job(
                id=e.id,
                text=e.text,
                priority=e.priority,
                voice=e.voice,
                source="replay",
                user=e.user,
                channel=e.channel,
                platform=e.platform,
                kind=e.kind,
                msg_id=e.msg_id,
                expires_at=None if e.expires_at is None else mono + (e.expires_at - wall),
            )
            job.meta.update(origin=e.source, journaled=True, expires_wall=e.expires_at)
            if self.server.submit(job):
                self._to_announce.append({"event": "replayed", **job.describe(), "text": job.text,
                                          "origin": e.source, "accepted_at": e.accepted_at})  # fmt: skip
        self.counters["replayed"] += len(r.pending)
        self.journal.prune(keep_last=HISTORY_ROWS)
        if r.pending or r.expired:
            _log.info("journal replayed", queued=len(r.pending), expired=len(r.expired))
        paused = restore_pause and self.journal.get_meta("paused") == "1"
        if paused:
            # Paused stays paused across a restart (a crash must not start reading chat aloud);
            # the replayed jobs wait as they did before it.
            self.scheduler.pause()
            self._to_announce.append({"event": "paused", "source": "restart", "waiting": len(r.pending)})
            _log.warning("paused before the restart: still paused (resume to speak)", waiting=len(r.pending))
        self._paused_kept = self.scheduler.paused
        if damage is not None:
            self._to_announce.insert(0, {"event": "journal_damaged", **damage.to_json(),
                                         "replayed": len(r.pending), "pause_restored": paused})  # fmt: skip
        return len(r.pending)

    def tick(self) -> None:
        """Main loop, every turn: take a journal that opened late; keep the pause state."""
        if self._reopen is not None:
            j = self._reopen.take()
            if j is not None:
                self._reopen = None
                self._adopt(j)
        self._keep_pause()

    def _keep_pause(self) -> None:
        paused = self.scheduler.paused
        if self.journal is None or paused == self._paused_kept:
            return
        if self.journal.set_meta("paused", "1" if paused else "0"):
            self._paused_kept = paused

    def _adopt(self, journal: Journal) -> None:
        """The journal opened after the start: replay what an earlier run left in it, then journal
        the lines accepted meanwhile (crash-safe from now on)."""
        self.journal, self.journal_problem = journal, None
        self._paused_kept = None  # the running state wins; written on the next tick
        replayed = self.replay(restore_pause=False)
        journaled = 0
        for job in self.scheduler.queued():
            if job.play and not job.meta.get("journaled") and self.on_accept(job) is None:
                job.meta.pop("crash_safe", None)
                journaled += 1
        _log.info(
            "journal opened; accepted lines are crash-safe again", replayed=replayed, journaled=journaled
        )
        self._to_announce.append({"event": "journal_available", "replayed": replayed, "journaled": journaled})
        if self._ready:
            self.on_ready()

    def on_ready(self) -> None:
        """Publish the ``replayed`` events (subscribers have had warm-up time to reconnect)."""
        self._ready = True
        for ev in self._to_announce:
            self.server.publish_event(ev)
        self._to_announce.clear()

    # -- the job's turn --------------------------------------------------------------------------------------
    def on_turn(self, job: Job) -> str | None:
        """Worker thread, just before speaking: the announce prefix; a drop reason if stale."""
        if _origin(job) not in CHAT_SOURCES:
            return None
        segments = job.meta.get("segments")
        r = self.pipeline.at_turn(
            segments[0][1] if segments else job.text,
            user=job.user,
            deadline=job.expires_at,
            channel=job.channel,
            platform=job.platform,
            priority=job.priority,
            message_id=job.msg_id,
        )
        if isinstance(r, Drop):
            return r.reason
        if segments:  # the announce prefix goes with the first voice-tag segment
            segments[0] = (segments[0][0], r)
            r = " ".join(t for _, t in segments)
        job.text = r
        return None

    # -- moderation topics -----------------------------------------------------------------------------------
    def _topic(self, topic: str, fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        def handle(body: dict[str, Any]) -> None:
            if topic in AUTHORISED_TOPICS and not self.pipeline.authorised(body.get("token")):
                self.counters["moderation.unauthorised"] += 1
                _log.warning("moderation refused: no valid token", topic=topic)
                self._ingest_error(
                    "unauthorized",
                    f"topic {topic!r} needs a 'token' listed in chat.moderator_tokens",
                )
                return
            self.counters[f"moderation.{topic}"] += 1
            fn(body)

        return handle

    def moderate(self, topic: str, body: dict[str, Any]) -> None:
        """A moderation topic, already authorised (a moderator's chat command)."""
        self.counters[f"moderation.{topic}"] += 1
        self._handlers[topic](body)

    def _ingest_error(self, code: str, reason: str) -> None:
        self.server.counters["bad_messages"] += 1
        self.server.publish_event({"event": "error", "source": "ingest", "code": code, "reason": reason})

    def _remove(self, pred: Callable[[Job], bool], reason: str, action: str, **fields: Any) -> None:
        jobs = self.scheduler.remove(pred, reason)
        self.server.announce_removed(jobs, "cancelled", reason)
        self.server.publish_event(
            {"event": "moderation", "action": action, **fields, "jobs": [j.id for j in jobs]}
        )

    def _delete(self, body: dict[str, Any]) -> None:
        mid = body.get("id", body.get("msg_id"))
        if not isinstance(mid, (str, int)) or isinstance(mid, bool) or str(mid) == "":
            self._ingest_error("bad_request", "delete: field 'id' (the chat message id) is required")
            return
        target = str(mid)
        self._remove(lambda j: j.msg_id == target, "deleted", "delete", id=target)

    def _mute(self, body: dict[str, Any], timeout: bool) -> None:
        user = body.get("user")
        if not isinstance(user, str) or not user:
            self._ingest_error("bad_request", "ban/timeout: field 'user' is required")
            return
        duration: float | None = None
        if timeout:
            # ``duration_s`` is the contract; plain ``duration`` is read too, for early bots.
            raw = body.get("duration_s", body.get("duration", DEFAULT_TIMEOUT_S))
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
                self._ingest_error(
                    "bad_request", "timeout: field 'duration_s' must be seconds (a number >= 0)"
                )
                return
            duration = float(raw)
        folded = user.casefold()
        action = "ban" if duration is None else "timeout"
        self.pipeline.mute(user, duration)
        self._remove(
            lambda j: _origin(j) in CHAT_SOURCES and (j.user or "").casefold() == folded,
            "banned" if duration is None else "timed_out",
            action,
            user=user,
            **({} if duration is None else {"duration_s": duration}),
        )

    def _clear(self, body: dict[str, Any]) -> None:
        # Paid lines are never cleared in bulk ("important" is never interrupted); delete one by id.
        self._remove(lambda j: _origin(j) in CHAT_SOURCES and j.priority != "important", "cleared", "clear")

    def _skip(self, body: dict[str, Any]) -> None:
        cur = self.scheduler.current
        stopped = None
        if cur is not None and cur.priority != "important":
            stopped = self.scheduler.stop_current("skipped", cur.id)
        self.server.publish_event(
            {"event": "moderation", "action": "skip", "jobs": [stopped.id] if stopped else []}
        )

    def _pause(self, body: dict[str, Any]) -> None:
        self.scheduler.pause()
        self.server.publish_event({"event": "paused", "source": "ingest"})

    def _resume(self, body: dict[str, Any]) -> None:
        self.scheduler.resume()
        self.server.publish_event({"event": "resumed", "source": "ingest"})

    # -- lifecycle -------------------------------------------------------------------------------------------
    def reload(self, fresh: Settings) -> None:
        """SIGHUP: a new pipeline from the new ``[chat]``; cooldowns, windows and counters carry over.

        The journal's keys (``journal*``) take effect at the next start.
        """
        self.pipeline = Pipeline(fresh.chat, state=self.pipeline.state, clock=self.clock)
        self.settings = fresh
        _log.info("chat filters reloaded", file=str(fresh.file))

    def status(self) -> dict[str, Any]:
        """The ``chat`` object of the ``status`` reply."""
        counts: dict[str, Any] = {}
        # Drops are counted from the events (every drop has one, wherever it happened); the
        # pipeline's own drop counts would count its drops twice.
        mine = Counter({k: n for k, n in self.pipeline.counters.items() if not k.startswith("dropped.")})
        with self._count_lock:
            mine.update(self.counters)
        for key, n in sorted(mine.items()):
            head, _, tail = key.partition(".")
            if tail:
                counts.setdefault(head, {})[tail] = n
            else:
                counts[head] = n
        if self.journal is not None:
            counts["journal"] = {**self.journal.counters, "crash_safe": True}
            if self.journal.damage is not None:
                counts["journal"]["damaged"] = self.journal.damage.to_json()
        elif self._reopen is not None:
            counts["journal"] = self._reopen.status()
        elif self.journal_problem is not None:
            counts["journal"] = {"unavailable": self.journal_problem, "crash_safe": False}
        return counts

    def close(self) -> None:
        if self._reopen is not None:
            self._reopen.close()
        self.controls.store.close()
        if self.journal is not None:
            self._keep_pause()  # a pause just before SIGTERM
            self.journal.close()
