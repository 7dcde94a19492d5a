"""ishowtts-twitch's parts one by one: IRC parsing (IRCv3 tag unescaping), line framing, outgoing-line
safety, translation edge cases, backoff, the non-blocking publisher, settings, credentials, CLI precedence.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from ishowttsd import config
from ishowttsd.confread import ConfigError
from ishowttsd.protocol import ChatMessage
from ishowttsd.twitch import cli
from ishowttsd.twitch.client import backoff_delay
from ishowttsd.twitch.credentials import load_credentials
from ishowttsd.twitch.irc import LineBuffer, MalformedLine, format_line, parse_line
from ishowttsd.twitch.publisher import Publisher
from ishowttsd.twitch.translate import Translator, parse_emotes, strip_action

# -- parsing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "tags"),
    [
        # Vectors in the style of the IRCv3 parser tests (ircdocs/parser-tests, msg-split).
        (r"@a=b\\and\nk;c=72\s45;d=gh\:764 foo", {"a": "b\\and\nk", "c": "72 45", "d": "gh;764"}),
        (r"@a=\\s CMD", {"a": "\\s"}),  # an escaped backslash, then a plain 's' -- not a space
        (r"@a=\\\\ CMD", {"a": "\\\\"}),
        (r"@a=x\ CMD", {"a": "x"}),  # a trailing lone backslash is dropped
        (r"@a=\b\q CMD", {"a": "bq"}),  # an unknown escape drops its backslash
        ("@a=;b CMD", {"a": "", "b": ""}),  # a missing value is an empty value
        ("@;a=1 CMD", {"a": "1"}),
        (r"@vendor.example/x=1;+client-only=y\sz CMD", {"vendor.example/x": "1", "+client-only": "y z"}),
    ],
)
def test_tag_values_are_unescaped_per_ircv3(line: str, tags: dict[str, str]) -> None:
    assert dict(parse_line(line.encode()).tags) == tags


def test_a_twitch_privmsg_parses_into_its_parts() -> None:
    m = parse_line(
        rb"@badge-info=;display-name=Ron\sni;emotes=25:0-4 :ronni!ronni@ronni.tmi.twitch.tv PRIVMSG #chan :Kappa  x "
        b"\r\n"
    )
    assert m.command == "PRIVMSG"
    assert m.params == ("#chan", "Kappa  x ")  # the trailing parameter is kept byte for byte
    assert m.nick == "ronni"
    assert m.tags["display-name"] == "Ron ni"
    assert parse_line(b":tmi.twitch.tv 001 justinfan1 :Welcome, GLHF!").params == (
        "justinfan1",
        "Welcome, GLHF!",
    )
    assert parse_line(b"ping :x").command == "PING"


@pytest.mark.parametrize(
    "line",
    [b"", b"   ", b"@tags-only", b":src", b":src   ", b"@a=b :src", b"PRIV\x00MSG #c :x", b"12 x", b"P!NG x",
     b"@bad key=1 CMD", b"a" * 16385],
)  # fmt: skip
def test_malformed_lines_raise_one_exception_type(line: bytes) -> None:
    with pytest.raises(MalformedLine):
        parse_line(line)


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    m = parse_line(b":a!a@a PRIVMSG #c :caf\xe9 \xff ok")
    assert m.params[1] == "caf\ufffd \ufffd ok"


def test_line_buffer_frames_split_reads_and_discards_overlong_lines() -> None:
    b = LineBuffer(max_bytes=20)
    assert list(b.feed(b"PING :a\r")) == []
    assert list(b.feed(b"\nPING :b\n\r\nPIN")) == [b"PING :a", b"PING :b"]
    assert list(b.feed(b"G :c\r\n")) == [b"PING :c"]
    assert list(b.feed(b"x" * 50)) == []  # over the limit with no newline yet: discarded as it comes
    assert list(b.feed(b"yyy\r\nPING :d\r\n")) == [b"PING :d"]
    assert list(b.feed(b"z" * 21 + b"\nPING :e\n")) == [b"PING :e"]
    assert b.overlong == 2


def test_outgoing_lines_cannot_inject_commands() -> None:
    assert format_line("PRIVMSG", "#c", "hello there") == b"PRIVMSG #c :hello there\r\n"
    assert format_line("PONG", "tmi.twitch.tv") == b"PONG tmi.twitch.tv\r\n"
    assert format_line("PONG", ":x") == b"PONG ::x\r\n"
    for bad in ("a\r\nQUIT", "a\nJOIN #x", "a\x00"):
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            format_line("PASS", bad)
    with pytest.raises(ValueError):
        format_line("JOIN", "#a b", "x")
    with pytest.raises(ValueError):
        format_line("JO IN", "#a")


# -- translation ------------------------------------------------------------------------------------------


def tr(line: str, t: Translator | None = None) -> tuple[str, dict[str, Any]] | None:
    out = (t or Translator()).translate(parse_line(line.encode()))
    return None if out is None else (out.topic.decode(), out.body)


def test_action_and_other_ctcp() -> None:
    assert strip_action("\x01ACTION waves\x01") == "waves"
    assert strip_action("\x01ACTION waves") == "waves"  # some clients omit the closing \x01
    assert strip_action("\x01ACTION\x01") == ""
    assert strip_action("\x01VERSION\x01") is None
    assert strip_action("plain") == "plain"
    assert tr(":a!a@a PRIVMSG #c :\x01VERSION\x01") is None
    assert tr(":a!a@a PRIVMSG #c :\x01ACTION\x01") is None  # nothing to say
    assert tr(":a!a@a PRIVMSG #c :   ") is None


def test_emote_ranges_are_code_points_and_garbage_is_skipped() -> None:
    text = "\U0001f600 Kappa hi"
    assert parse_emotes("25:2-6", len(text)) == [[2, 6]]
    assert text[2:7] == "Kappa"
    assert parse_emotes("25:0-4,9-99/1:x-y,3-1,,5/bad", 10) == [[0, 4]]  # out of range, reversed, garbled
    assert parse_emotes("emotesv2_abc:0-1/emotesv2_def:3-4", 5, shift=10) == [[10, 11], [13, 14]]
    assert parse_emotes("", 5) == []


def test_role_facts_from_tags() -> None:
    base = ":u!u@u PRIVMSG #c :hi"
    body = tr(
        "@badge-info=founder/14;badges=founder/0,vip/1,glhf-pledge/1;subscriber=1;first-msg=1;"
        "custom-reward-id=r-1;msg-id=highlighted-message " + base
    )[1]  # type: ignore[index]
    assert body["roles"] == ["vip", "subscriber", "founder"]  # most powerful first
    assert body["badges"] == {"founder": "0", "vip": "1", "glhf-pledge": "1"}
    assert body["months"] == 14 and body["first_msg"] is True
    assert body["reward_id"] == "r-1" and body["msg_type"] == "highlighted-message"
    # The tags Twitch sends besides badges count too; garbage badges are skipped, not fatal.
    assert tr("@mod=1;badges=a/b/c,,/x,ok/1 " + base)[1]["roles"] == ["moderator"]  # type: ignore[index]
    assert "roles" not in tr("@badges=;first-msg=0;badge-info=subscriber/x " + base)[1]  # type: ignore[index]
    # Every fact survives the daemon's own parser.
    msg = ChatMessage.from_json(body, 500)
    assert msg.roles == {"vip", "subscriber", "founder"} and msg.months == 14
    assert msg.first_msg and msg.reward_id == "r-1" and msg.token is None


def test_kinds_from_tags() -> None:
    base = ":u!u@u PRIVMSG #c :hi"
    assert tr("@bits=0;mod=1 " + base)[1]["kind"] == "mod"  # type: ignore[index]  # zero bits is not paid
    assert tr("@bits=5;mod=1 " + base)[1]["kind"] == "paid"  # type: ignore[index]
    assert tr("@badges=vip/1,broadcaster/1 " + base)[1]["kind"] == "mod"  # type: ignore[index]
    assert tr("@badges=vip/1;mod=0 " + base)[1]["kind"] == "chat"  # type: ignore[index]
    # No tags at all (capability refused): still chat, with the nick as the user.
    assert tr(base) == (
        "chat",
        {"text": "hi", "kind": "chat", "user": "u", "emotes": [], "channel": "c", "platform": "twitch"},
    )


def test_usernotice_variants() -> None:
    t = Translator()
    assert tr("@msg-id=sub;login=x :tmi.twitch.tv USERNOTICE #c", t) is None  # nothing to say
    got = tr(r"@msg-id=Weird\sKind!;system-msg=Hi;login=x :tmi.twitch.tv USERNOTICE #c", t)
    assert got is not None and got[1]["kind"] == "announcement" and got[1]["text"] == "Hi"
    got = tr(
        "@msg-id=announcement;login=mod;display-name=Mod;emotes=1:0-3 :tmi.twitch.tv USERNOTICE #c :Kappa", t
    )
    assert got is not None
    assert got[1]["text"] == "Kappa" and got[1]["emotes"] == [[0, 3]] and got[1]["user"] == "Mod"


def test_moderation_names_the_display_name_the_user_chatted_under() -> None:
    t = Translator(max_names=2)
    tr("@display-name=로니 :roni!roni@roni PRIVMSG #c :hi", t)
    assert tr("@ban-duration=abc :tmi.twitch.tv CLEARCHAT #c :Roni", t) == (
        "ban",
        {"user": "로니", "login": "roni", "channel": "c"},
    )
    assert tr("@login=roni;target-msg-id=m1 :tmi.twitch.tv CLEARMSG #c :hi", t) == (
        "delete",
        {"id": "m1", "channel": "c", "user": "로니"},
    )
    tr(":a!a@a PRIVMSG #c :x", t)
    tr(":b!b@b PRIVMSG #c :x", t)  # the oldest name is forgotten: a ban falls back to the login
    assert tr(":tmi.twitch.tv CLEARCHAT #c :roni", t) == (
        "ban",
        {"user": "roni", "login": "roni", "channel": "c"},
    )


def test_shapes_the_bridge_needs_are_malformed_when_missing() -> None:
    for line in (":a!a@a PRIVMSG", ":a!a@a PRIVMSG nochannel :x", ":a!a@a PRIVMSG #c", ":t CLEARMSG #c :x"):
        with pytest.raises(MalformedLine):
            Translator().translate(parse_line(line.encode()))
    assert tr(":t ROOMSTATE #c") is None and tr(":t 353 x = #c :a b") is None


def test_bodies_are_accepted_by_the_daemons_protocol_parser() -> None:
    long_name = "n" * 300
    out = tr(f"@display-name={long_name};id={'i' * 300};emotes=1:0-1 :u!u@u PRIVMSG #c :hello")
    assert out is not None
    msg = ChatMessage.from_json(out[1], 2000)  # would raise ProtocolError on an over-long id or name
    assert msg.emotes == ((0, 1),) and msg.platform == "twitch" and msg.user == "n" * 128


# -- backoff ----------------------------------------------------------------------------------------------


def test_backoff_doubles_with_equal_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for attempt, d in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (6, 60.0), (500, 60.0)]:
        delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(d / 2 <= x <= d for x in delays)
        assert max(delays) - min(delays) > d / 4  # jitter spreads clients out
    assert backoff_delay(3, 0.05, 0.2, rng) <= 0.2


# -- publisher -----------------------------------------------------------------------------------------------


def test_publisher_never_blocks_and_counts_hwm_drops(tmp_path: Path) -> None:
    ep = f"ipc:///tmp/itu-{os.getpid()}-{time.monotonic_ns()}.sock"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 5)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(ep)
    pub = Publisher(ep, hwm=5, ctx=ctx)
    try:
        assert pub.publish(b"chat", {"text": "x"}) is False  # no subscription yet
        assert pub.dropped["daemon_away"] == 1
        deadline = time.monotonic() + 10
        while not pub.connected() and time.monotonic() < deadline:
            sub.poll(20)  # the SUB attaches its pipe when its owner touches it, like the daemon's loop
            pub.poll_subscriptions()
        assert pub.connected()
        # The daemon stops reading. 2,000 fat messages must not block: the pipe fills, then drops.
        big = {"text": "y" * 20000}
        t0 = time.monotonic()
        results = [pub.publish(b"chat", big) for _ in range(2000)]
        elapsed = time.monotonic() - t0
        assert elapsed < 5.0
        assert results[0] is True
        assert pub.dropped["hwm"] > 0 and pub.published["chat"] + pub.dropped["hwm"] == 2000
        # It reads again: messages flow again.
        got = 0
        while sub.poll(200):
            sub.recv_multipart()
            got += 1
        assert got == pub.published["chat"]
        assert pub.publish(b"chat", {"text": "again"}) is True
        assert sub.poll(2000) and sub.recv_multipart()[1] == b'{"text":"again"}'
    finally:
        pub.close()
        sub.close(0)
        ctx.term()


# -- settings, credentials, CLI ---------------------------------------------------------------------------------


def test_twitch_section_errors_name_the_key(tmp_path: Path) -> None:
    def err(section: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as e:
            config.parse({"twitch": section}, tmp_path / "ishowtts.toml")
        return str(e.value)

    assert "twitch.channel" in err({"channel": "no spaces allowed"})
    assert "twitch.server" in err({"server": "irc.chat.twitch.tv"})
    assert "twitch.ingest" in err({"ingest": "/run/x.sock"})
    assert "twitch.reconnect_max_s" in err({"reconnect_min_s": 5.0, "reconnect_max_s": 1.0})
    assert "did you mean 'hwm'" in err({"hmw": 5})
    s = config.parse({"twitch": {"channel": "#MyChannel", "ca_file": "ca.pem"}}, tmp_path / "ishowtts.toml")
    assert s.twitch.channel == "mychannel" and s.twitch.ca_file == tmp_path / "ca.pem"


def write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_file_rules(tmp_path: Path) -> None:
    ok = load_credentials(write_secret(tmp_path / "a.toml", 'login = "MyBot"\ntoken = "abc123"\n', 0o640))
    assert ok.login == "mybot" and ok.token == "oauth:abc123"  # group-readable is allowed
    assert "abc123" not in repr(ok)
    for mode in (0o644, 0o604, 0o602):
        with pytest.raises(ConfigError, match="chmod 600") as e:
            load_credentials(write_secret(tmp_path / f"w{mode:o}.toml", 'login = "a"\ntoken = "b"\n', mode))
        assert str(tmp_path) in str(e.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_credentials(tmp_path / "missing.toml")
    link = tmp_path / "link.toml"
    link.symlink_to(tmp_path / "a.toml")
    with pytest.raises(ConfigError, match="cannot be opened"):
        load_credentials(link)
    with pytest.raises(ConfigError, match="together") as e:
        load_credentials(write_secret(tmp_path / "b.toml", 'login = "a"\n'))
    assert e.value.key == "token"
    with pytest.raises(ConfigError) as e:
        load_credentials(write_secret(tmp_path / "c.toml", 'token = "supersecret\n'))
    assert "supersecret" not in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'token'"):
        load_credentials(write_secret(tmp_path / "d.toml", 'login = "a"\ntokn = "b"\n'))
    mt = load_credentials(write_secret(tmp_path / "e.toml", 'moderator_token = "m0d"\n'))
    assert mt.login is None and mt.moderator_token == "m0d"


def test_ingest_endpoint_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "i.toml"
    cfg.write_text('[twitch]\nchannel = "fromconfig"\n')
    monkeypatch.setenv("ISHOWTTS_INGEST", "ipc:///env.sock")
    parse = cli._parser().parse_args

    def resolve(*argv: str) -> tuple[str, str]:
        _tw, channel, endpoint, _ = cli.resolve(parse(["--config", str(cfg), *argv]))
        return channel, endpoint

    assert resolve() == ("fromconfig", "ipc:///env.sock")
    assert resolve("--ingest", "tcp://127.0.0.1:5")[1] == "tcp://127.0.0.1:5"
    assert resolve("--channel", "#Other")[0] == "other"
    cfg.write_text('[twitch]\nchannel = "c"\ningest = "ipc:///cfg.sock"\n')
    assert resolve()[1] == "ipc:///cfg.sock"
    monkeypatch.delenv("ISHOWTTS_INGEST")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    cfg.write_text('[twitch]\nchannel = "c"\n')
    assert resolve()[1] == f"ipc://{tmp_path}/ishowtts/ingest.sock"
    with pytest.raises(ConfigError, match="--server"):
        cli.resolve(parse(["--config", str(cfg), "--server", "nohostport"]))
    with pytest.raises(ConfigError, match="--ca-file"):
        cli.resolve(parse(["--config", str(cfg), "--ca-file", str(tmp_path / "none.pem")]))
    cfg.write_text("")
    with pytest.raises(ConfigError, match="--channel NAME"):
        cli.resolve(parse(["--config", str(cfg)]))


def test_documented_twitch_keys_match_the_defaults() -> None:
    """etc/ishowtts.toml lists every [twitch] key (commented); those with a default show it."""
    import dataclasses

    import tomlkit

    from ishowttsd.twitch.settings import TwitchSettings

    text = (Path(__file__).resolve().parents[1] / "etc/ishowtts.toml").read_text()
    section = text.split("\n[twitch]\n", 1)[1].split("\n[", 1)[0]
    keys = [
        ln[2:].split(" #", 1)[0].strip() for ln in section.splitlines() if " = " in ln and ln.startswith("# ")
    ]
    doc = tomlkit.parse("\n".join(keys)).unwrap()
    fields = {f.name: f.default for f in dataclasses.fields(TwitchSettings)}
    assert set(doc) == set(fields)
    for k, default in fields.items():
        if default is not None:
            assert doc[k] == default, k


def test_publisher_speaks_curve_to_a_network_ingest(tmp_path: Path) -> None:
    import zmq.auth

    from ishowttsd import security

    server_pub, server_sec = zmq.auth.create_certificates(tmp_path, "server")
    _, client_sec = zmq.auth.create_certificates(tmp_path, "client")
    _, other_sec = zmq.auth.create_certificates(tmp_path, "impostor")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    spub, ssec = zmq.auth.load_certificate(server_sec)
    assert ssec is not None
    sub.curve_server = True
    sub.curve_publickey, sub.curve_secretkey = spub, ssec
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    ep = f"tcp://127.0.0.1:{port}"
    good = Publisher(ep, ctx=ctx, curve=security.load_client_keys(str(client_sec), str(server_pub)))
    # The impostor trusts the wrong server key: the handshake fails, nothing is ever subscribed.
    bad = Publisher(ep, ctx=ctx, curve=security.load_client_keys(str(other_sec), str(other_sec)))
    plain = Publisher(ep, ctx=ctx)
    try:
        deadline = time.monotonic() + 10
        while not good.connected() and time.monotonic() < deadline:
            sub.poll(20)
            good.poll_subscriptions()
        assert good.publish(b"chat", {"text": "over curve"})
        assert sub.poll(2000) and sub.recv_multipart() == [b"chat", b'{"text":"over curve"}']
        end = time.monotonic() + 1.5  # time enough for a handshake (the good one took far less)
        while time.monotonic() < end:
            sub.poll(20)
            bad.poll_subscriptions()
            plain.poll_subscriptions()
        for p in (bad, plain):
            assert not p.connected()
            assert not p.publish(b"chat", {"text": "must not arrive"})
            assert p.dropped["daemon_away"] == 1
        assert not sub.poll(300)
    finally:
        for p in (good, bad, plain):
            p.close()
        sub.close(0)
        ctx.term()


def test_curve_flags_come_in_pairs(tmp_path: Path) -> None:
    cfg = tmp_path / "i.toml"
    cfg.write_text("")
    base = ["--config", str(cfg), "--channel", "c", "--ingest", "tcp://127.0.0.1:1"]
    assert cli.main([*base, "--server-key", "x" * 40]) == 2
    assert cli.main([*base, "--server-key", "x" * 40, "--client-key", str(tmp_path / "none")]) == 2
