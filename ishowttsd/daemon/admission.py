"""Admission: how a chat line or a ``say`` request becomes a queued job. Plain calls, in order,
on the I/O thread; the worker never calls in here.

A chat line (:meth:`Admission.chat`)::

    pipeline (moderation: priority, text, voice, staleness, limits) → checks (length, voice)
    → journal → scheduler.submit → commit of the chat limits → queued

A ``say`` request (:meth:`Admission.say`)::

    checks (empty, voice, duplicate id) → journal → scheduler.submit → queued

The pipeline is called twice on purpose, as two steps of that list: ``process(commit=False)``
decides, and ``commit`` counts the line against the viewer's limits only once the journal and
the queue have taken it (a line they refuse must not make its later copies "duplicates").
Every job event goes out through :meth:`Report.emit <ishowttsd.daemon.report.Report.emit>`,
which the worker is given too; the job's turn is :mod:`ishowttsd.daemon.turn`'s.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ishowttsd import log, protocol
from ishowttsd.chat.pipeline import Accept, Clock, Drop, Pipeline, SystemClock
from ishowttsd.chat.rules import Command
from ishowttsd.chat.settings import ChatSettings
from ishowttsd.chat.text import estimate_seconds
from ishowttsd.chat.voicestore import VoiceStore
from ishowttsd.config import Settings
from ishowttsd.daemon.journal import FILENAME as JOURNAL_FILE
from ishowttsd.daemon.journal import Entry, Journal, JournalError, Reopener
from ishowttsd.daemon.moderation import Moderated, Moderator
from ishowttsd.daemon.report import HISTORY_ROWS, Report
from ishowttsd.daemon.scheduler import QueueFull, Scheduler
from ishowttsd.daemon.streamer import Effects, StreamerControls
from ishowttsd.events import (
    Cancelled,
    Dropped,
    Error,
    Event,
    Filtered,
    JobError,
    JournalAvailable,
    JournalDamaged,
    JournalUnavailable,
    PausedAtRestart,
    Queued,
    Replayed,
)
from ishowttsd.job import Job
from ishowttsd.protocol import ChatMessage, Request

_log = log.get(__name__)


class Admission:
    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        report: Report,
        voice_ids: Callable[[], set[str] | None] = lambda: None,
        clock: Clock | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.report = report
        """Every job event leaves through it (journal row first), from here and from the worker."""
        self._voice_ids = voice_ids
        """Known voice ids, or None while warming up (a voice can't be checked yet)."""
        self.max_text_chars = settings.queue.max_text_chars
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.pipeline = Pipeline(settings.chat, clock=self.clock)
        self.counters: Counter[str] = Counter()
        """Chat counters for the ``status`` reply (I/O thread): ``refused.<code>``,
        ``moderation.<topic>``, ``commands.<name>``, ``replayed``; the drops are the report's."""
        self.queue_counters = {"rejected": 0, "dropped": 0}
        """Jobs the queue or journal refused; queued jobs dropped to make room."""
        self.cancelled_waiting = 0
        """Jobs cancelled before the worker took them (``cancel``, ``clear``, a moderator, the
        viewer's ``!tts cancel``): the ``status`` reply's ``jobs.cancelled`` adds them to the ones
        the worker ended (I/O thread)."""
        self.settings = settings
        self.journal_problem: str | None = None
        self._reopen: Reopener | None = None
        self._paused_kept: bool | None = None
        """The pause state last written to the journal (None: not yet)."""
        self._ready = False
        self._to_announce: list[Event] = []
        self.default_voice: str | None = None
        """A default voice chosen at run time (``default_voice`` op): given to jobs without one."""
        if settings.chat.journal:
            try:
                self.journal = self._open_journal()
            except (sqlite3.Error, OSError) as e:
                # Speech without a journal beats no speech on stream: serve, say so, and retry.
                self.journal_problem = f"{settings.daemon.state_dir}: {e}"
                _log.error("journal unavailable; accepted lines are not crash-safe until it opens (retrying)",
                           state_dir=str(settings.daemon.state_dir), error=str(e))  # fmt: skip
                self._reopen = Reopener(lambda: self._open_journal(busy_timeout_s=0.5), self.journal_problem)
        self.moderator = Moderator(scheduler)
        self.controls = StreamerControls(VoiceStore.in_dir(settings.daemon.state_dir), voice_ids)
        """Read mode, who is read, rewards, chat commands, sticky voices, voice tags, approval."""

    @property
    def journal(self) -> Journal | None:
        """The journal (None: off, or not open yet); the report moves its rows along."""
        return self.report.journal

    @journal.setter
    def journal(self, journal: Journal | None) -> None:
        self.report.journal = journal

    # -- in -----------------------------------------------------------------------------------------
    def chat(self, msg: ChatMessage) -> bool:
        """Admit one chat line: queued (True), or dropped with its event sent (False)."""
        job = Job(id=protocol.new_job_id(), text=msg.text, voice=msg.voice, source="chat", origin=msg.origin)
        read = self.controls.before(msg, job, self.pipeline.settings.rules)  # ishowttsd/daemon/streamer.py
        if isinstance(read, Command):
            self._carry_out(self.controls.command(msg, read, self.pipeline.authorised(msg.token)))
            return False
        if isinstance(read, Effects):  # refused by the rules
            self._carry_out(read)
            return False
        msg, verdict = read
        d = self.pipeline.process(msg, commit=False)  # committed once the queue has taken it
        job.priority = d.priority
        if isinstance(d, Drop):
            self.report.emit(job, Dropped(reason=d.reason, detail=d.detail, text=d.text))
            return False
        job.text, job.voice, job.estimate_s, job.expires_wall = d.text, d.voice, d.seconds, d.expires_at
        job.announce = d.announce
        if d.ttl_s is not None:
            job.expires_at = time.monotonic() + d.ttl_s  # the worker's clock
        if d.notes:
            replacements = tuple(n.to_json() for n in d.notes)
            self.report.emit(job, Filtered(text=d.text, original=d.original, replacements=replacements))
        held = self.controls.after(msg, job, verdict, d, self.pipeline.settings)
        if held is not None:  # held for approval
            self._carry_out(held)
            return False
        if len(job.text) > self.max_text_chars:
            detail = f"{len(job.text)} characters; limit {self.max_text_chars}"
            self.report.emit(job, Dropped(reason="text_too_long", detail=detail))
            return False
        known = self._voice_ids()
        if job.voice is not None and known is not None and job.voice not in known:
            job.voice = None  # a bot asking for a voice this box lacks still gets its line spoken
        return self.submit(job, d)

    def say(self, req: Request, peer: bytes, single_reply: bool) -> Error | None:
        """Admit a ``say`` request; an :class:`Error` is the reply when it is refused outright
        (otherwise its job events answer it)."""
        if not req.text.strip():
            return Error(code="empty_text", reason="field 'text' is empty")
        known = self._voice_ids()
        if req.voice is not None and known is not None and req.voice not in known:
            reason = f"unknown voice {req.voice!r}; known: {', '.join(sorted(known))}"
            return Error(code="unknown_voice", reason=reason)
        if req.id is not None and self.scheduler.find([req.id]):
            return Error(code="duplicate_id", reason=f"job id {req.id!r} is already queued")
        job = Job(
            id=req.id or protocol.new_job_id(),
            text=req.text,
            priority=req.priority,
            voice=req.voice,
            source="control",
            peer=peer,
            single_reply=single_reply,
            wait=req.args.get("wait") is True,
            req=req.req,
            # A private job's audio has nowhere else to go: it always comes back to a DEALER.
            want_pcm=(req.pcm or not req.play) and not single_reply,
            play=req.play,
            estimate_s=estimate_seconds(req.text, self.pipeline.settings.chars_per_second),
        )
        self.submit(job)
        return None

    def submit(self, job: Job, accept: Accept | None = None) -> bool:
        """Journal ``job``, queue it, commit the chat limits of ``accept`` (its filter decision)
        and say ``queued``; False once its refusal was reported."""
        if not self._submit(job):
            return False
        if accept is not None:
            self.pipeline.commit(accept)
        # A job accepted while the journal cannot be written says so: it would not survive a crash.
        safe = None if job.crash_safe else False
        self.report.emit(job, Queued(position=self.scheduler.position(job), text=job.text, crash_safe=safe))
        return True

    def _submit(self, job: Job) -> bool:
        """Journal ``job`` and queue it; False once its refusal was reported."""
        if job.voice is None and self.default_voice is not None:
            known = self._voice_ids()
            if known is None or self.default_voice in known:  # a deleted default falls back
                job.voice = self.default_voice
        refusal = self._journal(job)
        if refusal is not None:
            self.queue_counters["rejected"] += 1
            self.report.emit(job, JobError(code=refusal.code, reason=str(refusal), text=job.text))
            return False
        try:
            made_room = self.scheduler.submit(job)
        except QueueFull as e:
            self.queue_counters["rejected"] += 1
            self.report.emit(job, Dropped(reason=e.code, detail=e.reason, text=job.text))
            return False
        for victim in made_room:
            self.queue_counters["dropped"] += 1
            detail = "made room for newer speech"
            self.report.emit(victim, Dropped(reason="queue_full", detail=detail, text=victim.text))
        return True

    def _journal(self, job: Job) -> JournalError | None:
        """Write ``job`` to the journal before it is queued and acknowledged; an error refuses it."""
        if job.journaled or not job.play:
            # A private job is not replayed after a restart: its requester is gone by then.
            return None
        if self.journal is None:
            if self.settings.chat.journal:
                job.crash_safe = False  # said in its ``queued`` reply
            return None
        entry = Entry(
            id=job.id,
            priority=job.priority,
            text=job.text,
            source=job.source,
            accepted_at=self.clock.time(),
            expires_at=job.expires_wall,
            voice=job.voice,
            origin=job.origin,
        )
        try:
            self.journal.add(entry)
        except JournalError as e:
            self.counters[f"refused.{e.code}"] += 1
            _log.error("job refused: journal write failed", job=job.id, code=e.code, error=str(e))
            return e
        job.journaled = True
        return None

    def _carry_out(self, o: Effects) -> None:
        """Do what the streamer controls decided, in the order :class:`Effects` lists it."""
        if o.cancel_user is not None:
            user = o.cancel_user
            jobs = self.scheduler.remove(
                lambda j: j.source in ("chat", "replay") and (j.user or "").casefold() == user,
                "cancelled",
                include_current=False,
            )
            self.cancelled(jobs, "cancelled_by_user")
        for job, event in o.emit:
            self.report.emit(job, event)
        if o.submit is not None:
            self.submit(o.submit.job, o.submit.accept)
        if o.moderate is not None:
            self.moderate(*o.moderate)
        if o.count is not None:
            self.counters[o.count] += 1
        if o.publish is not None:
            self.report.publish(o.publish)

    def approval(self, op: str, args: dict[str, Any]) -> Event:
        """The control ops ``held``, ``approve`` and ``reject``: the reply (the events of what
        they did are in the outbox first)."""
        reply, outcome = self.controls.approval_op(op, args, self.pipeline.settings.rules)
        self._carry_out(outcome)
        return reply

    def cancelled(self, jobs: list[Job], reason: str) -> None:
        """Report (and count) jobs taken out of the queue; the worker reports those it holds itself."""
        for j in jobs:
            if not self.scheduler.in_flight(j):
                self.report.emit(j, Cancelled(reason=reason))
                self.cancelled_waiting += 1

    # -- restarts -----------------------------------------------------------------------------------
    def replay(self, restore_pause: bool = True) -> int:
        """Queue the journal's unfinished, unexpired jobs again (call once, before serving), and
        pause again if the daemon was paused when it stopped."""
        if self.journal is None:
            if self._reopen is not None:
                st = self._reopen.status()
                self._to_announce.append(
                    JournalUnavailable(
                        unavailable=str(st["unavailable"]),
                        attempts=int(st["attempts"]),
                        retry_in_s=float(st["retry_in_s"]),
                    )
                )
                _log.warning("pause state not restored: the journal is unavailable")
            return 0
        damage = self.journal.damage
        r = self.journal.replay()
        wall, mono = self.clock.time(), time.monotonic()
        for e in r.expired:
            info = {"job": e.id, "priority": e.priority, "source": "replay"}
            detail = "expired while the daemon was down"
            self._to_announce.append(Dropped(info=info, reason="stale", detail=detail, text=e.text))
        for e in r.pending:
            job = Job(
                id=e.id,
                text=e.text,
                priority=e.priority,
                voice=e.voice,
                source="replay",
                origin=e.origin,
                first_source=e.source,
                journaled=True,
                expires_wall=e.expires_at,
                expires_at=None if e.expires_at is None else mono + (e.expires_at - wall),
                estimate_s=estimate_seconds(e.text, self.pipeline.settings.chars_per_second),
                announce=self.pipeline.announce(e.origin) if e.source == "chat" else None,
            )
            if self.submit(job):
                replayed = Replayed(text=job.text, origin=e.source, accepted_at=e.accepted_at)
                self._to_announce.append(replayed.for_job(job))
        self.counters["replayed"] += len(r.pending)
        self.journal.prune(keep_last=HISTORY_ROWS)
        if r.pending or r.expired:
            _log.info("journal replayed", queued=len(r.pending), expired=len(r.expired))
        paused = restore_pause and self.journal.get_meta("paused") == "1"
        if paused:
            # Paused stays paused across a restart (a crash must not start reading chat aloud);
            # the replayed jobs wait as they did before it.
            self.scheduler.pause()
            self._to_announce.append(PausedAtRestart(waiting=len(r.pending)))
            _log.warning("paused before the restart: still paused (resume to speak)", waiting=len(r.pending))
        self._paused_kept = self.scheduler.paused
        if damage is not None:
            self._to_announce.insert(
                0,
                JournalDamaged(
                    problem=damage.problem,
                    moved_to=str(damage.moved_to),
                    recovered_jobs=damage.recovered,
                    recovered_rows=len(damage.rows),
                    unreadable_pages=damage.unreadable_pages,
                    replayed=len(r.pending),
                    pause_restored=paused,
                ),
            )
        return len(r.pending)

    def on_ready(self) -> None:
        """READY: publish what the start found (``replayed``, the journal's state): subscribers
        have had the warm-up to connect."""
        self._ready = True
        for ev in self._to_announce:
            self.report.publish(ev)
        self._to_announce.clear()

    def tick(self) -> None:
        """Main loop, every turn: take a journal that opened late; keep the pause state; held lines
        past their deadline expire."""
        if self._reopen is not None:
            j = self._reopen.take()
            if j is not None:
                self._reopen = None
                self._adopt(j)
        self._keep_pause()
        self._carry_out(self.controls.tick(self.pipeline.settings.rules))

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
            if job.play and not job.journaled and self._journal(job) is None:
                job.crash_safe = True
                journaled += 1
        _log.info(
            "journal opened; accepted lines are crash-safe again", replayed=replayed, journaled=journaled
        )
        self._to_announce.append(JournalAvailable(replayed=replayed, journaled=journaled))
        if self._ready:
            self.on_ready()

    def moderation(self, topic: str, body: dict[str, Any]) -> list[Event]:
        """A moderation topic from the ingest socket or the ``moderate`` op: carried out, the jobs
        it took out reported; the events to publish (an ``error`` for a bad or unauthorised one)."""
        return self._moderated(self.moderator.handle(topic, body, self.pipeline))

    def moderate(self, topic: str, body: dict[str, Any]) -> None:
        """A moderation topic, already authorised (a moderator's chat command)."""
        for event in self._moderated(self.moderator.act(topic, body, self.pipeline)):
            self.report.publish(event)

    def _moderated(self, m: Moderated) -> list[Event]:
        self.counters[m.count] += 1
        self.cancelled(list(m.removed), m.reason)
        return m.events

    def _open_journal(self, busy_timeout_s: float = 5.0) -> Journal:
        c = self.settings.chat
        return Journal(
            self.settings.daemon.state_dir / JOURNAL_FILE,
            sync=c.journal_sync,
            max_bytes=int(c.journal_max_mb * 1024 * 1024),
            clock=self.clock.time,
            busy_timeout_s=busy_timeout_s,
        )

    def reload(self, chat: ChatSettings) -> None:
        """SIGHUP: a new pipeline from the new ``[chat]``; cooldowns, windows and counters carry over.

        The journal's keys (``journal*``) take effect at the next start.
        """
        self.pipeline = Pipeline(chat, state=self.pipeline.state, clock=self.clock)
        _log.info("chat filters reloaded")

    def status(self) -> dict[str, Any]:
        """The ``chat`` object of the ``status`` reply."""
        counts: dict[str, Any] = {}
        # Drops are counted from the events (every drop has one, wherever it happened); the
        # pipeline's own drop counts would count its drops twice.
        mine = Counter({k: n for k, n in self.pipeline.counters.items() if not k.startswith("dropped.")})
        mine.update(self.counters)
        mine.update(self.report.drops())
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
