"""Security: CURVE on network endpoints (keys from ``ishowtts-keys``), no service without an
authorised key, tcp refused without keys, ipc sockets group-only, no shell anywhere."""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tomlkit
import zmq
import zmq.auth
from robust import record
from support import REPO, Daemon, base_settings, deep_merge, short_tmpdir
from waits import wait_until

from ishowttsd.security import CurveKeys, apply_client

KEYS = [sys.executable, "-m", "ishowttsd.cli.keys"]
SAY = [sys.executable, "-m", "ishowttsd.cli.say"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keys(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KEYS, "--dir", str(d), *args], capture_output=True, text=True, timeout=30)


def _client_keys(keys_dir: Path, name: str) -> CurveKeys:
    public, secret = zmq.auth.load_certificate(keys_dir / "clients" / f"{name}.key_secret")
    server, _ = zmq.auth.load_certificate(keys_dir / "server.key")
    assert secret is not None
    return CurveKeys(public, secret, server)


def _stray_keys(d: Path, server_key_file: Path) -> CurveKeys:
    """A well-formed key pair that nobody authorised."""
    d.mkdir(exist_ok=True)
    _, secret_file = zmq.auth.create_certificates(d, "stranger")
    public, secret = zmq.auth.load_certificate(secret_file)
    server, _ = zmq.auth.load_certificate(server_key_file)
    assert secret is not None
    return CurveKeys(public, secret, server)


# -- ishowtts-keys -----------------------------------------------------------------------------------


def test_keys_cli_init_client_authorize_revoke_list(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    r = _keys(d, "--group", "no-such-group-xyz", "init")
    assert r.returncode == 0, r.stderr
    assert (d / "server.key").is_file() and (d / "server.key_secret").is_file()
    assert (d / "server.key_secret").stat().st_mode & 0o777 == 0o600
    assert (d / "authorized_clients").stat().st_mode & 0o777 == 0o750
    assert _keys(d, "init").returncode == 1  # never silently replaces the server's identity
    r = _keys(d, "client", "bot1")
    assert r.returncode == 0, r.stderr
    assert (d / "clients" / "bot1.key_secret").stat().st_mode & 0o777 == 0o600
    # A key made elsewhere: only its public half is filed, whatever file is handed over.
    other = tmp_path / "elsewhere"
    other.mkdir()
    _, secret_file = zmq.auth.create_certificates(other, "laptop")
    r = _keys(d, "authorize", secret_file)
    assert r.returncode == 0, r.stderr
    filed = (d / "authorized_clients" / "laptop.key").read_text()
    assert "secret" not in filed
    r = _keys(d, "list")
    assert r.returncode == 0
    server_pub = zmq.auth.load_certificate(d / "server.key")[0].decode()
    laptop_pub = zmq.auth.load_certificate(secret_file)[0].decode()
    assert server_pub in r.stdout and laptop_pub in r.stdout and "client bot1" in r.stdout
    assert _keys(d, "revoke", "laptop").returncode == 0
    assert laptop_pub not in _keys(d, "list").stdout
    assert _keys(d, "client", "../evil").returncode != 0  # names become file names
    assert _keys(d, "client", "server").returncode != 0


# -- configuration checks ---------------------------------------------------------------------------------


def _check_config(d: Path, settings: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    cfg = d / "check.toml"
    cfg.write_text(tomlkit.dumps(settings))
    return subprocess.run(
        [sys.executable, "-m", "ishowttsd.daemon", "--config", str(cfg), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=d,
    )


def test_tcp_endpoint_without_keys_is_refused_naming_the_key() -> None:
    d = short_tmpdir()
    for key in ("control", "ingest", "pcm"):
        s = deep_merge(base_settings(d), {"zmq": {key: f"tcp://127.0.0.1:{_free_port()}"}})
        r = _check_config(d, s)
        assert r.returncode == 2, r
        assert f"zmq.{key}" in r.stderr and "security.keys_dir" in r.stderr.replace(
            "[security] keys_dir", "security.keys_dir"
        )
    s = deep_merge(base_settings(d), {"zmq": {"ingest_connect": ["tcp://10.0.0.5:5555"]}})
    r = _check_config(d, s)
    assert r.returncode == 2 and "zmq.ingest_connect[0]" in r.stderr
    # And the daemon itself exits with the configuration code before binding anything.
    cfg = d / "check.toml"
    r2 = subprocess.run(
        [sys.executable, "-m", "ishowttsd.daemon", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r2.returncode == 2 and "ingest_connect[0]" in r2.stderr


def test_unsafe_key_directories_are_refused(tmp_path: Path) -> None:
    d = short_tmpdir()
    keys = tmp_path / "keys"
    s = deep_merge(base_settings(d), {"security": {"keys_dir": str(keys)}})
    r = _check_config(d, s)
    assert r.returncode == 2 and "security.keys_dir" in r.stderr and "not a directory" in r.stderr
    assert _keys(keys, "init").returncode == 0
    assert _check_config(d, s).returncode == 0
    os.chmod(keys / "server.key_secret", 0o644)
    r = _check_config(d, s)
    assert r.returncode == 2 and "server.key_secret" in r.stderr and "others" in r.stderr
    os.chmod(keys / "server.key_secret", 0o600)
    os.chmod(keys / "authorized_clients", 0o777)
    r = _check_config(d, s)
    assert r.returncode == 2 and "authorized_clients" in r.stderr
    os.chmod(keys / "authorized_clients", 0o750)
    (keys / "server.key_secret").write_text("garbage\n")
    r = _check_config(d, s)
    assert r.returncode == 2 and "server.key_secret" in r.stderr


# -- CURVE end to end ---------------------------------------------------------------------------------------


class CurveDaemon:
    def __init__(self) -> None:
        self.dir = short_tmpdir()
        self.keys = self.dir / "keys"
        assert _keys(self.keys, "init").returncode == 0
        assert _keys(self.keys, "client", "bot1").returncode == 0
        self.ports = {k: _free_port() for k in ("control", "ingest", "pcm")}
        settings = deep_merge(
            base_settings(self.dir),
            {
                "zmq": {k: f"tcp://127.0.0.1:{p}" for k, p in self.ports.items()},
                "security": {"keys_dir": str(self.keys)},
            },
        )
        self.daemon = Daemon(self.dir, settings)
        self.ctx = self.daemon.ctx
        self.good = _client_keys(self.keys, "bot1")

    def sock(self, kind: int, name: str, keys: CurveKeys | None) -> zmq.Socket[Any]:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            apply_client(s, keys)
        if kind == zmq.SUB:
            s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(f"tcp://127.0.0.1:{self.ports[name]}")
        return s

    def ask(
        self, keys: CurveKeys | None, obj: dict[str, Any], timeout_s: float = 1.5
    ) -> dict[str, Any] | None:
        s = self.sock(zmq.DEALER, "control", keys)
        try:
            s.send(json.dumps(obj).encode())
            if not s.poll(int(timeout_s * 1000)):
                return None
            reply: dict[str, Any] = json.loads(s.recv_multipart()[0])
            return reply
        finally:
            s.close(0)

    def start(self) -> None:
        self.daemon.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alive = self.daemon.proc is not None and self.daemon.proc.poll() is None
            assert alive, self.daemon.log_text()[-3000:]
            pong = self.ask(self.good, {"op": "ping"}, 0.5)
            if pong is not None and pong.get("ready"):
                return
        raise AssertionError(self.daemon.log_text()[-3000:])


@pytest.fixture(scope="module")
def curve_daemon():  # type: ignore[no-untyped-def]
    cd = CurveDaemon()
    cd.start()
    yield cd
    cd.daemon.close()


def test_authorised_client_is_served_over_tcp(curve_daemon: CurveDaemon) -> None:
    cd = curve_daemon
    reply = cd.ask(cd.good, {"op": "status"})
    assert reply is not None and reply["event"] == "status"
    s = cd.sock(zmq.DEALER, "control", cd.good)
    s.send(json.dumps({"op": "say", "text": "Over an encrypted link."}).encode())
    deadline = time.monotonic() + 30
    last = None
    while time.monotonic() < deadline and (last is None or last["event"] not in ("done", "error")):
        if s.poll(200):
            last = json.loads(s.recv_multipart()[0])
    s.close(0)
    assert last is not None and last["event"] == "done", last


def test_clients_without_an_authorised_key_get_no_service(curve_daemon: CurveDaemon) -> None:
    cd = curve_daemon
    stranger = _stray_keys(cd.dir / "stranger", cd.keys / "server.key")
    wrong_server = CurveKeys(cd.good.public, cd.good.secret, stranger.public)
    outcomes = {
        "plain": cd.ask(None, {"op": "ping"}),
        "unauthorised key": cd.ask(stranger, {"op": "ping"}),
        "wrong server key": cd.ask(wrong_server, {"op": "ping"}),
    }
    assert outcomes == {k: None for k in outcomes}, outcomes
    assert cd.ask(cd.good, {"op": "ping"}) is not None  # and the daemon still serves the right one
    # ingest: a bot without a key is not heard; one with a key is.
    st0 = cd.ask(cd.good, {"op": "status"})
    assert st0 is not None
    for keys, heard in ((None, False), (stranger, False), (cd.good, True)):
        bot = cd.sock(zmq.PUB, "ingest", keys)
        # A PUB drops what it sends before the subscription reaches it: keep sending for a while.
        deadline = time.monotonic() + (10 if heard else 1.5)
        n = 0
        while time.monotonic() < deadline:
            bot.send_multipart([b"chat", json.dumps({"text": "hello", "user": f"u{n}"}).encode()])
            n += 1
            time.sleep(0.1)  # a bot's pace; an unheard bot is tried for 1.5 s
            st = cd.ask(cd.good, {"op": "status"})
            assert st is not None
            if st["counters"]["chat_in"] > st0["counters"]["chat_in"]:
                break
        bot.close(0)
        assert (st["counters"]["chat_in"] > st0["counters"]["chat_in"]) is heard, (keys, st["counters"])
        st0 = st
    # pcm: a subscriber without a key hears nothing.
    plain_sub = cd.sock(zmq.SUB, "pcm", None)
    good_sub = cd.sock(zmq.SUB, "pcm", cd.good)
    probes = iter(range(1000))

    def good_sub_hears() -> bool:  # each probe publishes a 'moderation' event
        probe = {"op": "moderate", "action": "delete", "id": f"probe-{next(probes)}"}
        assert cd.ask(cd.good, probe) is not None
        return bool(good_sub.poll(100))

    wait_until(good_sub_hears, 10, "the keyed subscriber to hear the PUB")
    assert not plain_sub.poll(500)
    plain_sub.close(0)
    good_sub.close(0)
    log = cd.daemon.log_text()
    assert stranger.public.decode() in log and "key not authorised" in log  # the operator can see who knocked
    record("curve_refusals", plain=None, unauthorised=None, wrong_server_key=None)


def test_say_cli_with_and_without_keys(curve_daemon: CurveDaemon) -> None:
    cd = curve_daemon
    ep = f"tcp://127.0.0.1:{cd.ports['control']}"
    env = {
        **os.environ,
        "ISHOWTTS_SERVER_KEY": str(cd.keys / "server.key"),
        "ISHOWTTS_CLIENT_KEY": str(cd.keys / "clients" / "bot1.key_secret"),
    }
    r = subprocess.run(
        [*SAY, "--endpoint", ep, "--ping"], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0 and "ready" in r.stdout, r.stderr
    bare = {k: v for k, v in env.items() if not k.startswith("ISHOWTTS_")}
    r = subprocess.run(
        [*SAY, "--endpoint", ep, "--ping", "--timeout", "2"],
        env=bare,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 6, (r.returncode, r.stderr)
    r = subprocess.run(
        [*SAY, "--endpoint", ep, "--server-key", str(cd.keys / "server.key"), "--ping"],
        env=bare,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "--client-key" in r.stderr


def test_revoked_key_is_refused_after_reload(curve_daemon: CurveDaemon) -> None:
    cd = curve_daemon
    reloads = cd.daemon.log_text().count("CURVE clients authorised")
    assert _keys(cd.keys, "client", "temp").returncode == 0
    cd.daemon.signal(signal.SIGHUP)
    temp = _client_keys(cd.keys, "temp")
    deadline = time.monotonic() + 10
    while cd.ask(temp, {"op": "ping"}, 0.5) is None:
        assert time.monotonic() < deadline, "a newly authorised key was not admitted after SIGHUP"
    assert _keys(cd.keys, "revoke", "temp").returncode == 0
    cd.daemon.signal(signal.SIGHUP)
    cd.daemon.wait_log("CURVE clients authorised", count=reloads + 2)  # the keys read again
    assert cd.ask(temp, {"op": "ping"}) is None
    assert cd.ask(cd.good, {"op": "ping"}) is not None


# -- ipc permissions --------------------------------------------------------------------------------------


def test_ipc_sockets_are_group_only_whatever_the_umask() -> None:
    """Even started with umask 000, the daemon's sockets are srwxrwx--- (group 'ishowtts' under
    systemd), and the runtime directory it creates is 0770."""
    d = short_tmpdir()
    run = d / "run"
    settings = deep_merge(
        base_settings(d), {"zmq": {k: f"ipc://{run}/{k}.sock" for k in ("control", "ingest", "pcm")}}
    )
    daemon = Daemon(d, settings)
    old = os.umask(0)
    try:
        daemon.start()
    finally:
        os.umask(old)
    try:
        daemon.wait_ready()
        modes = {k: (run / f"{k}.sock").stat().st_mode & 0o777 for k in ("control", "ingest", "pcm")}
        assert modes == {"control": 0o770, "ingest": 0o770, "pcm": 0o770}, {
            k: oct(v) for k, v in modes.items()
        }
        assert run.stat().st_mode & 0o777 == 0o770
        # files the daemon writes (the journal) are not world-readable either
        journal = d / "state" / "journal.sqlite3"
        if journal.exists():
            assert journal.stat().st_mode & 0o007 == 0, oct(journal.stat().st_mode)
        record(
            "ipc_modes",
            sockets={k: oct(v) for k, v in modes.items()},
            runtime_dir=oct(run.stat().st_mode & 0o777),
        )
    finally:
        daemon.close()


# -- abstract ipc sockets ---------------------------------------------------------------------------------

_PROBE = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])
s.send(b'{"op": "say", "text": "spoken by nobody"}')
s.send(b'{"op": "ping"}')
print("REPLY" if s.poll(3000) else "SILENT", flush=True)
"""


def _as_nobody(endpoint: str) -> subprocess.Popen[str]:
    """A client running as user ``nobody``, in no group: what any local account can do."""
    cmd = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        sys.executable,
        "-c",
        _PROBE,
        endpoint,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")


@pytest.mark.skipif(os.geteuid() != 0 or not sys.platform.startswith("linux"), reason="needs root (setpriv)")
def test_abstract_ipc_needs_curve_and_another_uid_gets_no_service() -> None:
    d = short_tmpdir()
    name = f"ipc://@{d.name}-control"
    # 1. The finding: an abstract socket has no permissions; nobody reaches a plain one.
    ctx: zmq.Context[Any] = zmq.Context()
    rep = ctx.socket(zmq.ROUTER)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(name)
    probe = _as_nobody(name)
    assert rep.poll(15000), probe.communicate()
    peer, _ = rep.recv_multipart()
    rep.send_multipart([peer, b"{}"])
    out, err = probe.communicate(timeout=30)
    assert out.strip() == "REPLY", (out, err)
    rep.close(0)
    # 2. So the config refuses one without CURVE keys, naming the key.
    s = deep_merge(base_settings(d), {"zmq": {"control": name}})
    r = _check_config(d, s)
    assert r.returncode == 2 and "zmq.control" in r.stderr and "abstract" in r.stderr, r.stderr
    # 3. With keys it is a CURVE server: nobody gets no service, an authorised client does.
    keys = d / "keys"
    assert _keys(keys, "init").returncode == 0 and _keys(keys, "client", "bot1").returncode == 0
    s = deep_merge(s, {"security": {"keys_dir": str(keys)}})
    daemon = Daemon(d, s)
    good = _client_keys(keys, "bot1")

    def ask(obj: dict[str, Any]) -> dict[str, Any] | None:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        apply_client(sock, good)
        sock.connect(name)
        try:
            sock.send(json.dumps(obj).encode())
            return json.loads(sock.recv_multipart()[0]) if sock.poll(2000) else None
        finally:
            sock.close(0)

    daemon.start()
    try:
        deadline = time.monotonic() + 60
        while (pong := ask({"op": "ping"})) is None or not pong.get("ready"):
            assert time.monotonic() < deadline and daemon.proc is not None and daemon.proc.poll() is None, (
                daemon.log_text()[-3000:]
            )
        before = ask({"op": "status"})
        out, err = _as_nobody(name).communicate(timeout=30)
        assert out.strip() == "SILENT", (out, err)
        after = ask({"op": "status"})
        assert before is not None and after is not None
        assert after["counters"]["requests"] == before["counters"]["requests"] + 1  # only our own status
        assert after["jobs"] == before["jobs"] and after["queue"]["jobs"] == 0
    finally:
        daemon.close()
        ctx.term()


# -- no shell with user text ---------------------------------------------------------------------------------


def test_no_shell_anywhere_in_the_package() -> None:
    """User text never reaches a shell: no shell=True, os.system, os.popen, eval or exec."""
    bad: list[str] = []
    for path in sorted((REPO / "ishowttsd").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                if name in ("system", "popen") and owner == "os":
                    bad.append(f"{where} os.{name}")
                if name in ("getoutput", "getstatusoutput") and owner == "subprocess":
                    bad.append(f"{where} subprocess.{name}")
                if name in ("eval", "exec") and isinstance(f, ast.Name):
                    bad.append(f"{where} {name}()")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (
                        isinstance(kw.value, ast.Constant) and kw.value.value is False
                    ):
                        bad.append(f"{where} shell=")
    assert not bad, bad
