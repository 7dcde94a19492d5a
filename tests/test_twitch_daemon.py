"""End to end: Twitch-format IRC lines from a loopback TLS server -> ishowtts-twitch -> the real daemon
(subprocess, ipc sockets, the embedded Piper voice). The daemon speaks the chat, drops the deleted
message, purges the banned and the timed-out users' queued lines (a localised display name included),
refuses a banned user's next line, and clears the queue on Twitch's /clear.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import Events, running_daemon
from test_twitch_bridge import (  # noqa: F401  (cert, server and work are fixtures)
    TROLL_PRIVMSG,
    Bridge,
    IrcServer,
    cert,
    server,
    work,
)

TOKEN = "twitch-bridge-mod-token-0123456789"
CONFIG = {
    "watchdog": {"rtf_check": False},
    "zmq": {"pcm_hwm": 200_000},
    "chat": {"moderator_tokens": [TOKEN]},
}


def privmsg(login: str, display: str, mid: str, text: str, ts_ms: int | None = None) -> str:
    ts = ts_ms if ts_ms is not None else int(time.time() * 1000)
    return (
        f"@badges=;color=;display-name={display};emotes=;id={mid};mod=0;room-id=12345;subscriber=0;"
        f"tmi-sent-ts={ts};user-id=1;user-type= :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #ishowtts :{text}"
    )


def clearchat(login: str | None, duration: int | None = None) -> str:
    tags = f"ban-duration={duration};" if duration is not None else ""
    tail = f" :{login}" if login else ""
    return (
        f"@{tags}room-id=12345;tmi-sent-ts={int(time.time() * 1000)} :tmi.twitch.tv CLEARCHAT #ishowtts{tail}"
    )


def clearmsg(login: str, mid: str) -> str:
    return (
        f"@login={login};room-id=;target-msg-id={mid};tmi-sent-ts={int(time.time() * 1000)} "
        ":tmi.twitch.tv CLEARMSG #ishowtts :whatever it said"
    )


def ev_for(mid: str, event: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("msg_id") == mid and e.get("event") == event


@pytest.mark.timeout(180)
def test_daemon_speaks_twitch_chat_and_obeys_twitch_moderation(
    server: IrcServer,  # noqa: F811
    cert: tuple[Path, Path],  # noqa: F811
    work: Path,  # noqa: F811
) -> None:
    cred = work / "twitch.toml"
    cred.write_text(f'moderator_token = "{TOKEN}"\n')
    cred.chmod(0o600)
    with running_daemon(CONFIG) as d:
        ev: Events = d.subscribe(b"event")
        bridge = Bridge(
            work,
            [
                "--channel",
                "ishowtts",
                "--server",
                f"127.0.0.1:{server.port}",
                "--ca-file",
                str(cert[0]),
                "--ingest",
                d.ingest,
                "--credentials",
                str(cred),
            ],
            {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2},
        )
        try:
            c = server.wait_conn(1)
            c.register()
            bridge.wait_log("daemon connected")

            # 1. Chat is spoken, with Twitch's display name and ids carried through.
            c.send(privmsg("ronni", "Ronni", "m-hello", "Hello from Twitch chat"))
            started = ev.wait_for(ev_for("m-hello", "started"), 60)
            assert started["text"] == "Hello from Twitch chat"
            assert (started["user"], started["platform"], started["channel"]) == (
                "Ronni",
                "twitch",
                "ishowtts",
            )
            ev.wait_for(ev_for("m-hello", "done"), 60)

            # 2. Lines wait in a paused queue; Twitch moderation arrives; only the clean line is spoken.
            assert d.request({"op": "pause"})["event"] == "ok"
            c.send(
                privmsg("ronni", "Ronni", "k1", "this line stays"),
                privmsg("ronni", "Ronni", "x1", "this line gets deleted"),
                privmsg("trollguy", "TrollGuy", "t1", "first troll line"),
                TROLL_PRIVMSG.replace("{ts}", str(int(time.time() * 1000))).replace("cccccccc", "t2"),
                privmsg("roni2", "로니", "r1", "a line from a localised name"),
            )
            t2 = "t2-0000-4000-8000-000000000005"
            for mid in ("k1", "x1", "t1", t2, "r1"):
                ev.wait_for(ev_for(mid, "queued"), 30)
            c.send(clearmsg("ronni", "x1"), clearchat("trollguy"), clearchat("roni2", 600))
            assert ev.wait_for(ev_for("x1", "cancelled"))["reason"] == "deleted"
            for mid in ("t1", t2):
                assert ev.wait_for(ev_for(mid, "cancelled"))["reason"] == "banned"
            # CLEARCHAT names the login (roni2); the daemon queued the line under the display name.
            assert ev.wait_for(ev_for("r1", "cancelled"))["reason"] == "timed_out"
            c.send(privmsg("trollguy", "TrollGuy", "t3", "I am back"))
            assert ev.wait_for(ev_for("t3", "dropped"))["reason"] == "banned"

            assert d.request({"op": "resume"})["event"] == "ok"
            assert ev.wait_for(ev_for("k1", "started"), 60)["text"] == "this line stays"
            ev.wait_for(ev_for("k1", "done"), 60)
            spoken = {e.get("msg_id") for e in ev.events if e.get("event") == "started"}
            assert spoken.isdisjoint({"x1", "t1", t2, "t3", "r1"})

            # 3. /clear (CLEARCHAT with no user) clears queued chat; it carries the moderator token.
            assert d.request({"op": "pause"})["event"] == "ok"
            c.send(
                privmsg("alice", "Alice", "z1", "queued then cleared"), privmsg("bob", "Bob", "z2", "me too")
            )
            for mid in ("z1", "z2"):
                ev.wait_for(ev_for(mid, "queued"), 30)
            c.send(clearchat(None))
            for mid in ("z1", "z2"):
                assert ev.wait_for(ev_for(mid, "cancelled"))["reason"] == "cleared"
            assert not [e for e in ev.events if e.get("event") == "error" and e.get("source") == "ingest"]
            assert bridge.stop() == 0
        finally:
            if bridge.proc.poll() is None:
                bridge.stop()
            ev.close()
