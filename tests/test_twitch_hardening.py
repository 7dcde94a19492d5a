"""ishowtts-twitch under a hostile start and a misbehaving server: the first line after a start is
never lost (held until the daemon's subscription arrives), a server that answers every JOIN with
RECONNECT meets the backoff, and a refused anonymous login says what is true for it.
The bridge runs as a subprocess against the loopback IRC test server; speech through the real daemon.
"""

# ruff: noqa: F811  (the fixtures cert, server and work are imported from test_twitch_bridge)
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import zmq
from robust import LONG
from support import Events, running_daemon
from test_twitch_bridge import (  # noqa: F401  (cert, server and work are fixtures)
    Bridge,
    Conn,
    IrcServer,
    cert,
    server,
    start_bridge,
    work,
)
from test_twitch_daemon import ev_for, privmsg
from waits import wait_until

from ishowttsd.twitch.publisher import Publisher

WORDS = [
    *("apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel", "iris", "juniper"),
    *("kiwi", "lemon", "mango", "nutmeg", "olive", "pepper", "quince", "rhubarb", "sage", "thyme"),
]


# -- the publisher holds lines for the daemon's subscription -------------------------------------------
def test_publisher_holds_lines_until_the_subscription_arrives_and_drops_them_counted_after_hold_s() -> None:
    ep = f"ipc:///tmp/ith-{os.getpid()}-{time.monotonic_ns()}.sock"
    ctx = zmq.Context()
    now = [0.0]
    pub = Publisher(ep, ctx=ctx, clock=lambda: now[0], hold_s=5.0)
    sub = ctx.socket(zmq.SUB)
    try:
        assert pub.publish(b"chat", {"text": "first"}) and pub.publish(b"chat", {"text": "second"})
        assert pub.held == 2 and not pub.dropped
        now[0] = 4.0  # within hold_s: still waiting
        pub.tick()
        assert pub.held == 2
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.bind(ep)
        deadline = time.monotonic() + 10
        while pub.held and time.monotonic() < deadline:
            sub.poll(20)
            pub.tick()
        assert pub.held == 0 and pub.published["chat"] == 2
        got = [sub.recv_multipart()[1] for _ in range(2)]
        assert got == [b'{"text":"first"}', b'{"text":"second"}']  # in order
    finally:
        sub.close(0)

    # The daemon goes away: a line waits hold_s, then is dropped, counted with its reason.
    def gone() -> bool:
        pub.tick()
        return not pub.connected()

    wait_until(gone, 10, "the publisher to see the daemon go", poll_s=0.02)
    assert pub.publish(b"chat", {"text": "late"}) and pub.held == 1
    now[0] = 10.0
    pub.tick()
    assert pub.held == 0 and pub.dropped["daemon_away"] == 1
    pub.close()
    ctx.term()


def test_publisher_close_counts_lines_still_held() -> None:
    ctx = zmq.Context()
    pub = Publisher(f"ipc:///tmp/ith-none-{os.getpid()}.sock", ctx=ctx, hold_s=60)
    assert pub.publish(b"chat", {"text": "nobody listens"})
    pub.close()
    assert pub.dropped["daemon_away"] == 1
    ctx.term()


# -- a first line right after JOIN, start after start --------------------------------------------------
def _starts_spoken(work: Path, n: int, hold_s: float | None = None) -> int:
    """Start the bridge ``n`` times against a running daemon; each time a plain-TCP server sends the
    welcome and one chat line the moment the bridge connects (the tightest race with the daemon's
    subscription: without the hold, 6 of 10 such starts spoke their line). Returns how many were spoken."""
    spoken = 0
    extra = {} if hold_s is None else {"hold_s": hold_s}
    srv = IrcServer(None)
    try:
        with running_daemon({"watchdog": {"rtf_check": False}}) as d:
            ev: Events = d.subscribe(b"event")
            for i in range(n):
                args = ["--channel", "ishowtts", "--server", f"127.0.0.1:{srv.port}", "--no-tls"]
                bridge = Bridge(work, [*args, "--ingest", d.ingest], {"reconnect_min_s": 0.05, **extra})
                try:
                    c = srv.wait_conn(i + 1, timeout_s=30)
                    mid = f"start-{i}"
                    line = privmsg(
                        f"viewer{i}", f"Viewer{i}", mid, f"the {WORDS[i % len(WORDS)]} line of this start"
                    )
                    c.send(":tmi.twitch.tv 001 viewer :Welcome, GLHF!", line)
                    try:
                        ev.wait_for(ev_for(mid, "done"), 60)
                        spoken += 1
                    except AssertionError:
                        pass
                finally:
                    assert bridge.stop() == 0
    finally:
        srv.close()
    return spoken


@pytest.mark.timeout(180)
def test_first_line_after_join_is_spoken_on_every_start(work: Path) -> None:
    assert _starts_spoken(work, 3) == 3


@pytest.mark.long
@pytest.mark.skipif(not LONG, reason="long mode: ISHOWTTS_LONG=1")
@pytest.mark.timeout(1200)
def test_first_line_after_join_is_spoken_on_20_of_20_starts(work: Path) -> None:
    assert _starts_spoken(work, 20) == 20


# -- RECONNECT after every JOIN -----------------------------------------------------------------------
def _reconnect_after_every_join(server: IrcServer, stop: threading.Event) -> None:
    handled: set[int] = set()
    while not stop.is_set():
        for i, c in enumerate(list(server.conns)):
            if i in handled:
                continue
            handled.add(i)

            def serve(conn: Conn = c) -> None:
                try:
                    conn.register()
                    conn.send(":tmi.twitch.tv RECONNECT")
                except (AssertionError, OSError):
                    pass

            threading.Thread(target=serve, daemon=True).start()
        time.sleep(0.01)  # polls the server's connections until the test stops it


def max_connects(duration_s: float, lo: float, hi: float) -> int:
    """The most connections the backoff allows in ``duration_s``: the first RECONNECT at once, then
    each wait at least half its doubling delay (connects taking no time at all)."""
    t, n, attempt = 0.0, 2, 1  # the first connection and the immediate reconnect
    while True:
        t += min(hi, lo * 2.0**attempt) / 2
        if t > duration_s:
            return n
        n += 1
        attempt += 1


def _count_reconnects(server: IrcServer, cert: Path, work: Path, duration_s: float, **twitch: float) -> int:
    stop = threading.Event()
    threading.Thread(target=_reconnect_after_every_join, args=(server, stop), daemon=True).start()
    bridge = start_bridge(work, server, cert, **twitch)
    try:
        server.wait_conn(1)
        time.sleep(duration_s)  # the window in which reconnects are counted
        n = len(server.conns)
        assert bridge.proc.poll() is None
        assert bridge.stop() == 0
    finally:
        stop.set()
        if bridge.proc.poll() is None:
            bridge.stop()
    assert "server asked us to reconnect (RECONNECT)" in bridge.text()
    return n


@pytest.mark.timeout(60)
def test_repeated_reconnects_back_off(server: IrcServer, cert: tuple[Path, Path], work: Path) -> None:
    lo, hi = 0.05, 0.8
    n = _count_reconnects(server, cert[0], work, 4.0, reconnect_min_s=lo, reconnect_max_s=hi)
    # Without the backoff this server got 132 connections in 6 s; with it, the formula's bound.
    assert 4 <= n <= max_connects(4.0, lo, hi), n


@pytest.mark.long
@pytest.mark.skipif(not LONG, reason="long mode: ISHOWTTS_LONG=1")
@pytest.mark.timeout(120)
def test_60s_of_reconnect_after_join_with_the_default_backoff(
    server: IrcServer, cert: tuple[Path, Path], work: Path
) -> None:
    n = _count_reconnects(server, cert[0], work, 60.0, reconnect_min_s=1.0, reconnect_max_s=60.0)
    print(f"\n60 s of RECONNECT after every JOIN: {n} connections (bound {max_connects(60.0, 1.0, 60.0)})")
    assert 3 <= n <= max_connects(60.0, 1.0, 60.0)


# -- a refused anonymous login ---------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_refused_anonymous_login_says_what_is_true(
    server: IrcServer, cert: tuple[Path, Path], work: Path
) -> None:
    bridge = start_bridge(work, server, cert[0])
    try:
        c = server.wait_conn(1)
        c.wait_line(lambda ln: ln.startswith("NICK justinfan"))
        c.send(":tmi.twitch.tv NOTICE * :Login authentication failed")
        assert bridge.proc.wait(10) == 3
        log = bridge.text()
        assert "refused the anonymous (read-only) login" in log and "--credentials" in log
        assert "file=None" not in log and "fix the token" not in log
    finally:
        if bridge.proc.poll() is None:
            bridge.stop()
