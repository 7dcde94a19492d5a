"""``ishowttsd``: the daemon in the foreground (systemd runs it as ``Type=notify``).

Lifecycle: settings → sockets bound (clients may queue work during warm-up) → worker loads and
warms the engine (STATUS= progress, EXTEND_TIMEOUT_USEC) → READY=1 → serve, ticking the
watchdog → SIGTERM: STOPPING=1, refuse new work, let the current job finish (bounded) → exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from ishowttsd import __version__, config, log
from ishowttsd.config import ConfigError, Settings, replace
from ishowttsd.daemon import faults
from ishowttsd.daemon.admission import Admission
from ishowttsd.daemon.outbox import EventOut, Outbox
from ishowttsd.daemon.report import Report
from ishowttsd.daemon.scheduler import Limits, Scheduler
from ishowttsd.daemon.sockets import Sockets
from ishowttsd.daemon.watchdog import Watchdog
from ishowttsd.daemon.worker import Worker
from ishowttsd.engine import create_engine
from ishowttsd.engine.base import StartupError
from ishowttsd.events import Cancelled, Error, Event, Ready, VoiceChosen
from ishowttsd.jetson.telemetry import Telemetry
from ishowttsd.loudness import Leveller
from ishowttsd.notify import Notifier
from ishowttsd.sinks import Sink
from ishowttsd.sinks.pcm import Pacing, PcmSink
from ishowttsd.voices.store import VoiceStore, merged

EXIT_OK = 0
EXIT_CONFIG = 2
"""The configuration is invalid (the message names the file and key)."""
EXIT_STARTUP = 3
"""The daemon never started: engine files missing, sockets in use, ..."""

WARMUP_EXTEND_S = 120.0
"""How far each warm-up progress line pushes systemd's start timeout out."""

_log = log.get("ishowttsd")


class Signals:
    """Signal flags, read by the main loop; a second SIGTERM/SIGINT forces an exit."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self._count = 0

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._count += 1
        if self._count > 1:
            # A raw write, not the logger: the main thread may hold the logger's lock right now.
            os.write(2, b"ishowttsd: second stop signal: exiting now\n")
            sys.exit(EXIT_OK)
        self.stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload.set()


DEFAULT_VOICE_FILE = "default_voice.json"
"""In the state directory: the default voice chosen at run time (``default_voice`` op)."""


class Daemon:
    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.voice_store = VoiceStore.in_state_dir(settings.daemon.state_dir)
        self._config_voices = settings.voices
        # The studio's voices join the configured ones (and count for choosing F5 under 'auto').
        settings = replace(settings, voices=merged(settings.voices, self.voice_store))
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.signals = Signals()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.outbox = Outbox(self.ctx)
        q = settings.queue
        self.scheduler = Scheduler(Limits(q.max_jobs, q.max_audio_s, q.max_per_user))
        engine, why = create_engine(*config.engine_sections(settings))
        _log.info("engine chosen", engine=engine.name, why=why)
        stopping = threading.Event()
        self.engine = faults.wrap(engine, settings.debug, stopping)
        audio = settings.audio
        self.sinks: list[Sink] = [
            PcmSink(
                self.outbox,
                publish="pcm" in audio.sinks,
                pacing=Pacing(audio.pace_lead_s) if audio.paced else None,
                paused=lambda: self.scheduler.paused,
            )
        ]
        if "alsa" in settings.audio.sinks:
            from ishowttsd.sinks.alsa import AlsaSink

            self.sinks.append(AlsaSink(settings.audio, settings.audio.idle_close_s))
        self.ready = False
        self.engine_why = why
        self.watchdog = Watchdog(settings.watchdog, self.notifier, engine=self.engine.name)
        self.telemetry = Telemetry()
        self.leveller = Leveller(settings.audio.loudness)
        self.report = Report(self.outbox)
        """Every job event leaves through it (journal row first): the admission's and the worker's."""
        self.admission = Admission(settings, self.scheduler, self.report, voice_ids=self._voice_ids)
        self.worker = Worker(
            self.engine,
            self.scheduler,
            self.sinks,
            self.outbox,
            self.report,
            self._warmup_progress,
            watchdog=self.watchdog,
            stopping=stopping,
        )
        self.worker.leveller = self.leveller
        self.sockets = Sockets(
            settings,
            self.scheduler,
            self.outbox,
            self.ctx,
            self.admission,
            status_extra=self._status_extra,
            voices=self._voices,
            ready=lambda: self.ready,
            voice_ops=self,
        )
        self.admission.replay()  # before serving, so replayed jobs keep their place ahead of new ones

    # -- callbacks from the sockets and worker ---------------------------------------------------------
    def _warmup_progress(self, line: str) -> None:
        _log.info("starting", step=line)
        self.notifier.extend_timeout(WARMUP_EXTEND_S, status=line)

    def _voices(self) -> list[dict[str, Any]]:
        if not self.ready:
            return []
        default = self._default_voice()
        return [{**vars(v), "default": v.id == default} for v in self.engine.voices()]

    def _default_voice(self) -> str | None:
        if not self.ready:
            return None
        chosen = self.admission.default_voice
        ids = self._voice_ids() or set()
        return chosen if chosen in ids else self.engine.default_voice()

    # -- voice ops (server.VoiceOps) ---------------------------------------------------------------
    def set_default_voice(self, voice: str | None) -> Event:
        """``default_voice`` op: jobs without a voice get ``voice`` (None: the configured default);
        kept in the state directory across restarts."""
        known = self._voice_ids()
        if known is None:
            return Error(code="not_ready", reason="the engine is still warming up")
        if voice is not None and voice not in known:
            reason = f"unknown voice {voice!r}; known: {', '.join(sorted(known))}"
            return Error(code="unknown_voice", reason=reason)
        self.admission.default_voice = voice
        path = self.settings.daemon.state_dir / DEFAULT_VOICE_FILE
        try:
            if voice is None:
                path.unlink(missing_ok=True)
            else:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"voice": voice}))
                os.replace(tmp, path)
        except OSError as e:
            _log.error("default voice not saved; it holds until the next restart", error=str(e))
        _log.info("default voice set", voice=voice, effective=self._default_voice())
        return VoiceChosen(voice=self._default_voice())

    def _load_default_voice(self) -> None:
        path = self.settings.daemon.state_dir / DEFAULT_VOICE_FILE
        try:
            voice = json.loads(path.read_text()).get("voice")
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as e:
            _log.warning("default voice file unreadable; using the configured default", error=str(e))
            return
        if isinstance(voice, str) and voice in (self._voice_ids() or set()):
            self.admission.default_voice = voice
        else:
            _log.warning("chosen default voice is gone; using the configured default", voice=voice)

    def _voice_ids(self) -> set[str] | None:
        """Known voice ids, or None while warming up (a voice can't be checked yet)."""
        if not self.ready:
            return None
        return {v.id for v in self.engine.voices()}

    def _job_counts(self) -> dict[str, int]:
        """How accepted jobs ended: the worker's counts, and cancelled ones wherever they were
        (a job cancelled while it still waited never reaches the worker)."""
        counts = dict(self.worker.counters)
        counts["cancelled"] += self.admission.cancelled_waiting
        return counts

    def _status_extra(self) -> dict[str, Any]:
        last = self.worker.last_result
        return {
            "ready": self.ready,
            "version": __version__,
            "engine": self.engine.name,
            "engine_why": self.engine_why,
            "default_voice": self._default_voice(),
            "warmup_s": round(self.worker.warmup_s, 3),
            "jobs": self._job_counts(),
            "batching": dict(self.worker.batch_counters),
            "last_job": {
                "audio_s": round(last.audio_s, 3),
                "synth_s": round(last.synth_s, 4),
                "rtf": round(last.rtf, 5),
            }
            if last
            else None,
            "sinks": list(self.settings.audio.sinks),
            "loudness": self.leveller.status(),
            "watchdog": self.watchdog.snapshot(),
            "telemetry": self.telemetry.read(),
            "chat": self.admission.status(),
        }

    # -- lifecycle -------------------------------------------------------------------------------------
    def run(self) -> int:
        self.signals.install()
        self.notifier.status("loading engine")
        self.watchdog.start_warmup()
        self.worker.start()
        try:
            while not self.signals.stop.is_set():
                self.sockets.poll_once(250)
                self._tick_watchdog()
                self.admission.tick()  # a journal that opened late; the pause kept; held lines expire
                if not self.ready and self.worker.ready.is_set():
                    if self.worker.startup_error is not None:
                        return self._startup_failed(self.worker.startup_error)
                    self.ready = True
                    self._load_default_voice()
                    names = ", ".join(v.id for v in self.engine.voices())
                    status = f"ready: {self.engine.name} ({names}), warm-up {self.worker.warmup_s:.1f} s"
                    self.notifier.ready(status)
                    _log.info("ready", engine=self.engine.name, warmup_s=round(self.worker.warmup_s, 3))
                    self.sockets.out.publish(Ready(engine=self.engine.name))
                    self.admission.on_ready()
                if self.signals.reload.is_set():
                    self.signals.reload.clear()
                    self.reload()
            return self.shutdown()
        finally:
            self.close()

    def _tick_watchdog(self) -> None:
        if not self.ready:  # systemd's watchdog starts with READY=1: no pings before it
            return
        now = time.monotonic()  # the worker stamps its heartbeat with the same clock
        # Audio still playing out counts as progress (the ALSA sink counts the samples it played).
        played = sum(int(getattr(s, "samples_played", 0)) for s in self.sinks)
        alive = self.watchdog.alive(now, self.worker.heartbeat, self.worker.is_alive(), played)
        self.watchdog.tick(now, alive)

    def reload(self) -> None:
        """SIGHUP: re-read the config file for the reloadable parts (chat filters, voices).

        A broken file is reported and the running settings stay: a typo made live on stream
        must not take the voice away. Voices reload in the worker, between jobs.
        """
        _log.info("reload requested (SIGHUP)", config=str(self.settings.file))
        if self.settings.file is not None:
            try:
                new = config.load(self.settings.file)
            except ConfigError as e:
                _log.error("reload failed; keeping the running settings", error=str(e))
                self.notifier.status(f"reload failed: {e}")
                return
            reloads: list[tuple[str, Callable[[], None]]] = [
                ("chat filters", lambda: self.admission.reload(new.chat)),
                ("loudness", lambda: self.leveller.reload(new.audio.loudness)),
            ]
            curve = self.sockets.curve
            if curve is not None:
                reloads.append(("client keys", curve.reload))  # the authorised client keys
            for what, reload in reloads:
                try:
                    reload()
                except Exception:
                    _log.exception("reload failed", part=what)
            self._config_voices = new.voices
        self.reload_voices()

    def reload_voices(self, reply: EventOut | None = None) -> None:
        """The configured voices and the studio's, to the engine between jobs (SIGHUP, and the
        ``reload_voices`` op, whose reply the worker sends when the engine has them)."""
        self.worker.request_reload(merged(self._config_voices, self.voice_store), reply)

    def _startup_failed(self, err: BaseException) -> int:
        where = str(self.settings.file or "built-in defaults")
        _log.error("engine failed to start", error=str(err), kind=type(err).__name__, config=where)
        self.notifier.send(STATUS=f"failed: {err} (configuration {where})", ERRNO=1)
        return EXIT_STARTUP

    def shutdown(self) -> int:
        self.notifier.stopping("stopping: finishing the current job")
        _log.info("stopping", drain_timeout_s=self.settings.daemon.drain_timeout_s)
        left = self.scheduler.close()
        for job in left:
            job.cancel.cancel("shutdown")
            self.report.emit(job, Cancelled(reason="shutdown"))
        # ``busy``, not ``current``: a batch's other jobs (cancelled by close()) are reported by
        # the worker after the speaking one, and their events must leave before we exit.
        deadline = time.monotonic() + self.settings.daemon.drain_timeout_s
        while self.scheduler.busy and time.monotonic() < deadline:
            self.sockets.poll_once(50)
        if self.scheduler.busy:
            self.scheduler.stop_current("shutdown")
            end = time.monotonic() + 2.0
            while self.scheduler.busy and time.monotonic() < end:
                self.sockets.poll_once(50)
        self.worker.stopping.set()
        self.sockets.out.flush()
        return EXIT_OK

    def close(self) -> None:
        self.worker.stopping.set()
        if self.worker.is_alive():
            # Let a native call in progress (model load, warm-up) return before tearing down.
            self.worker.join(timeout=self.settings.daemon.drain_timeout_s)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                _log.warning("sink close failed", sink=sink.name, error=str(e))
        self.telemetry.close()
        self.sockets.close()
        self.outbox.close()
        self.notifier.close()
        self.admission.close()
        self.ctx.term()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ishowttsd",
        description="Chat-to-speech daemon. Exit codes: 0 stopped cleanly, 2 invalid configuration, "
        "3 failed to start (engine files, sockets).",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="TOML settings (default: $ISHOWTTS_CONFIG, "
        "else /etc/ishowtts/ishowtts.toml if present, else built-in defaults)",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the settings (and the voices' reference recordings) and exit",
    )
    p.add_argument("--pid-file", metavar="PATH", help="write the daemon's pid here; removed when it stops")
    p.add_argument("--version", action="version", version=f"ishowttsd {__version__}")
    return p


def _uses_voices(settings: Settings) -> bool:
    """Whether this start will load the F5 voices (so a broken one is fatal now)."""
    if settings.engine.kind != "auto":
        return settings.engine.kind == "f5"
    from ishowttsd.engine.f5.settings import availability

    return availability(settings.f5, settings.voices)[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = config.find_config(args.config)
    try:
        settings = config.load(path)
        if args.check_config or _uses_voices(settings):
            config.check_files(settings)
    except ConfigError as e:
        print(f"ishowttsd: invalid configuration: {e}", file=sys.stderr)
        return EXIT_CONFIG
    where = str(settings.file or "built-in defaults")
    log.configure(settings.daemon.log_level, settings.daemon.log_format)
    # Nothing the daemon creates (sockets, journal, caches) is for other users, whatever umask it inherited.
    os.umask(os.umask(0) | 0o007)
    if args.check_config:
        print(f"ishowttsd: {where}: configuration OK")
        return EXIT_OK
    _log.info("starting", version=__version__, config=where)
    pid_file = PidFile(Path(args.pid_file).absolute()) if args.pid_file else None
    try:
        if pid_file is not None:
            pid_file.write()
        try:
            daemon = Daemon(settings)
        except (StartupError, OSError, zmq.ZMQError) as e:
            _log.error("cannot start", error=str(e), config=where)
            Notifier().send(STATUS=f"failed: {e} (configuration {where})", ERRNO=1)
            return EXIT_STARTUP
        rc = daemon.run()
    finally:
        if pid_file is not None:
            pid_file.remove()
    if daemon.worker.is_alive():
        # Still inside native code (a stuck kernel, a slow load): finalising the interpreter under
        # it aborts the process (std::terminate, SIGABRT). Leave without finalisers instead.
        _log.warning("worker still busy at exit; exiting without interpreter cleanup")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


class PidFile:
    """``--pid-file``: the daemon's pid while it runs, removed when it stops (not after kill -9:
    then it names a dead pid, which ``kill -0`` tells)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(self.path)

    def remove(self) -> None:
        """Only our own: a newer daemon may have written its pid over ours."""
        try:
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
