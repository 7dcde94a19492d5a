"""``ishowtts-web``: its settings and secrets, the limits around every route, ``/healthz``,
``--print-urls``; the real gateway as a subprocess in front of the real daemon (Piper)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ishowttsd import config
from ishowttsd.client.aio import DaemonClient
from ishowttsd.client.feed import Feed
from ishowttsd.confread import ConfigError
from ishowttsd.web.app import Gateway, build_app
from ishowttsd.web.auth import Keys, load_keys
from ishowttsd.web.limits import BodyLimit, RateLimit
from tests.support import Daemon, running_daemon
from tests.websupport import Gateway as GatewayProc
from tests.websupport import running_gateway

# -- settings and secrets ---------------------------------------------------------------------------


def test_web_section_defaults_and_errors(tmp_path: Path) -> None:
    s = config.parse({"daemon": {"state_dir": str(tmp_path)}}, None)
    assert s.web.listen == "127.0.0.1:8765"  # loopback unless the user says otherwise
    assert s.web.token_file == tmp_path / "web" / "token"
    assert s.web.overlay_key_file == tmp_path / "web" / "overlay.key"
    f = tmp_path / "ishowtts.toml"
    for bad, key in (('listen = "8765"', "web.listen"), ("max_body_bytes = 10", "web.max_body_bytes"),
                     ('tokenfile = "x"', "web.tokenfile")):  # fmt: skip
        f.write_text(f"[web]\n{bad}\n")
        with pytest.raises(ConfigError) as e:
            config.load(f)
        assert e.value.key == key and str(f) in str(e.value)


def test_secret_files_are_made_private_and_checked(tmp_path: Path) -> None:
    token_file, key_file = tmp_path / "web" / "token", tmp_path / "web" / "overlay.key"
    keys = load_keys(token_file, key_file, None)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o640
    assert len(keys.token) >= 32 and keys.token != keys.overlay_key
    assert load_keys(token_file, key_file, None) == keys  # kept across restarts
    settings = tmp_path / "ishowtts.toml"
    token_file.write_text("short\n")
    with pytest.raises(ConfigError) as e:
        load_keys(token_file, key_file, settings)
    assert (
        e.value.key == "web.token_file" and str(token_file) in str(e.value) and str(settings) in str(e.value)
    )
    token_file.write_text("a-user-written-secret-of-enough-length\n")
    os.chmod(token_file, 0o644)
    with pytest.raises(ConfigError, match="readable by anyone"):
        load_keys(token_file, key_file, settings)
    os.chmod(token_file, 0o600)
    assert load_keys(token_file, key_file, settings).token == "a-user-written-secret-of-enough-length"
    with pytest.raises(ConfigError, match="does not exist yet"):  # --print-urls never makes them
        load_keys(tmp_path / "none", key_file, settings, create=False)
    key_file.write_text("a-user-written-secret-of-enough-length\n")
    with pytest.raises(ConfigError, match="must differ"):
        load_keys(token_file, key_file, settings)


def test_keys_keep_the_token_and_the_overlay_key_apart() -> None:
    k = Keys("t" * 40, "o" * 40)
    assert k.bearer_ok("Bearer " + "t" * 40) and k.bearer_ok("bearer " + "t" * 40)
    assert not k.bearer_ok("Bearer " + "o" * 40)  # the overlay key never opens the API
    assert not k.bearer_ok(None) and not k.bearer_ok("t" * 40) and not k.bearer_ok("Basic " + "t" * 40)
    assert k.overlay_ok("o" * 40) and not k.overlay_ok("t" * 40) and not k.overlay_ok(None)
    assert not k.overlay_ok("é" * 3)  # non-ASCII input is compared, not crashed on


# -- limits -----------------------------------------------------------------------------------------


async def _echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


def test_rate_limit_is_per_client_with_a_burst() -> None:
    now = [0.0]
    app = RateLimit(Starlette(routes=[Route("/x", _echo, methods=["GET"])]), 60, 3, clock=lambda: now[0])
    c = TestClient(app)
    assert [c.get("/x").status_code for _ in range(4)] == [200, 200, 200, 429]
    r = c.get("/x")
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "rate_limited"
    now[0] += 1.0  # one request a second comes back
    assert c.get("/x").status_code == 200


def test_body_limit_by_length_and_by_counting() -> None:
    app = BodyLimit(Starlette(routes=[Route("/x", _echo, methods=["POST"])]), 1024)
    c = TestClient(app)
    assert c.post("/x", content=b"a" * 1024).text == "1024"
    r = c.post("/x", content=b"a" * 1025)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        for _ in range(10):
            yield b"a" * 200

    r = c.post("/x", content=chunks())
    assert r.status_code == 413


def test_healthz_says_why_the_daemon_is_not_usable(tmp_path: Path) -> None:
    settings = config.parse({"daemon": {"state_dir": str(tmp_path)}}, None)
    gw = Gateway(
        settings,
        Keys("t" * 40, "o" * 40),
        DaemonClient(f"ipc://{tmp_path}/none.sock", timeout=1.0),
        Feed(f"ipc://{tmp_path}/none-pcm.sock"),
    )
    with TestClient(build_app(gw)) as c:
        r = c.get("/healthz")
    assert r.status_code == 503 and r.json() == {"status": "unavailable", "daemon": "unreachable"}


# -- the real gateway -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon() as d:
        yield d


@pytest.fixture(scope="module")
def gateway(daemon: Daemon) -> Iterator[GatewayProc]:
    with running_gateway(daemon, {"max_body_bytes": 4096}) as gw:
        yield gw


def test_healthz_needs_no_key_and_tells_ready(gateway: GatewayProc) -> None:
    r = httpx.get(gateway.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "daemon": "ready"}


def test_secrets_were_created_and_print_urls_shows_them(gateway: GatewayProc) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ishowttsd.web.cli", "--config", str(gateway.config), "--print-urls"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert f"{gateway.url}/overlay?key={gateway.overlay_key}" in out.stdout
    assert f"Bearer {gateway.token}" in out.stdout and f"{gateway.url}/v1" in out.stdout


def test_overlay_is_mounted_behind_its_key(gateway: GatewayProc) -> None:
    assert httpx.get(gateway.url + "/overlay", params={"key": gateway.overlay_key}).status_code == 200
    assert httpx.get(gateway.url + "/overlay", params={"key": gateway.token}).status_code == 401


def test_no_cors_and_bounded_bodies(gateway: GatewayProc) -> None:
    evil = {"Origin": "https://evil.example"}
    r = httpx.get(gateway.url + "/healthz", headers=evil)
    assert "access-control-allow-origin" not in r.headers
    r = httpx.options(
        gateway.url + "/v1/audio/speech", headers={**evil, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers and r.status_code >= 400
    r = httpx.post(gateway.url + "/v1/audio/speech", headers=gateway.auth, content=b"x" * 5000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
