"""The watchdog as plain code: a fake clock, and a real AF_UNIX datagram socket as NOTIFY_SOCKET.

The daemon-level tests (real process, real signals) are in test_notify_daemon.py.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomlkit

from ishowttsd import config
from ishowttsd.confread import ConfigError
from ishowttsd.daemon.watchdog import Baseline, Sample, Watchdog, WatchdogSettings, time_calibration
from ishowttsd.notify import Notifier


class NotifySocket:
    """The systemd side: a bound datagram socket; ``messages()`` drains what has arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    def messages(self) -> list[dict[str, str]]:
        out = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode("utf-8").split("\n")))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_sock(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def make(
    sock: NotifySocket, watchdog_usec: int = 2_000_000, **overrides: float | int | bool
) -> tuple[Watchdog, list[float]]:
    now = [1000.0]
    env = {"NOTIFY_SOCKET": str(sock.path), "WATCHDOG_USEC": str(watchdog_usec)}
    wd = Watchdog(WatchdogSettings(**overrides), Notifier(env), clock=lambda: now[0])  # type: ignore[arg-type]
    return wd, now


def warm(wd: Watchdog) -> None:
    """A baseline of 0.1 s per job + 0.05 s per audio second, from two calibration lines."""
    wd.start_warmup()
    wd.warmup_done([Sample(1.0, 0.15, 20), Sample(10.0, 0.6, 200)])


# -- baseline -------------------------------------------------------------------------------------


def test_baseline_fit_line_and_fallbacks() -> None:
    b = Baseline.fit([Sample(1.0, 0.15), Sample(10.0, 0.6)])
    assert b is not None
    assert b.overhead_s == pytest.approx(0.1)
    assert b.s_per_audio_s == pytest.approx(0.05)
    # One sample: a plain RTF through the origin.
    one = Baseline.fit([Sample(4.0, 1.0)])
    assert one == Baseline(0.0, 0.25)
    # A longer line that ran faster (noise): no negative slope, a plain RTF instead.
    noisy = Baseline.fit([Sample(1.0, 0.5), Sample(10.0, 0.4)])
    assert noisy is not None and noisy.overhead_s == 0.0
    assert noisy.s_per_audio_s == pytest.approx(0.9 / 11)
    assert Baseline.fit([Sample(0.0, 0.2)]) is None


def test_normalised_rtf_compares_short_and_long_lines(notify_sock: NotifySocket) -> None:
    wd, _ = make(notify_sock)
    warm(wd)
    # Both lines run exactly at baseline speed although their raw RTFs differ fourfold.
    short = wd.job_finished(1.0, 0.15, 20)
    long = wd.job_finished(20.0, 1.1, 400)
    assert short == pytest.approx(1.0)
    assert long == pytest.approx(1.0)
    assert 0.15 / 1.0 > 2.5 * (1.1 / 20.0)  # raw RTFs: 0.15 vs 0.055


def test_time_calibration_keeps_the_fastest_run() -> None:
    # Line 1 runs take 0.3 s then 0.2 s; line 2 runs take 1.5 s then 4.0 s (a stall).
    ticks = iter([0.0, 0.3, 1.0, 1.2, 2.0, 3.5, 4.0, 8.0])

    def synth(line: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(seconds=len(line) / 10), SimpleNamespace(seconds=0.5)]

    samples = time_calibration(synth, ["abcd", "abcdefghij"], timer=lambda: next(ticks))
    assert samples == [Sample(0.9, pytest.approx(0.2), 4), Sample(1.5, 1.5, 10)]


# -- RTF trigger ----------------------------------------------------------------------------------


def test_drift_triggers_after_configured_jobs(notify_sock: NotifySocket) -> None:
    wd, _ = make(notify_sock, rtf_factor=2.0, rtf_window=3, rtf_jobs=2)
    warm(wd)
    for _ in range(3):
        wd.job_finished(5.0, 0.35, 100)  # at baseline (0.1 + 0.25)
    assert notify_sock.messages() == []
    wd.job_finished(5.0, 1.05, 100)  # 3x: one slow job does not move the median
    assert wd.snapshot()["jobs_over"] == 0
    wd.job_finished(5.0, 1.05, 100)  # median of (1, 3, 3) = 3 > 2: first job over
    assert wd.snapshot()["jobs_over"] == 1
    assert notify_sock.messages() == []
    wd.job_finished(2.0, 0.6, 40)  # 3x again, a different length: second job over -> trigger
    msgs = notify_sock.messages()
    assert len(msgs) == 1
    assert msgs[0]["WATCHDOG"] == "trigger"
    assert "3.00x slower than at warm-up for 2 jobs" in msgs[0]["STATUS"]
    assert wd.phase == "triggered"
    # Once only, and no more pings: if the trigger is ignored, the silence restarts us.
    wd.job_finished(5.0, 1.05, 100)
    assert wd.tick(worker_alive=True) is False
    assert notify_sock.messages() == []


def test_recovery_resets_the_count(notify_sock: NotifySocket) -> None:
    wd, _ = make(notify_sock, rtf_factor=2.0, rtf_window=1, rtf_jobs=3)
    warm(wd)
    for synth in (1.05, 1.05, 0.35, 1.05, 1.05):  # never three slow jobs in a row
        wd.job_finished(5.0, synth, 100)
    assert notify_sock.messages() == []
    wd.job_finished(5.0, 1.05, 100)
    assert notify_sock.messages()[0]["WATCHDOG"] == "trigger"


def test_nothing_fires_during_warmup(notify_sock: NotifySocket) -> None:
    wd, now = make(notify_sock, rtf_window=1, rtf_jobs=1)
    wd.start_warmup()
    for _ in range(10):
        assert wd.job_finished(5.0, 50.0, 100) is None  # very slow, but warm-up (e.g. compiling)
        now[0] += 5
        assert wd.tick(worker_alive=True) is False
    assert notify_sock.messages() == []
    # Jobs reported during warm-up became the baseline.
    wd.warmup_done()
    assert wd.baseline == Baseline(0.0, 10.0)


def test_short_and_failed_jobs_are_not_counted(notify_sock: NotifySocket) -> None:
    wd, _ = make(notify_sock, rtf_window=1, rtf_jobs=1, min_audio_s=1.0)
    warm(wd)
    assert wd.job_finished(0.5, 10.0, 3) is None
    assert wd.job_finished(0.0, 10.0, 3) is None
    assert notify_sock.messages() == []


def test_rtf_check_off(notify_sock: NotifySocket) -> None:
    wd, _ = make(notify_sock, rtf_check=False, rtf_window=1, rtf_jobs=1)
    warm(wd)
    assert wd.job_finished(5.0, 100.0, 100) == pytest.approx(100 / 0.35)
    assert notify_sock.messages() == []


def test_rtf_engines_select_which_engines_are_checked(notify_sock: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": str(notify_sock.path)}
    s = WatchdogSettings(rtf_window=1, rtf_jobs=1)
    assert Watchdog(s, Notifier(env), engine="f5").rtf_enabled is True
    assert Watchdog(s, Notifier(env), engine="piper").rtf_enabled is False
    assert Watchdog(WatchdogSettings(rtf_check=False), Notifier(env), engine="f5").rtf_enabled is False
    wd = Watchdog(s, Notifier(env), engine="piper")
    warm(wd)
    assert wd.job_finished(5.0, 100.0, 100) is not None  # measured and shown in status ...
    assert notify_sock.messages() == []  # ... but never a restart


def test_baseline_learnt_from_first_jobs_without_calibration(notify_sock: NotifySocket) -> None:
    wd, _ = make(notify_sock, rtf_window=2, rtf_jobs=1, rtf_factor=2.0)
    wd.start_warmup()
    wd.warmup_done()
    assert wd.baseline is None
    assert wd.job_finished(2.0, 0.2) is None
    assert wd.job_finished(4.0, 0.4) is None
    assert wd.baseline is not None
    wd.job_finished(4.0, 0.4)
    assert notify_sock.messages() == []
    wd.job_finished(4.0, 2.0)
    wd.job_finished(4.0, 2.0)  # median of (5, 5) > 2
    assert notify_sock.messages()[0]["WATCHDOG"] == "trigger"


# -- heartbeat ------------------------------------------------------------------------------------


def test_ping_cadence_is_half_watchdog_usec(notify_sock: NotifySocket) -> None:
    wd, now = make(notify_sock, watchdog_usec=2_000_000)
    assert wd.interval_s == 1.0
    wd.start_warmup()
    assert wd.tick(worker_alive=True) is False  # not before READY
    warm(wd)
    sent = []
    msgs: list[dict[str, str]] = []
    for _ in range(40):  # 10 s of 0.25 s ticks
        if wd.tick(worker_alive=True):
            sent.append(now[0])
        msgs += notify_sock.messages()
        now[0] += 0.25
    assert len(sent) == 10
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(sent))
    assert msgs == [{"WATCHDOG": "1"}] * 10


def test_pings_stop_while_worker_stalled(notify_sock: NotifySocket) -> None:
    wd, now = make(notify_sock, watchdog_usec=1_000_000, stall_s=5.0)
    warm(wd)
    heartbeat = now[0]
    pings = []
    msgs: list[dict[str, str]] = []
    for step in range(80):  # 20 s; the worker makes progress only for the first 3 s and last 5 s
        if step * 0.25 < 3 or step * 0.25 >= 15:
            heartbeat = now[0]
        alive = Watchdog.worker_alive(now[0], heartbeat, True, wd.settings.stall_s)
        if wd.tick(worker_alive=alive):
            pings.append(step * 0.25)
        msgs += notify_sock.messages()  # drain as systemd does: the queue is only 10 deep
        now[0] += 0.25
    # Pings until heartbeat + stall_s (2.75 + 5 = 7.75 s), none while stalled, again from 15 s.
    assert max(p for p in pings if p < 15) == 7.5
    assert [p for p in pings if 7.75 <= p < 15] == []
    assert min(p for p in pings if p >= 15) == 15.0
    stalled = [m for m in msgs if "STATUS" in m]
    assert len(stalled) == 1 and stalled[0]["STATUS"].startswith("worker stalled")
    assert not any(m.get("WATCHDOG") == "trigger" for m in msgs)


def test_no_watchdog_usec_means_no_pings(notify_sock: NotifySocket) -> None:
    wd, now = make(notify_sock, watchdog_usec=0)
    warm(wd)
    for _ in range(10):
        now[0] += 1
        assert wd.tick(worker_alive=True) is False
    assert notify_sock.messages() == []


def test_playback_counts_as_progress(notify_sock: NotifySocket) -> None:
    """A long line playing out: the worker waits in the sink without stamping, samples keep growing."""
    wd, now = make(notify_sock, stall_s=5.0)
    warm(wd)
    heartbeat = now[0]  # synthesis finished; from here on the worker only waits for playback
    played = 0
    for _ in range(120):  # 30 s of playback at 0.25 s ticks
        now[0] += 0.25
        played += 5512
        assert wd.alive(now[0], heartbeat, True, played) is True
    # The device stops taking samples (a hung ALSA write): stalled once stall_s has passed.
    t_stop = now[0]
    while now[0] - t_stop < 5.0:
        assert wd.alive(now[0], heartbeat, True, played) is True
        now[0] += 0.25
    assert wd.alive(now[0], heartbeat, True, played) is False
    assert wd.alive(now[0], now[0], False, played) is False  # a dead thread is never alive
    assert wd.alive(now[0], now[0], True, played) is True  # the worker stamps again


def test_dead_worker_thread_is_not_alive() -> None:
    assert Watchdog.worker_alive(10.0, 9.0, True, 5.0) is True
    assert Watchdog.worker_alive(10.0, 9.0, False, 5.0) is False
    assert Watchdog.worker_alive(20.0, 9.0, True, 5.0) is False


# -- settings -------------------------------------------------------------------------------------


def test_watchdog_section_parsed_and_validated() -> None:
    s = config.parse({"watchdog": {"rtf_factor": 3, "rtf_window": 8, "stall_s": 20, "rtf_engines": []}}, None)
    assert s.watchdog == WatchdogSettings(stall_s=20.0, rtf_factor=3.0, rtf_window=8, rtf_engines=())
    with pytest.raises(ConfigError, match=r"watchdog\.rtf_factor: must be >= 1.05"):
        config.parse({"watchdog": {"rtf_factor": 0.5}}, None)
    with pytest.raises(ConfigError, match=r"watchdog\.rtf_jobz: unknown key \(did you mean 'rtf_jobs'\?\)"):
        config.parse({"watchdog": {"rtf_jobz": 3}}, None)
    with pytest.raises(ConfigError, match=r"watchdog\.rtf_check: expected true or false"):
        config.parse({"watchdog": {"rtf_check": "yes"}}, None)


def test_documented_defaults_match() -> None:
    """etc/ishowtts.toml spells out every [watchdog] key with its default (commented)."""
    text = (Path(__file__).resolve().parents[1] / "etc/ishowtts.toml").read_text()
    section = text.split("\n[watchdog]\n", 1)[1].split("\n[", 1)[0]
    keys = [
        ln[2:].split("#", 1)[0].strip() for ln in section.splitlines() if " = " in ln and ln.startswith("# ")
    ]
    doc = tomlkit.parse("\n".join(keys)).unwrap()
    assert set(doc) == set(WatchdogSettings.__dataclass_fields__)
    assert config.parse({"watchdog": doc}, None).watchdog == WatchdogSettings()
