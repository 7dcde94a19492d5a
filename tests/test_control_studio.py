"""The control ops behind the dashboard and the voice studio, on the real daemon (Piper):
``queue``, ``clear``, ``moderate``, ``history``, ``default_voice``, ``reload_voices``."""

from __future__ import annotations

import json
from typing import Any

from support import Daemon, collect_until_terminal, running_daemon
from waits import wait_until

SLOW = {"debug": {"chunk_delay_s": 1.0}, "queue": {"max_per_user": 10}}
LONG = " ".join(f"Sentence {i} keeps the speaker busy for a while." for i in range(4))


def chat(bot: Any, text: str, user: str, mid: str) -> None:
    bot.send_multipart([b"chat", json.dumps({"text": text, "user": user, "id": mid}).encode()])


def wait_queue(d: Daemon, pred: Any, timeout_s: float = 20.0) -> dict[str, Any]:
    last: list[dict[str, Any]] = [{}]

    def matched() -> dict[str, Any] | None:
        last[0] = d.request({"op": "queue"})
        return last[0] if pred(last[0]) else None

    return wait_until(matched, timeout_s, "the queue to match", lambda: last[0], 0.1)


def test_queue_clear_ban_history_and_default_voice() -> None:
    with running_daemon(SLOW) as d:
        ev = d.subscribe(b"event")
        bot = d.bot()
        chat(bot, LONG, "alice", "m0")
        for i in range(3):
            chat(bot, f"Line number {i} from bob.", "bob", f"b{i}")
        chat(bot, "Hello from carol.", "carol", "c0")
        chat(bot, "Hello from carol.", "carol", "c1")  # a duplicate: dropped before the queue
        q = wait_queue(d, lambda q: q["current"] is not None and len(q["jobs"]) == 4)
        assert q["current"]["user"] == "alice" and q["current"]["text"] == LONG
        assert [j["user"] for j in q["jobs"]] == ["bob", "bob", "bob", "carol"]
        assert [j["position"] for j in q["jobs"]] == [0, 1, 2, 3]
        assert all(j["priority"] == "text" and j["waiting_s"] >= 0 for j in q["jobs"])
        assert q["jobs"][0]["msg_id"] == "b0"

        # ban bob through the control socket: his queued lines go, with the moderation event
        ok = d.request({"op": "moderate", "action": "ban", "user": "bob"})
        assert ok == {"event": "ok", "op": "moderate", "action": "ban"}
        mod = ev.wait_for(lambda e: e.get("event") == "moderation" and e.get("action") == "ban")
        assert len(mod["jobs"]) == 3
        q = d.request({"op": "queue"})
        assert [j["user"] for j in q["jobs"]] == ["carol"] and q["current"]["user"] == "alice"
        bad = d.request({"op": "moderate", "action": "ban"})
        assert bad["code"] == "bad_request" and "user" in bad["reason"]
        assert d.request({"op": "moderate", "action": "nuke"})["code"] == "bad_request"

        # clear empties the queue; the line being spoken goes on
        cleared = d.request({"op": "clear"})
        assert len(cleared["jobs"]) == 1
        ev.wait_for(lambda e: e.get("event") == "cancelled" and e.get("reason") == "cleared")
        q = d.request({"op": "queue"})
        assert q["jobs"] == [] and q["current"] is not None and q["current"]["user"] == "alice"
        stopped = d.request({"op": "stop"})
        assert stopped["jobs"] == [q["current"]["job"]]
        ev.wait_for(lambda e: e.get("event") == "cancelled" and e.get("user") == "alice")

        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": "Spoken to the end.", "req": "r1"}).encode())
        assert collect_until_terminal(s, 30)[-1]["event"] == "done"

        h = d.request({"op": "history", "limit": 20})["lines"]
        by_text = {(x["text"], x.get("user")): x for x in h}
        assert by_text[("Spoken to the end.", None)]["outcome"] == "spoken"
        assert by_text[(LONG, "alice")]["outcome"] == "cancelled"
        assert by_text[(LONG, "alice")]["reason"] == "stopped"
        assert by_text[("Hello from carol.", "carol")]["outcome"] in ("cancelled", "dropped")
        dup = [x for x in h if x.get("reason") == "duplicate"]
        assert len(dup) == 1 and dup[0]["outcome"] == "dropped" and dup[0]["user"] == "carol"
        banned = [x for x in h if x.get("reason") == "banned"]
        assert len(banned) == 3 and {x["outcome"] for x in banned} == {"cancelled"}
        assert h[0]["text"] == "Spoken to the end."  # newest first
        assert len(d.request({"op": "history", "limit": 2})["lines"]) == 2
        for bad_limit in (0, -1, "x", True, 10_000):
            assert d.request({"op": "history", "limit": bad_limit})["code"] == "bad_request"

        # the default voice: checked, applied to jobs without one, kept across a restart
        unknown = d.request({"op": "default_voice", "voice": "nobody"})
        assert unknown["code"] == "unknown_voice" and "joe" in unknown["reason"]
        assert d.request({"op": "default_voice", "voice": "joe"})["voice"] == "joe"
        assert (d.dir / "state" / "default_voice.json").exists()
        assert d.request({"op": "status"})["default_voice"] == "joe"
        s.send(json.dumps({"op": "say", "text": "Which voice?", "req": "r2"}).encode())
        started = [e for e in collect_until_terminal(s, 30) if e["event"] == "started"]
        assert started[0]["voice"] == "joe"


def test_history_survives_a_restart_and_reload_does_not_disturb_speech() -> None:
    with running_daemon(SLOW) as d:
        ev = d.subscribe(b"event")
        s = d.dealer()
        s.send(json.dumps({"op": "say", "text": LONG, "id": "long1"}).encode())
        ev.wait_for(lambda e: e.get("event") == "started" and e.get("job") == "long1")
        r = d.dealer()
        r.send(json.dumps({"op": "reload_voices", "req": "rv"}).encode())
        # answered once the engine has them: after the line in progress (between jobs)
        assert r.poll(60_000)
        reply = json.loads(r.recv_multipart()[0])
        assert reply["event"] == "voices_reloaded" and reply["req"] == "rv" and reply["voices"] == ["joe"]
        out = collect_until_terminal(s, 60)
        assert out[-1]["event"] == "done", out  # the line in flight was not disturbed
        ev.wait_for(lambda e: e.get("event") == "voices_reloaded")
        # a REQ client gets the same single reply
        import zmq

        req = d.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(d.control)
        req.send(b'{"op": "reload_voices"}')
        assert req.poll(30_000) and json.loads(req.recv())["event"] == "voices_reloaded"
        req.close(0)
        d.stop()
        d.start()
        d.wait_ready()
        h = d.request({"op": "history", "limit": 5})["lines"]
        assert h[0]["job"] == "long1" and h[0]["outcome"] == "spoken"
