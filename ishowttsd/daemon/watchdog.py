"""The systemd watchdog: a heartbeat that only beats while the worker is alive, and an RTF monitor.

Two ways the appliance can go bad without crashing, and what this module does about each:

* **A hung synthesis** (a stuck GPU kernel, a deadlock): the worker stops stamping its heartbeat,
  the daemon passes ``worker_alive=False`` to :meth:`Watchdog.tick`, the ``WATCHDOG=1`` pings
  stop, and systemd kills and restarts the service ``WatchdogSec=`` later.
* **A slow synthesis** (clocks unlocked, thermal throttling, memory fragmentation): each finished
  job's time is compared with what the warm-up baseline predicts for that much audio. When the
  median of that ratio over the last ``rtf_window`` jobs stays above ``rtf_factor`` for
  ``rtf_jobs`` jobs in a row, it logs why, sets ``STATUS=`` and sends ``WATCHDOG=trigger``, which
  systemd (>= 243, per its NEWS) handles as a watchdog timeout: kill, then ``Restart=on-failure``.

Normalisation: a model's time is not proportional to its audio. F5 attends over the reference clip
as well as the new audio, and every job pays fixed costs (text processing, first kernel launches),
so short lines have a much higher raw RTF than long ones. The baseline is therefore a line,
``synth_s = overhead_s + s_per_audio_s * audio_s``, fitted to the calibration lines timed at the end
of warm-up; a job's *normalised RTF* is its synthesis time divided by that prediction (1.0 = as fast
as at warm-up), so a 1 s and a 20 s line compare.

Nothing fires during warm-up: jobs reported then are calibration samples, and no pings are sent
before :meth:`Watchdog.warmup_done` (systemd's watchdog only runs once READY=1 has been sent;
``TimeoutStartSec=`` covers start-up). This module knows nothing of ZeroMQ or torch: the daemon
calls it from its main loop and passes the time in, so the tests drive it with a fake clock.
"""

from __future__ import annotations

import functools
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from ishowttsd import log
from ishowttsd.confread import Table

_log = log.get(__name__)

CALIBRATION_LINES = (
    "Thanks for the follow!",
    "Welcome to the stream, everyone. Tonight we are trying the hardest level again, so wish me luck.",
)
"""Timed after warm-up to fit the baseline: one short and one long line, so the fit has a slope."""


@dataclass(frozen=True)
class WatchdogSettings:
    """The ``[watchdog]`` table."""

    stall_s: float = 60.0
    """Seconds without a worker heartbeat (while it works on a job) that count as a hang. The
    worker stamps its heartbeat at every audio chunk and every idle poll, so this must exceed the
    slowest single chunk, including any shape compiled on first use."""
    rtf_check: bool = True
    """Restart the daemon when synthesis drifts slower than the warm-up baseline."""
    rtf_engines: tuple[str, ...] = ("f5",)
    """Engines whose RTF is checked. Not Piper by default: on the CPU its speed follows whatever
    else the CPU is doing (an encoder, a browser), which a restart cannot fix."""
    rtf_factor: float = 2.0
    """Drift threshold: the window's median normalised RTF (1.0 = warm-up speed) must exceed this."""
    rtf_window: int = 5
    """Jobs in the rolling window whose median is compared with ``rtf_factor``."""
    rtf_jobs: int = 3
    """Consecutive finished jobs the drift must persist for before ``WATCHDOG=trigger``."""
    min_audio_s: float = 0.5
    """Jobs with less audio than this (seconds) are not counted: their timing is mostly noise."""


def rtf_checked(settings: WatchdogSettings, engine: str) -> bool:
    """Whether the RTF monitor runs for ``engine`` (and calibration lines are worth timing)."""
    return settings.rtf_check and engine in settings.rtf_engines


def parse_watchdog(t: Table) -> WatchdogSettings:
    """Read the ``[watchdog]`` table (``t`` is that table); unknown keys are errors."""
    d = WatchdogSettings()
    s = WatchdogSettings(
        stall_s=t.number("stall_s", d.stall_s, min=1.0, max=3600.0),
        rtf_check=t.flag("rtf_check", d.rtf_check),
        rtf_engines=t.str_list("rtf_engines", d.rtf_engines),
        rtf_factor=t.number("rtf_factor", d.rtf_factor, min=1.05, max=100.0),
        rtf_window=t.integer("rtf_window", d.rtf_window, min=1, max=1000),
        rtf_jobs=t.integer("rtf_jobs", d.rtf_jobs, min=1, max=1000),
        min_audio_s=t.number("min_audio_s", d.min_audio_s, min=0.0, max=600.0),
    )
    t.finish()
    return s


class Notify(Protocol):
    """What the watchdog needs of :class:`ishowttsd.notify.Notifier`."""

    watchdog_usec: int

    def watchdog(self) -> bool: ...

    def watchdog_trigger(self, status: str) -> bool: ...

    def status(self, text: str) -> bool: ...


@dataclass(frozen=True)
class Sample:
    """One timed synthesis."""

    audio_s: float
    """Seconds of audio produced."""
    synth_s: float
    """Seconds spent producing it."""
    chars: int = 0


@dataclass(frozen=True)
class Baseline:
    """Predicted synthesis seconds for an amount of audio: ``overhead_s + s_per_audio_s * audio_s``."""

    overhead_s: float
    """Seconds every job pays regardless of length."""
    s_per_audio_s: float
    """Synthesis seconds per second of audio beyond the overhead (the marginal RTF)."""

    def predict(self, audio_s: float) -> float:
        return self.overhead_s + self.s_per_audio_s * audio_s

    @classmethod
    def fit(cls, samples: Sequence[Sample]) -> Baseline | None:
        """Least-squares line through the samples; a plain RTF (no overhead) when it can't be fitted.

        None when no sample has audio (nothing to compare against).
        """
        pts = [(s.audio_s, s.synth_s) for s in samples if s.audio_s > 0 and s.synth_s > 0]
        if not pts:
            return None
        total_a = sum(a for a, _ in pts)
        plain = cls(0.0, sum(s for _, s in pts) / total_a)
        if len(pts) < 2:
            return plain
        mean_a = total_a / len(pts)
        mean_s = sum(s for _, s in pts) / len(pts)
        var = sum((a - mean_a) ** 2 for a, _ in pts)
        if var <= 1e-9:
            return plain
        slope = sum((a - mean_a) * (s - mean_s) for a, s in pts) / var
        overhead = mean_s - slope * mean_a
        if slope <= 0 or overhead < 0:
            # Timing noise (or a longer line that ran faster): a line through the origin is safer.
            return plain
        return cls(overhead, slope)


def time_calibration(
    synthesize: Callable[[str], Iterable[Any]],
    lines: Sequence[str] = CALIBRATION_LINES,
    timer: Callable[[], float] = time.perf_counter,
    repeats: int = 2,
) -> list[Sample]:
    """Time ``synthesize(line)`` for each line; its items need a ``seconds`` attribute (AudioChunk).

    Each line runs ``repeats`` times and the fastest run counts: a one-off stall (a page fault,
    another process) must not make the baseline slow and the watchdog blind. Call it after the
    engine's own warm-up, on the worker thread that owns the engine, and hand the samples to
    :meth:`Watchdog.warmup_done`.
    """
    out: list[Sample] = []
    for line in lines:
        best: Sample | None = None
        for _ in range(max(1, repeats)):
            t0 = timer()
            audio_s = sum(float(c.seconds) for c in synthesize(line))
            run = Sample(audio_s=audio_s, synth_s=timer() - t0, chars=len(line))
            if best is None or run.synth_s < best.synth_s:
                best = run
        assert best is not None
        out.append(best)
    return out


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(fn: Callable[Concatenate[Watchdog, _P], _R]) -> Callable[Concatenate[Watchdog, _P], _R]:
    @functools.wraps(fn)
    def inner(self: Watchdog, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return fn(self, *args, **kwargs)

    return inner


class Watchdog:
    """Heartbeat and RTF monitor. Thread-safe: ``job_finished`` comes from the worker thread,
    ``tick`` from the main loop.

    Lifecycle, as the daemon calls it:

    1. ``Watchdog(settings, notifier, clock, engine=name)`` - before loading the engine.
    2. ``start_warmup()`` - load and warm-up begin; nothing fires, no pings.
    3. ``warmup_done(samples)`` - calibration samples (:func:`time_calibration`) or an explicit
       :class:`Baseline`; with neither, the first ``rtf_window`` counted jobs become the baseline.
       Send READY=1 right after.
    4. ``job_finished(audio_s, synth_s, text_chars)`` - after every *completed* job (not cancelled
       or failed ones: their time says nothing about speed).
    5. ``tick(now, worker_alive)`` - about every 0.5 s from the main loop. ``worker_alive`` is the
       worker thread being alive and its heartbeat younger than ``settings.stall_s``
       (see :meth:`worker_alive`).
    """

    def __init__(
        self,
        settings: WatchdogSettings,
        notifier: Notify,
        clock: Callable[[], float] = time.monotonic,
        engine: str | None = None,
    ) -> None:
        self.settings = settings
        self.rtf_enabled = rtf_checked(settings, engine) if engine is not None else settings.rtf_check
        """Whether a drift triggers a restart (``rtf_check`` and, given an engine, ``rtf_engines``)."""
        self._notify = notifier
        self._clock = clock
        usec = notifier.watchdog_usec
        self.interval_s: float | None = usec / 2_000_000 if usec > 0 else None
        """Seconds between WATCHDOG=1 pings: half of ``$WATCHDOG_USEC`` (None: no watchdog asked for)."""
        self.phase = "init"
        """``init`` -> ``warmup`` -> ``running``; ``triggered`` after WATCHDOG=trigger."""
        self.baseline: Baseline | None = None
        self._warm_samples: list[Sample] = []
        self._learn: list[Sample] = []
        self._ratios: deque[float] = deque(maxlen=settings.rtf_window)
        self._over = 0
        self._last_ping: float | None = None
        self._stalled_since: float | None = None
        self._played = 0
        self._played_at = float("-inf")
        self.pings = 0
        self.jobs_counted = 0
        self.trigger_reason: str | None = None
        self._lock = threading.RLock()

    # -- lifecycle ---------------------------------------------------------------------------------
    @_locked
    def start_warmup(self) -> None:
        self.phase = "warmup"
        self._warm_samples.clear()

    @_locked
    def warmup_done(self, samples: Sequence[Sample] | Baseline | None = None) -> None:
        """End of warm-up: fix the baseline from ``samples`` (plus any jobs reported during warm-up)."""
        if isinstance(samples, Baseline):
            self.baseline = samples
        else:
            self.baseline = Baseline.fit([*self._warm_samples, *(samples or ())])
        self.phase = "running"
        self._last_ping = None  # the first tick after READY pings at once
        if self.baseline is not None:
            _log.info(
                "rtf baseline",
                overhead_s=round(self.baseline.overhead_s, 4),
                s_per_audio_s=round(self.baseline.s_per_audio_s, 5),
            )
        else:
            _log.info("rtf baseline will be learnt from the first jobs", jobs=self.settings.rtf_window)

    def calibrate(self, synthesize: Callable[[str], Iterable[Any]], progress: Callable[[str], None]) -> None:
        """Worker thread, after the engine's warm-up and before it takes jobs: time the calibration
        lines for the RTF baseline and end the warm-up (:meth:`warmup_done`). On the worker, not in
        the main loop, so a job finishing just after warm-up can't be mistaken for a calibration
        sample."""
        samples: list[Sample] = []
        if self.rtf_enabled:
            progress("timing the watchdog's calibration lines")
            try:
                samples = time_calibration(synthesize)
            except Exception as e:  # the baseline is then learnt from the first jobs instead
                _log.warning("watchdog calibration failed", error=str(e))
        self.warmup_done(samples)

    def job_done(self, who: str, text: str, audio_s: float, synth_s: float, chars: int) -> None:
        """Worker thread, after each completed job: feed the RTF monitor; show the line in STATUS=."""
        self.job_finished(audio_s, synth_s, chars)
        if self.phase != "triggered":  # keep the trigger's reason visible
            self._notify.status(f"ready; last: {who}: {text}")

    @staticmethod
    def worker_alive(now: float, heartbeat: float, thread_alive: bool, stall_s: float) -> bool:
        """The ``worker_alive`` argument of :meth:`tick`, from the worker's last heartbeat stamp."""
        return thread_alive and (now - heartbeat) < stall_s

    @_locked
    def alive(self, now: float, heartbeat: float, thread_alive: bool, samples_played: int = 0) -> bool:
        """The ``worker_alive`` argument of :meth:`tick`, counting audible progress as progress.

        After synthesising a long line the worker waits in the sound card's sink until it has been
        played, minutes for a long ``say``, without stamping its heartbeat. So the worker counts
        as alive while its thread runs and either its heartbeat or the growth of
        ``samples_played`` (the sinks' played-sample counter) is younger than ``stall_s``. A hung
        synthesis still stops both within seconds: the sink runs dry.
        """
        if samples_played != self._played:
            self._played, self._played_at = samples_played, now
        return thread_alive and now - max(heartbeat, self._played_at) < self.settings.stall_s

    # -- the RTF monitor ---------------------------------------------------------------------------
    @_locked
    def job_finished(self, audio_s: float, synth_s: float, text_chars: int = 0) -> float | None:
        """Record a completed job. Returns its normalised RTF, or None when it was not counted."""
        sample = Sample(audio_s=audio_s, synth_s=synth_s, chars=text_chars)
        if self.phase in ("init", "warmup"):
            if audio_s > 0:
                self._warm_samples.append(sample)
            return None
        if audio_s < max(self.settings.min_audio_s, 1e-6) or synth_s <= 0:
            return None
        if self.baseline is None:
            self._learn.append(sample)
            if len(self._learn) >= self.settings.rtf_window:
                self.baseline = Baseline.fit(self._learn)
                self._learn.clear()
                _log.info("rtf baseline learnt from jobs", baseline=self.baseline)
            return None
        expected = self.baseline.predict(audio_s)
        ratio = synth_s / expected if expected > 0 else float("inf")
        self.jobs_counted += 1
        self._ratios.append(ratio)
        if self.phase != "running" or not self.rtf_enabled:
            return ratio
        needed = min(self.settings.rtf_window, self.settings.rtf_jobs)
        drift = self.drift()
        if len(self._ratios) >= needed and drift is not None and drift > self.settings.rtf_factor:
            self._over += 1
            _log.warning(
                "rtf drift",
                normalised_rtf=round(ratio, 3),
                window_median=round(drift, 3),
                factor=self.settings.rtf_factor,
                jobs_over=self._over,
                of=self.settings.rtf_jobs,
            )
        else:
            self._over = 0
        if self._over >= self.settings.rtf_jobs:
            self._trigger(drift or ratio, audio_s, synth_s)
        return ratio

    def drift(self) -> float | None:
        """Median normalised RTF over the rolling window (None before any job was counted)."""
        return statistics.median(self._ratios) if self._ratios else None

    def _trigger(self, drift: float, audio_s: float, synth_s: float) -> None:
        assert self.baseline is not None
        reason = (
            f"watchdog: synthesis {drift:.2f}x slower than at warm-up for {self._over} jobs "
            f"(limit {self.settings.rtf_factor:g}x; last job {synth_s:.2f} s for {audio_s:.2f} s of audio, "
            f"expected {self.baseline.predict(audio_s):.2f} s); restarting"
        )
        self.trigger_reason = reason
        self.phase = "triggered"
        _log.error(
            "rtf watchdog trigger",
            reason=reason,
            window=[round(r, 3) for r in self._ratios],
            baseline_overhead_s=round(self.baseline.overhead_s, 4),
            baseline_s_per_audio_s=round(self.baseline.s_per_audio_s, 5),
        )
        self._notify.watchdog_trigger(reason)

    # -- the heartbeat -----------------------------------------------------------------------------
    @_locked
    def tick(self, now: float | None = None, worker_alive: bool = True) -> bool:
        """Call about every 0.5 s. Sends WATCHDOG=1 when one is due and the worker is alive.

        Returns whether a ping was sent. No pings before warm-up ends, and none after a trigger:
        should a systemd too old for ``WATCHDOG=trigger`` ignore it, the silence still gets the
        daemon restarted ``WatchdogSec=`` later.
        """
        now = self._clock() if now is None else now
        if self.phase != "running":
            return False
        if not worker_alive:
            if self._stalled_since is None:
                self._stalled_since = now
                _log.error("worker stalled: watchdog pings stop", stall_s=self.settings.stall_s)
                self._notify.status(f"worker stalled (no progress for over {self.settings.stall_s:g} s)")
            return False
        if self._stalled_since is not None:
            _log.warning("worker progressing again", stalled_s=round(now - self._stalled_since, 3))
            self._stalled_since = None
        if self.interval_s is None:
            return False
        if self._last_ping is not None and now - self._last_ping < self.interval_s:
            return False
        self._last_ping = now
        self.pings += 1
        return self._notify.watchdog()

    @_locked
    def snapshot(self) -> dict[str, Any]:
        """Plain values for the daemon's ``status`` reply."""
        drift = self.drift()
        return {
            "phase": self.phase,
            "interval_s": self.interval_s,
            "pings": self.pings,
            "stalled": self._stalled_since is not None,
            "jobs_counted": self.jobs_counted,
            "baseline": None
            if self.baseline is None
            else {
                "overhead_s": round(self.baseline.overhead_s, 4),
                "s_per_audio_s": round(self.baseline.s_per_audio_s, 5),
            },
            "rtf_drift": None if drift is None else round(drift, 3),
            "rtf_check": self.rtf_enabled,
            "rtf_factor": self.settings.rtf_factor,
            "jobs_over": self._over,
            "trigger_reason": self.trigger_reason,
        }


__all__ = [
    "CALIBRATION_LINES",
    "Baseline",
    "Sample",
    "Watchdog",
    "WatchdogSettings",
    "parse_watchdog",
    "rtf_checked",
    "time_calibration",
]
