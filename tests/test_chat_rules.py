"""Streamer controls as plain code: read mode, roles, rewards, commands, voice tags, approval, keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ishowttsd import config
from ishowttsd.chat.rules import Command, Read, Refuse, Rules, decide, voice_segments
from ishowttsd.chat.voicestore import VoiceStore
from ishowttsd.confread import ConfigError
from ishowttsd.protocol import ChatMessage


def rules(**chat: Any) -> Rules:
    return config.parse({"chat": chat}, None).chat.rules


def msg(text: str, *roles: str, **kw: Any) -> ChatMessage:
    return ChatMessage(text=text, user=kw.pop("user", "viewer"), roles=frozenset(roles), **kw)


def verdict(r: Rules, m: ChatMessage) -> str:
    v = decide(m, r)
    if isinstance(v, Read):
        return f"read:{v.text}" + (f":hold={v.hold}" if v.hold else "")
    if isinstance(v, Refuse):
        return f"refuse:{v.reason}"
    return f"command:{v.name}" + (f":{v.arg}" if v.arg else "")


def test_read_mode_and_prefixes() -> None:
    default = rules()
    assert verdict(default, msg("hello chat")) == "read:hello chat"
    assert verdict(default, msg("!discord")) == "refuse:ignored_prefix"
    assert verdict(default, msg("!tts hello")) == "read:hello"  # the prefix is stripped in all modes
    cmd = rules(mode="command", command_prefixes=["!tts", "!say"])
    assert verdict(cmd, msg("hello chat")) == "refuse:not_command"
    assert verdict(cmd, msg("!SAY hello")) == "read:hello"
    assert verdict(cmd, msg("!ttsx hello")) == "refuse:not_command"  # a prefix is a whole word
    # Paid lines, redemptions and notices are read by their own rules, not the read mode.
    assert verdict(cmd, msg("cheer100 hi", bits=100, kind="paid")) == "read:cheer100 hi"
    assert verdict(cmd, msg("my redemption", reward_id="r1")) == "read:my redemption"
    assert verdict(cmd, msg("Ann subscribed", kind="sub")) == "read:Ann subscribed"


def test_who_is_read() -> None:
    r = rules(who={"chat": ["vip", "subscriber"], "subscriber_months": 6, "allow_users": ["Friend"]})
    assert verdict(r, msg("hi", "vip")) == "read:hi"
    assert verdict(r, msg("hi")) == "refuse:not_allowed"
    assert verdict(r, msg("hi", "subscriber", months=5)) == "refuse:not_allowed"
    assert verdict(r, msg("hi", "subscriber", months=6)) == "read:hi"
    assert verdict(r, msg("hi", "founder", months=12)) == "read:hi"  # founders are subscribers
    assert verdict(r, msg("hi", user="FRIEND")) == "read:hi"
    paid = rules(who={"bits_min": 100, "paid": ["subscriber"]})
    assert verdict(paid, msg("cheer50 hi", "subscriber", bits=50, kind="paid")) == "refuse:bits_below_min"
    assert verdict(paid, msg("cheer100 hi", bits=100, kind="paid")) == "refuse:not_allowed"
    assert verdict(paid, msg("cheer100 hi", "subscriber", bits=100, kind="paid")) == "read:cheer100 hi"
    assert verdict(paid, msg("$5 superchat", kind="paid")) == "refuse:not_allowed"  # no bits: no minimum
    notices = rules(who={"notices": ["raid"]})
    assert verdict(notices, msg("Ann subscribed", kind="sub")) == "refuse:notice_not_read"
    assert verdict(notices, msg("42 raiders", kind="raid")) == "read:42 raiders"
    skip = rules(first_time="skip")
    assert verdict(skip, msg("first time here", first_msg=True)) == "refuse:first_time"


def test_rewards_table() -> None:
    r = rules(
        rewards=[{"id": "robot", "voice": "tiny2", "priority": "message"}, {"id": "quiet", "read": False}]
    )
    v = decide(msg("beep boop", reward_id="robot"), r)
    assert isinstance(v, Read) and (v.voice, v.priority, v.category) == ("tiny2", "message", "reward")
    assert verdict(r, msg("shh", reward_id="quiet")) == "refuse:reward_not_read"
    assert verdict(r, msg("other", reward_id="hydrate")) == "refuse:reward_not_read"
    star = rules(rewards=[{"id": "*", "priority": "important"}])
    v = decide(msg("any", reward_id="hydrate"), star)
    assert isinstance(v, Read) and v.priority == "important"


def test_commands() -> None:
    r = rules()
    assert verdict(r, msg("!voice tiny2")) == "command:voice:tiny2"
    assert verdict(r, msg("!voice RESET")) == "command:voice_reset"
    assert verdict(r, msg("!tts cancel")) == "command:cancel"
    assert verdict(r, msg("!ttsban @troll")) == "command:ban:troll"
    v = decide(msg("!skip"), r)
    assert isinstance(v, Command) and v.moderator_only
    assert verdict(r, msg("!tts cancel the stream")) == "read:cancel the stream"
    assert verdict(rules(commands=False), msg("!skip")) == "refuse:ignored_prefix"


def test_approval() -> None:
    assert verdict(rules(approval="all"), msg("hi")) == "read:hi:hold=all"
    assert verdict(rules(approval="first_time"), msg("hi")) == "read:hi"
    assert verdict(rules(approval="first_time"), msg("hi", first_msg=True)) == "read:hi:hold=first_time"
    assert verdict(rules(approval="paid"), msg("cheer1 x", bits=1, kind="paid")) == "read:cheer1 x:hold=paid"


def test_voice_segments() -> None:
    known = ["joe", "tiny2"]
    assert voice_segments("(joe) hello there (Tiny2) and me", known) == [
        ("joe", "hello there"),
        ("tiny2", "and me"),
    ]
    assert voice_segments("hi (nobody) there", known) == [
        (None, "hi (nobody) there")
    ]  # unknown tags are text
    assert voice_segments("before (joe) after", known) == [(None, "before"), ("joe", "after")]
    assert voice_segments("(joe)", known) == [(None, "(joe)")]


@pytest.mark.parametrize(
    ("chat", "key"),
    [
        ({"mode": "commands"}, "chat.mode"),
        ({"command_prefixes": ["! tts"]}, "chat.command_prefixes[0]"),
        ({"who": {"chat": ["king"]}}, "chat.who.chat"),
        ({"who": {"bits_min": 0}}, "chat.who.bits_min"),
        ({"who": {"colour": 1}}, "chat.who.colour"),
        ({"rewards": [{"voice": "x"}]}, "chat.rewards[0].id"),
        ({"rewards": [{"id": "a", "priority": "urgent"}]}, "chat.rewards[0].priority"),
        ({"approval": "some"}, "chat.approval"),
        ({"approval_timeout_s": 0}, "chat.approval_timeout_s"),
        ({"first_time": "hold"}, "chat.first_time"),
        ({"voice_tags": "yes"}, "chat.voice_tags"),
    ],
)
def test_bad_values_name_the_key(chat: dict[str, Any], key: str, tmp_path: Path) -> None:
    f = tmp_path / "ishowtts.toml"
    f.write_text("")
    with pytest.raises(ConfigError) as e:
        config.parse({"chat": chat}, f)
    assert str(e.value).startswith(f"{f}: {key}"), str(e.value)


def test_sticky_voices_survive_a_reopen(tmp_path: Path) -> None:
    s = VoiceStore.in_dir(tmp_path)
    s.set("twitch", "Ann", "tiny2")
    s.close()
    s = VoiceStore.in_dir(tmp_path)
    assert s.get("Twitch", "ann") == "tiny2" and s.get("youtube", "ann") is None
    s.set("twitch", "ann", None)
    assert s.get("twitch", "ann") is None
