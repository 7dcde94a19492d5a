"""The daemon's settings: read once from TOML into frozen, typed dataclasses.

Where the file comes from: ``--config PATH``, else ``$ISHOWTTS_CONFIG``, else
``/etc/ishowtts/ishowtts.toml`` when it exists, else the built-in defaults (which are
exactly what ``etc/ishowtts.toml`` in the repository spells out).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import tomlkit
import tomlkit.exceptions

from ishowttsd import paths
from ishowttsd.chat.settings import ChatSettings, parse_chat
from ishowttsd.confread import ConfigError, Table
from ishowttsd.daemon.watchdog import WatchdogSettings, parse_watchdog
from ishowttsd.engine.f5.settings import F5Settings, VoiceSettings, parse_f5, parse_voices
from ishowttsd.engine.settings import EngineSettings, PiperSettings
from ishowttsd.loudness import LoudnessSettings, parse_loudness
from ishowttsd.security import SecuritySettings, check_endpoints, parse_security
from ishowttsd.twitch.settings import TwitchSettings, parse_twitch
from ishowttsd.web.settings import WebSettings, parse_web

SYSTEM_CONFIG = Path("/etc/ishowtts/ishowtts.toml")
ENGINE_KINDS = ("auto", "f5", "piper")
SINK_KINDS = ("alsa", "pcm")

__all__ = ["ConfigError", "Settings", "check_files", "find_config", "load", "parse", "replace"]


@dataclass(frozen=True)
class DaemonSettings:
    log_level: str = "info"
    log_format: str = "console"
    drain_timeout_s: float = 10.0
    """Seconds SIGTERM waits for the current job to finish before stopping it."""
    state_dir: Path = field(default_factory=paths.state_dir)
    cache_dir: Path = field(default_factory=paths.cache_dir)


@dataclass(frozen=True)
class ZmqSettings:
    control: str = field(default_factory=lambda: paths.default_endpoint("control"))
    ingest: str = field(default_factory=lambda: paths.default_endpoint("ingest"))
    ingest_connect: tuple[str, ...] = ()
    pcm: str = field(default_factory=lambda: paths.default_endpoint("pcm"))
    max_message_bytes: int = 65536
    """Largest request accepted, in bytes: a larger control request is answered ``too_large`` (up to
    the control socket's transport bound, 8 MiB); a larger ingest frame drops the bot's connection."""
    pcm_hwm: int = 2000
    """PUB high-water mark in messages: a subscriber that stops reading loses frames, never stalls us."""


@dataclass(frozen=True)
class AudioSettings:
    sinks: tuple[str, ...] = ("alsa", "pcm")
    device: str | int | None = None
    """ALSA/PortAudio output device by name (substring) or index; None is the default device."""
    latency: float = 0.1
    """Output latency in seconds that PortAudio is asked for."""
    idle_close_s: float = 3.0
    """Seconds of silence after which the output device is closed (and free for other programs)."""
    pace: str = "auto"
    """Publish PCM in real time like a sound card: ``on``, ``off``, or ``auto`` (when the pcm sink
    is on and the alsa sink is not: the PUB, e.g. an OBS overlay, is then the speaker)."""
    pace_lead_s: float = 0.2
    """Seconds of audio a paced PUB sends ahead of the moment it is heard."""
    loudness: LoudnessSettings = field(default_factory=LoudnessSettings)
    """One loudness for every voice (``target_lufs``, ``master_gain_db``, ...; ishowttsd/loudness.py)."""

    @property
    def paced(self) -> bool:
        if "pcm" not in self.sinks or self.pace == "off":
            return False
        return self.pace == "on" or "alsa" not in self.sinks


@dataclass(frozen=True)
class QueueSettings:
    max_jobs: int = 200
    max_text_chars: int = 2000
    """A ``say`` or chat text longer than this is rejected (chat filters may truncate first)."""
    max_audio_s: float = 900.0
    """Bound on the estimated seconds of speech waiting in the queue."""
    max_per_user: int = 3
    """At most this many queued chat lines per user (0: no limit)."""


@dataclass(frozen=True)
class DebugSettings:
    """Fault-injection knobs for tests and drills; all off by default."""

    chunk_delay_s: float = 0.0
    """Extra seconds per audio chunk, counted as synthesis time (simulates a slow GPU)."""
    fail_marker: str = ""
    """A job whose text contains this string fails inside the engine (simulates an engine exception)."""
    hang_marker: str = ""
    """A job whose text contains this string hangs the worker (simulates a stuck kernel)."""
    oom_marker: str = ""
    """A job whose text contains this string fails after its first chunk with torch's "CUDA out of
    memory" RuntimeError (simulates a GPU allocation failure mid-job)."""
    host_oom_marker: str = ""
    """The same, raising MemoryError (simulates the host running out of memory mid-job)."""
    warmup_delay_s: float = 0.0
    """Extra seconds of warm-up (interrupted by shutdown): makes SIGTERM-during-warm-up testable."""


@dataclass(frozen=True)
class Settings:
    file: Path | None = None
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    zmq: ZmqSettings = field(default_factory=ZmqSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    piper: PiperSettings = field(default_factory=PiperSettings)
    f5: F5Settings = field(default_factory=F5Settings)
    voices: tuple[VoiceSettings, ...] = ()
    audio: AudioSettings = field(default_factory=AudioSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    debug: DebugSettings = field(default_factory=DebugSettings)
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    twitch: TwitchSettings = field(default_factory=TwitchSettings)
    web: WebSettings = field(default_factory=WebSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)


def find_config(explicit: str | os.PathLike[str] | None, env: dict[str, str] | None = None) -> Path | None:
    env = dict(os.environ) if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("ISHOWTTS_CONFIG"):
        return Path(env["ISHOWTTS_CONFIG"])
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    return None


def load(path: Path | None) -> Settings:
    """Read and validate ``path`` (None: built-in defaults). Raises :class:`ConfigError`, which
    names the file by its absolute path."""
    if path is None:
        return parse({}, None)
    path = path.resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "(file)", f"cannot be read: {e}") from None
    try:
        doc = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.ParseError as e:
        # tomlkit's text ends with its own "at line L col C" (0-based column): say the position
        # once, 1-based as editors count.
        what = re.sub(r" at line \d+ col \d+$", "", str(e))
        raise ConfigError(path, f"line {e.line} column {e.col + 1}", f"not valid TOML: {what}") from None
    return parse(doc, path)


def check_files(settings: Settings) -> None:
    """The checks that read files the settings name (``--check-config`` and start-up run them;
    a SIGHUP reload does not, the engine skips a broken voice then): every voice's reference
    recording must be audio with sound in it. Raises :class:`ConfigError`."""
    from ishowttsd.engine.f5.refcheck import RefAudioError, check

    for i, v in enumerate(settings.voices):
        try:
            check(v.ref_audio)
        except RefAudioError as e:
            raise ConfigError(settings.file, f"voices[{i}].ref_audio", str(e)) from None


def _endpoint(t: Table, name: str, value: str) -> str:
    try:
        return paths.resolve(value, t.file.parent if t.file is not None else None)
    except paths.EndpointError as e:
        raise t.error(name, str(e)) from None


def parse(doc: dict[str, Any], file: Path | None) -> Settings:
    root = Table(doc, "", file)
    daemon = _section(root, "daemon", _daemon)
    zmq_s = _section(root, "zmq", _zmq)
    engine = _section(root, "engine", _engine)
    piper = _section(root, "piper", _piper)
    f5 = parse_f5(root.table("f5"), daemon.state_dir)
    voices = parse_voices(root.tables("voices"))
    audio = _section(root, "audio", _audio)
    queue = _section(root, "queue", _queue)
    debug = _section(root, "debug", _debug)
    if engine.kind == "f5" and not voices:
        raise root.error(
            "voices",
            "[engine] kind = 'f5' needs at least one [[voices]] entry (id, ref_audio, ref_text): "
            "F5 speaks only in cloned voices (docs/F5.md)",
        )
    watchdog = parse_watchdog(root.table("watchdog"))
    chat = parse_chat(root.table("chat"))
    twitch = parse_twitch(root.table("twitch"))
    web = parse_web(root.table("web"), daemon.state_dir)
    security = parse_security(root.table("security"))
    _check_sockets(zmq_s, security, file)
    root.finish()
    return Settings(
        file=file,
        daemon=daemon,
        zmq=zmq_s,
        engine=engine,
        piper=piper,
        f5=f5,
        voices=voices,
        audio=audio,
        queue=queue,
        debug=debug,
        watchdog=watchdog,
        chat=chat,
        twitch=twitch,
        web=web,
        security=security,
    )


_T = TypeVar("_T")


def _section(root: Table, name: str, read: Callable[[Table], _T]) -> _T:
    """Read the table ``name`` with ``read``; its unknown keys are errors."""
    t = root.table(name)
    out = read(t)
    t.finish()
    return out


def _daemon(t: Table) -> DaemonSettings:
    d = DaemonSettings()
    return DaemonSettings(
        log_level=t.choice("log_level", d.log_level, ("debug", "info", "warning", "error")),
        log_format=t.choice("log_format", d.log_format, ("console", "json")),
        drain_timeout_s=t.number("drain_timeout_s", d.drain_timeout_s, min=0),
        state_dir=t.path("state_dir", d.state_dir) or d.state_dir,
        cache_dir=t.path("cache_dir", d.cache_dir) or d.cache_dir,
    )


def _zmq(t: Table) -> ZmqSettings:
    z = ZmqSettings()
    return ZmqSettings(
        control=_endpoint(t, "control", t.string("control", z.control)),
        ingest=_endpoint(t, "ingest", t.string("ingest", z.ingest)),
        ingest_connect=tuple(
            _endpoint(t, f"ingest_connect[{i}]", ep) for i, ep in enumerate(t.str_list("ingest_connect", ()))
        ),
        pcm=_endpoint(t, "pcm", t.string("pcm", z.pcm)),
        max_message_bytes=t.integer("max_message_bytes", z.max_message_bytes, min=1024, max=64 << 20),
        pcm_hwm=t.integer("pcm_hwm", z.pcm_hwm, min=1),
    )


def _engine(t: Table) -> EngineSettings:
    return EngineSettings(kind=t.choice("kind", "auto", ENGINE_KINDS), voice=t.opt_str("voice"))


def _piper(t: Table) -> PiperSettings:
    return PiperSettings(
        model=t.path("model", None),
        config=t.path("config", None),
        length_scale=t.opt_float("length_scale", min=0.1, max=10),
        deterministic=t.flag("deterministic", False),
    )


def _audio(t: Table) -> AudioSettings:
    sinks = t.str_list("sinks", AudioSettings().sinks)
    for s in sinks:
        if s not in SINK_KINDS:
            raise t.error("sinks", f"unknown sink {s!r}; known: {', '.join(SINK_KINDS)}")
    if len(set(sinks)) != len(sinks):
        raise t.error("sinks", "lists a sink twice")
    dev = t.raw("device", None)
    if dev is not None and (isinstance(dev, bool) or not isinstance(dev, (str, int))):
        raise t.error("device", f"expected a device name (string) or index (integer), got {dev!r}")
    return AudioSettings(
        sinks=sinks,
        device=dev,
        latency=t.number("latency", AudioSettings().latency, min=0.0, max=5.0),
        idle_close_s=t.number("idle_close_s", AudioSettings().idle_close_s, min=0.1, max=3600),
        pace=t.choice("pace", AudioSettings().pace, ("auto", "on", "off")),
        pace_lead_s=t.number("pace_lead_s", AudioSettings().pace_lead_s, min=0.05, max=5.0),
        loudness=parse_loudness(t),
    )


def _queue(t: Table) -> QueueSettings:
    q = QueueSettings()
    return QueueSettings(
        max_jobs=t.integer("max_jobs", q.max_jobs, min=1, max=100000),
        max_text_chars=t.integer("max_text_chars", q.max_text_chars, min=1, max=1_000_000),
        max_audio_s=t.number("max_audio_s", q.max_audio_s, min=1),
        max_per_user=t.integer("max_per_user", q.max_per_user, min=0),
    )


def _debug(t: Table) -> DebugSettings:
    return DebugSettings(
        chunk_delay_s=t.number("chunk_delay_s", 0.0, min=0, max=3600),
        fail_marker=t.string("fail_marker", ""),
        hang_marker=t.string("hang_marker", ""),
        oom_marker=t.string("oom_marker", ""),
        host_oom_marker=t.string("host_oom_marker", ""),
        warmup_delay_s=t.number("warmup_delay_s", 0.0, min=0, max=3600),
    )


def _check_sockets(zmq_s: ZmqSettings, security: SecuritySettings, file: Path | None) -> None:
    """Each socket its own endpoint; a network endpoint only with CURVE keys."""
    eps = {"zmq.control": zmq_s.control, "zmq.ingest": zmq_s.ingest, "zmq.pcm": zmq_s.pcm}
    eps.update({f"zmq.ingest_connect[{i}]": ep for i, ep in enumerate(zmq_s.ingest_connect)})
    clash = paths.find_clash(eps)
    if clash is not None:
        raise ConfigError(
            file, clash[1], f"{eps[clash[1]]!r} is also {clash[0]}'s endpoint: each socket needs its own"
        )
    check_endpoints(eps, security, file)


def engine_sections(
    s: Settings,
) -> tuple[EngineSettings, F5Settings, tuple[VoiceSettings, ...], PiperSettings, Path]:
    """The sections :func:`ishowttsd.engine.create_engine` takes (engines never see the rest)."""
    return s.engine, s.f5, s.voices, s.piper, s.daemon.cache_dir


def f5_sections(s: Settings) -> tuple[F5Settings, tuple[VoiceSettings, ...], str | None, Path]:
    """What :class:`~ishowttsd.engine.f5.engine.F5Engine` takes: ``[f5]``, the voices, the
    default voice and the cache directory."""
    return s.f5, s.voices, s.engine.voice, s.daemon.cache_dir
