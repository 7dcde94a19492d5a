"""Streamer controls end to end: Twitch-format IRC lines from a loopback TLS server -> the real
ishowtts-twitch -> the real daemon (the tiny F5 checkpoint on the CPU, two voices). Each rule gets a
line that must be spoken and one that must not, judged from the daemon's events; the rules change
between phases by SIGHUP, as a streamer's would. One daemon and one bridge for the whole module.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from f5tiny import f5_doc
from support import Daemon, Events, deep_merge, running_daemon
from test_twitch_bridge import (  # noqa: F401  (cert, server and work are fixtures)
    Bridge,
    Conn,
    IrcServer,
    cert,
    server,
    work,
)
from waits import wait_until

TOKEN = "twitch-bridge-mod-token-0123456789"


def config(**chat: Any) -> dict[str, Any]:
    doc = f5_doc(seed=7, warmup="first", max_total_s=4.0, max_ref_s=3.0)
    second = dict(doc["voices"][0], id="tiny2", ref_text="Another voice made from the same sound.")
    base = {
        "engine": {"kind": "f5"},
        "f5": doc["f5"],
        "voices": [*doc["voices"], second],
        "watchdog": {"rtf_check": False},
        "zmq": {"pcm_hwm": 200_000},
        "debug": {"chunk_delay_s": 0.25},  # a line stays on air long enough to be skipped
        "chat": {"moderator_tokens": [TOKEN], "duplicate_window_s": 0, "stale_after_s": 0},
    }
    return deep_merge(base, {"chat": chat})


_n = 0


def line(text: str, user: str = "viewer", **tags: str) -> tuple[str, str]:
    """A Twitch PRIVMSG with ``tags`` (badges, badge-info, bits, first-msg, custom-reward-id, mod, ...)."""
    global _n
    _n += 1
    mid = f"m{_n}"
    all_tags = {"display-name": user, "emotes": "", "id": mid, "room-id": "1", "user-id": "1",
                "tmi-sent-ts": str(int(time.time() * 1000)), "mod": "0", "subscriber": "0", **tags}  # fmt: skip
    head = ";".join(f"{k}={v}" for k, v in all_tags.items())
    login = user.lower()
    return mid, f"@{head} :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #ishowtts :{text}"


class Run:
    def __init__(self, d: Daemon, ev: Events, c: Conn) -> None:
        self.d, self.ev, self.c = d, ev, c
        self.reloads = 0

    def send(self, *lines: tuple[str, str]) -> list[str]:
        self.c.send(*(raw for _, raw in lines))
        return [mid for mid, _ in lines]

    def wait(self, mid: str, *events: str, timeout_s: float = 60) -> dict[str, Any]:
        return self.ev.wait_for(lambda e: e.get("msg_id") == mid and e.get("event") in events, timeout_s)

    def spoken(self, mid: str) -> dict[str, Any]:
        started = self.wait(mid, "started", "dropped")
        assert started["event"] == "started", started
        self.wait(mid, "done")
        return started

    def dropped(self, mid: str, reason: str) -> None:
        e = self.wait(mid, "dropped", "started", "queued", "held")
        assert e["event"] == "dropped" and e["reason"] == reason, e

    def command(self, mid: str) -> dict[str, Any]:
        return self.wait(mid, "command")

    def reload(self, **chat: Any) -> None:
        """New ``[chat]`` keys (over the module's base ones) by SIGHUP, as a streamer would."""
        settings = {**self.d.settings, "chat": {**config()["chat"], **chat}}
        self.d.config.write_text(tomlkit.dumps(settings))
        self.reloads += 1
        self.d.signal(signal.SIGHUP)
        self.d.wait_log("chat filters reloaded", 20, count=self.reloads)


def bridge_for(work: Path, srv: IrcServer, ca: Path, d: Daemon) -> Bridge:  # noqa: F811
    cred = work / "twitch.toml"
    cred.write_text(f'moderator_token = "{TOKEN}"\n')
    cred.chmod(0o600)
    args = ["--channel", "ishowtts", "--server", f"127.0.0.1:{srv.port}", "--ca-file", str(ca),
            "--ingest", d.ingest, "--credentials", str(cred)]  # fmt: skip
    return Bridge(work, args, {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2})


@pytest.mark.timeout(300)
def test_streamer_controls_from_twitch_chat(
    server: IrcServer,  # noqa: F811
    cert: tuple[Path, Path],  # noqa: F811
    work: Path,  # noqa: F811
) -> None:
    with running_daemon(config()) as d:
        ev = d.subscribe(b"event")
        bridge = bridge_for(work, server, cert[0], d)
        try:
            c = server.wait_conn(1)
            c.register()
            bridge.wait_log("daemon connected")
            run = Run(d, ev, c)
            phases(run, d, bridge)
            assert bridge.proc.poll() is None
        finally:
            bridge.stop()
            ev.close()


def phases(run: Run, d: Daemon, bridge: Bridge) -> None:
    mod = {"badges": "moderator/1", "mod": "1"}
    run.reload(mode="command")
    # -- command mode: only "!tts ..." is read, without its prefix -----------------------------------
    yes, no = run.send(line("!tts hello in command mode"), line("a plain line"))
    assert run.spoken(yes)["text"] == "hello in command mode"
    run.dropped(no, "not_command")

    # -- all mode: other bots' commands are not read ------------------------------------------------
    run.reload(mode="all")
    no, yes = run.send(line("!discord"), line("plain chat is read now"))
    run.dropped(no, "ignored_prefix")
    run.spoken(yes)

    # -- who: subscribers of 6+ months (badge-info), VIPs, an allow list, a block list; bits minimum;
    #    a channel-point reward read in its own voice ------------------------------------------------
    run.reload(
        who={
            "chat": ["subscriber", "vip"],
            "subscriber_months": 6,
            "allow_users": ["Friend"],
            "bits_min": 100,
        },
        ignore_users=["BlockedVip"],
        rewards=[{"id": "robot-voice", "voice": "tiny2"}],
    )
    ids = run.send(
        line(
            "an old subscriber",
            "OldSub",
            **{"badges": "subscriber/6", "badge-info": "subscriber/8", "subscriber": "1"},
        ),
        line(
            "a new subscriber",
            "NewSub",
            **{"badges": "subscriber/0", "badge-info": "subscriber/3", "subscriber": "1"},
        ),
        line("a vip speaks", "Vippy", badges="vip/1", vip="1"),
        line("nobody special", "Nobody"),
        line("a friend of the streamer", "Friend"),
        line("a blocked vip", "BlockedVip", badges="vip/1", vip="1"),
        line("cheer50 small cheer", "Cheap", bits="50", badges="bits/1"),
        line("cheer100 big cheer", "Generous", bits="100", badges="bits/100"),
        line("read me as a robot", "Redeemer", **{"custom-reward-id": "robot-voice"}),
        line("another reward", "Redeemer2", **{"custom-reward-id": "hydrate"}),
    )
    old, new, vip, nobody, friend, blocked, cheap, big, reward, other_reward = ids
    for mid in (old, vip, friend, big):
        run.spoken(mid)
    for mid, reason in ((new, "not_allowed"), (nobody, "not_allowed"), (blocked, "ignored"),
                        (cheap, "bits_below_min"), (other_reward, "reward_not_read")):  # fmt: skip
        run.dropped(mid, reason)
    assert run.spoken(reward)["voice"] == "tiny2"

    # -- !voice sticks per viewer, across a daemon restart; !voice reset ----------------------------
    run.reload()
    (pick,) = run.send(line("!voice tiny2", "Picker"))
    assert run.command(pick)["ok"] is True
    (after,) = run.send(line("my own voice now", "Picker"))
    assert run.spoken(after)["voice"] == "tiny2"
    assert d.stop() == 0
    connects = bridge.text().count("daemon connected")
    d.start()
    d.wait_ready(90)
    wait_until(
        lambda: bridge.text().count("daemon connected") > connects,
        20,
        "the bridge to see the new daemon",
        lambda: bridge.text()[-2000:],
    )
    d.wait_subscribed(run.ev, b"event")  # our event SUB has reconnected too
    (again,) = run.send(line("still my voice after a restart", "Picker"))
    assert run.spoken(again)["voice"] == "tiny2"
    (other,) = run.send(line("someone else", "Other"))
    assert run.spoken(other)["voice"] == "tiny"
    reset, bad = run.send(line("!voice reset", "Picker"), line("!voice nosuchvoice", "Other"))
    assert run.command(reset)["ok"] is True
    assert run.command(bad)["ok"] is False
    (back,) = run.send(line("default voice again", "Picker"))
    assert run.spoken(back)["voice"] == "tiny"

    # -- !tts cancel drops the viewer's own queued lines, no one else's -----------------------------
    assert d.request({"op": "pause"})["event"] == "ok"
    mine1, mine2, theirs = run.send(
        line("mine one", "Canceller"), line("mine two", "Canceller"), line("not mine", "Keeper")
    )
    for mid in (mine1, mine2, theirs):
        run.wait(mid, "queued")
    (cancel,) = run.send(line("!tts cancel", "Canceller"))
    assert run.command(cancel)["ok"] is True
    for mid in (mine1, mine2):
        assert run.wait(mid, "cancelled")["reason"] == "cancelled_by_user"
    assert d.request({"op": "resume"})["event"] == "ok"
    run.spoken(theirs)

    # -- a viewer's !skip does nothing; a moderator's stops the line on air -------------------------
    long_text = " ".join(f"Sentence number {i} of a long line." for i in range(12))
    (on_air,) = run.send(line(long_text, "Talker"))
    run.wait(on_air, "started")
    viewer_skip, mod_skip = run.send(line("!skip", "Viewer"), line("!skip", "ModPerson", **mod))
    refused = run.command(viewer_skip)
    assert refused["ok"] is False and "moderators" in refused["reason"]
    assert run.command(mod_skip)["ok"] is True
    assert run.wait(on_air, "cancelled", "done")["event"] == "cancelled"
    skipped = [e for e in run.ev.events if e.get("msg_id") == on_air and e.get("event") == "cancelled"]
    assert skipped[0]["reason"] == "skipped"

    # -- voice tags: two segments in two voices, one line --------------------------------------------
    run.reload(voice_tags=True)
    (tagged,) = run.send(
        line("(tiny) hello from the first voice (tiny2) and hello from the second", "Tagger")
    )
    started = run.spoken(tagged)
    assert started["segments"] == [
        {"voice": "tiny", "text": "hello from the first voice"},
        {"voice": "tiny2", "text": "and hello from the second"},
    ]
    (untagged,) = run.send(line("(nobody) an unknown tag is read as text", "Tagger2"))
    assert run.spoken(untagged)["text"] == "(nobody) an unknown tag is read as text"

    # -- approval: a first-time chatter is held until a moderator approves, rejects, or it expires --
    run.reload(approval="first_time", approval_timeout_s=60)
    held1, held2, regular = run.send(
        line("hi I am new here", "Newbie", **{"first-msg": "1"}),
        line("me too", "Newbie2", **{"first-msg": "1"}),
        line("regulars are read at once", "Regular"),
    )
    assert run.wait(held1, "held")["hold"] == "first_time"
    run.wait(held2, "held")
    run.spoken(regular)
    listing = d.request({"op": "held"})
    assert {x["msg_id"] for x in listing["lines"]} == {held1, held2}
    assert not [e for e in run.ev.events if e.get("msg_id") == held1 and e.get("event") == "started"]
    assert d.request({"op": "approve", "id": held1})["event"] == "ok"
    run.spoken(held1)
    assert d.request({"op": "reject", "id": held2})["event"] == "ok"
    assert run.wait(held2, "dropped")["reason"] == "rejected"
    assert d.request({"op": "approve", "id": "nope"})["code"] == "not_found"
    run.reload(approval="first_time", approval_timeout_s=1)
    (late,) = run.send(line("nobody looks at me", "Newbie3", **{"first-msg": "1"}))
    run.wait(late, "held")
    assert run.wait(late, "dropped", timeout_s=10)["reason"] == "not_approved"
    assert not [e for e in run.ev.events if e.get("msg_id") in (held2, late) and e.get("event") == "started"]

    errors = [e for e in run.ev.events if e.get("event") == "error"]
    assert not errors, errors
