"""The overlay's routes without a browser: keys, assets, the wire format of frames and events."""

from __future__ import annotations

import json
import struct

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ishowttsd.client.feed import Feed, FeedEvent, PcmFrame, parse
from ishowttsd.web import overlay

KEY = "k" * 24


def client() -> TestClient:
    feed = Feed("ipc:///nonexistent/pcm.sock")  # never started: the routes only need subscribe()
    return TestClient(Starlette(routes=overlay.routes(feed, lambda k: k == KEY)))


def test_page_needs_the_key_and_assets_do_not() -> None:
    c = client()
    assert c.get("/overlay").status_code == 401
    r = c.get("/overlay", params={"key": "wrong"})
    assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
    r = c.get("/overlay", params={"key": KEY})
    assert r.status_code == 200 and "overlay/static/overlay.js" in r.text
    assert r.headers["cache-control"] == "no-store"
    for asset in ("overlay.js", "worklet.js", "overlay.css"):
        assert c.get(f"/overlay/static/{asset}").status_code == 200
    assert c.get("/overlay/static/../overlay.py").status_code == 404


def test_websocket_needs_the_key_and_says_hello() -> None:
    c = client()
    with pytest.raises(WebSocketDisconnect), c.websocket_connect("/overlay/ws?key=wrong") as ws:
        ws.receive_text()
    with c.websocket_connect(f"/overlay/ws?key={KEY}") as ws:
        assert json.loads(ws.receive_text()) == {"type": "hello", "rate": None, "daemon": False}


def test_frame_message_keeps_samples_aligned() -> None:
    for header in (b'{"job":"a"}', b'{"job":"ab"}'):
        f = PcmFrame("a", 0, 22050, False, False, header, b"\x01\x00\x02\x00")
        msg = overlay.frame_message(f)
        (n,) = struct.unpack("<I", msg[:4])
        assert n % 2 == 0 and json.loads(msg[4 : 4 + n]) == json.loads(header)
        assert msg[4 + n :] == b"\x01\x00\x02\x00"


def test_events_are_slimmed_to_what_a_caption_needs() -> None:
    raw = json.dumps(
        {"event": "started", "job": "j", "text": "<b>hi</b>", "user": "u", "voice": "joe", "req": "secret"}
    ).encode()
    item = parse([b"event", raw])
    assert isinstance(item, FeedEvent)
    msg = overlay.event_message(item)
    assert msg is not None
    assert json.loads(msg) == {
        "type": "event",
        "event": {"event": "started", "job": "j", "text": "<b>hi</b>", "user": "u"},
    }
    assert overlay.event_message(FeedEvent("queued", {"event": "queued"}, b"")) is None
    assert overlay.event_message(FeedEvent("error", {"event": "error", "code": "x"}, b"")) is None


def test_the_page_never_puts_chat_text_into_html() -> None:
    js = (overlay.STATIC / "overlay.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    assert "textContent = String(value)" in js
