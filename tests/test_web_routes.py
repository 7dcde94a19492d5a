"""Every route of the gateway's API, its refusals and its answers, pinned: status code, the error's
``code`` (and ``param`` for the OpenAI routes), and the shape of a good answer. Against the real
``ishowtts-web`` subprocess in front of the real daemon (Piper), through plain HTTP and WebSocket
clients; the last test stops the daemon and checks what each part answers then (the gateway
waits ``daemon_timeout_s`` for it, 4 s here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Daemon, running_daemon
from tests.websupport import Gateway, running_gateway

NOT_JSON = {"content": b"{nope", "headers": {"Content-Type": "application/json"}}


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon() as d:
        yield d


@pytest.fixture(scope="module")
def gw(daemon: Daemon) -> Iterator[Gateway]:
    with running_gateway(daemon, {"rate_per_min": 6000, "rate_burst": 500, "daemon_timeout_s": 4}) as g:
        yield g


def call(gw: Gateway, method: str, path: str, auth: bool = True, **kw: Any) -> httpx.Response:
    headers = {**(gw.auth if auth else {}), **kw.pop("headers", {})}
    return httpx.request(method, gw.url + path, headers=headers, timeout=60, **kw)


def refused(r: httpx.Response, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    """The gateway's one error shape (OpenAI's), with this status, code and param."""
    assert r.status_code == status, (r.request.method, r.request.url, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    assert (err["code"], err["param"]) == (code, param), err
    assert err["type"] == ("server_error" if status >= 500 else "invalid_request_error"), err
    return dict(err)


ROUTES = [
    ("POST", "/api/control/skip"), ("GET", "/api/status"), ("GET", "/api/queue"),
    ("DELETE", "/api/queue/j1"), ("GET", "/api/history"), ("POST", "/api/moderate/ban"),
    ("GET", "/api/held"), ("POST", "/api/held/j1/approve"), ("GET", "/api/voices"),
    ("POST", "/api/voices"), ("POST", "/api/voices/transcribe"), ("PUT", "/api/voices/default"),
    ("DELETE", "/api/voices/joe"), ("POST", "/api/voices/joe/preview"), ("POST", "/v1/audio/speech"),
    ("GET", "/v1/models"), ("GET", "/v1/models/tts-1"), ("GET", "/v1/audio/voices"),
]  # fmt: skip


def test_every_api_route_needs_the_token(gw: Gateway) -> None:
    for method, path in ROUTES:
        for headers in ({}, {"Authorization": f"Bearer {gw.overlay_key}"}, {"Authorization": "Basic x"}):
            r = call(gw, method, path, auth=False, headers=headers)
            refused(r, 401, "invalid_api_key")
            assert r.headers["www-authenticate"] == "Bearer" and gw.token not in r.text


def test_wrong_methods_are_405_in_the_same_shape(gw: Gateway) -> None:
    for method, path in [("GET", "/api/control/skip"), ("PUT", "/api/voices"), ("GET", "/v1/audio/speech")]:
        refused(call(gw, method, path), 405, None)


def test_dashboard_controls_and_reads(gw: Gateway) -> None:
    assert call(gw, "GET", "/api/status").json()["event"] == "status"
    assert {"current", "jobs"} <= set(call(gw, "GET", "/api/queue").json())
    r = call(gw, "POST", "/api/control/pause")
    assert r.status_code == 200 and r.json() == {"ok": True, "action": "pause", "jobs": []}
    assert call(gw, "POST", "/api/control/resume").json()["action"] == "resume"
    err = refused(call(gw, "POST", "/api/control/explode"), 404, "unknown_control")
    assert "skip, stop, clear, pause, resume" in err["message"]
    for limit in ("0", "201", "abc", "-1"):
        refused(call(gw, "GET", "/api/history", params={"limit": limit}), 400, "bad_request")
    assert isinstance(call(gw, "GET", "/api/history", params={"limit": "200"}).json()["lines"], list)
    refused(call(gw, "DELETE", "/api/queue/no-such-job"), 404, "unknown_job")
    assert isinstance(call(gw, "GET", "/api/held").json()["lines"], list)
    refused(call(gw, "POST", "/api/held/j1/maybe"), 404, "unknown_action")
    refused(call(gw, "POST", "/api/held/no-such-job/approve"), 400, "not_found")


def test_moderation_checks_its_body_in_order(gw: Gateway) -> None:
    refused(call(gw, "POST", "/api/moderate/ban", **NOT_JSON), 400, "bad_json")
    refused(call(gw, "POST", "/api/moderate/kick", **NOT_JSON), 400, "bad_json")  # the body first
    refused(call(gw, "POST", "/api/moderate/kick", json={"user": "x"}), 404, "unknown_action")
    for body in ([], {}, {"user": " "}, {"user": 5}, {"user": "u" * 129}):
        refused(call(gw, "POST", "/api/moderate/ban", json=body), 400, "bad_request")
    for d in (0, -1, True, "60", 14 * 86400 + 1):
        r = call(gw, "POST", "/api/moderate/timeout", json={"user": "x", "duration_s": d})
        assert "duration_s" in refused(r, 400, "bad_request")["message"]
    r = call(gw, "POST", "/api/moderate/timeout", json={"user": " pest ", "duration_s": 5})
    assert r.status_code == 200 and r.json() == {"ok": True, "action": "timeout", "user": "pest"}
    r = call(gw, "POST", "/api/moderate/ban", json={"user": "spammer", "duration_s": 0})  # ignored for a ban
    assert r.status_code == 200 and r.json() == {"ok": True, "action": "ban", "user": "spammer"}


def test_live_socket_wants_the_token_first(gw: Gateway) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = gw.url.replace("http://", "ws://") + "/api/live"
    for first in (json.dumps({"token": "wrong"}), "not json", json.dumps(["token"])):
        with connect(url, open_timeout=10) as ws:
            ws.send(first)
            wrong = {"type": "error", "code": "invalid_api_key", "message": "Wrong token."}
            assert json.loads(ws.recv(10)) == wrong
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"token": gw.token}))
        state = json.loads(ws.recv(10))
        assert state["type"] == "state" and {"status", "queue", "held", "rtf", "history"} <= set(state)


def test_studio_refusals(gw: Gateway) -> None:
    voices = call(gw, "GET", "/api/voices").json()
    assert voices["engine"] == "piper" and [v["id"] for v in voices["voices"]] == ["joe"]
    for path in ("/api/voices", "/api/voices/transcribe"):
        refused(call(gw, "POST", path, json={"id": "x"}), 400, "bad_request")  # not a form
        refused(call(gw, "POST", path, data={"id": "x"}, files={"other": b"x"}), 400, "bad_request")
    refused(call(gw, "POST", "/api/voices", data={"id": "no way!"}, files={"file": b"x"}), 400, "bad_id")
    refused(call(gw, "POST", "/api/voices", data={"id": "joe"}, files={"file": b"x"}), 400, "exists")
    r = call(gw, "POST", "/api/voices", data={"id": "new"}, files={"other": b"x"})
    assert "'file'" in refused(r, 400, "bad_request")["message"]
    refused(call(gw, "DELETE", "/api/voices/no-such"), 404, "unknown_voice")
    refused(call(gw, "POST", "/api/voices/joe/preview", content=b"{nope"), 400, "bad_json")
    for body in ({"text": ""}, {"text": 5}, {"text": "x" * 301}):
        refused(call(gw, "POST", "/api/voices/joe/preview", json=body), 400, "bad_request")
    r = call(gw, "POST", "/api/voices/joe/preview", json={"text": "Hi."})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav" and r.content[:4] == b"RIFF"
    refused(call(gw, "PUT", "/api/voices/default", **NOT_JSON), 400, "bad_json")
    refused(call(gw, "PUT", "/api/voices/default", json={"voice": 5}), 400, "bad_request")
    refused(call(gw, "PUT", "/api/voices/default", json={"voice": "no-such"}), 400, "unknown_voice")
    r = call(gw, "PUT", "/api/voices/default", json={"voice": None})
    assert r.status_code == 200 and r.json() == {"ok": True, "default": "joe"}


def test_openai_refusals(gw: Gateway) -> None:
    refused(call(gw, "POST", "/v1/audio/speech", **NOT_JSON), 400, "invalid_json")
    refused(call(gw, "POST", "/v1/audio/speech", json=[]), 400, "invalid_value")
    refused(call(gw, "POST", "/v1/audio/speech", json={"input": "hi"}), 400, "invalid_value", "model")
    body = {"model": "tts-1", "input": "Hi there.", "voice": "nobody"}
    r = call(gw, "POST", "/v1/audio/speech", json=body)
    assert "joe" in refused(r, 400, "invalid_value", "voice")["message"]
    r = call(gw, "POST", "/v1/audio/speech", json={**body, "voice": "nova", "response_format": "pcm"})
    assert r.status_code == 200 and r.headers["x-job"] and len(r.content) > 24000
    assert "prep;dur=" in r.headers["server-timing"]
    assert [m["id"] for m in call(gw, "GET", "/v1/models").json()["data"]][:2] == ["ishowtts", "tts-1"]
    assert call(gw, "GET", "/v1/models/tts-1").json()["id"] == "tts-1"
    refused(call(gw, "GET", "/v1/models/nope"), 404, "model_not_found", "model")
    assert call(gw, "GET", "/v1/audio/voices").json() == {"voices": ["joe"], "default": "joe"}


def test_with_the_daemon_gone_each_part_says_so(gw: Gateway, daemon: Daemon) -> None:
    daemon.stop()
    for path in ("/api/status", "/api/voices"):  # the dashboard's and the studio's guard
        refused(call(gw, "GET", path), 503, "daemon_unreachable")
    r = call(gw, "GET", "/v1/audio/voices")
    refused(r, 503, "daemon_unavailable")
    assert r.headers["retry-after"] == "5"
