"""The whole [chat] pipeline: order of steps, limits that drop with a reason, announce, reload."""

from __future__ import annotations

from typing import Any

import pytest

from ishowttsd import config
from ishowttsd.chat.pipeline import Accept, Drop, Pipeline
from ishowttsd.chat.settings import ChatSettings, parse_chat
from ishowttsd.confread import ConfigError, Table
from ishowttsd.daemon.turn import Turn
from ishowttsd.events import Dropped
from ishowttsd.job import ChatOrigin, Job
from ishowttsd.protocol import ChatMessage

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, s: float) -> None:
        self.wall += s
        self.mono += s


def chat(text: str, user: str = "viewer", **kw: Any) -> ChatMessage:
    return ChatMessage(text=text, user=user, channel=kw.pop("channel", "#stream"), **kw)


def make(clock: FakeClock | None = None, **chat_keys: Any) -> Pipeline:
    return Pipeline(parse_chat(Table(chat_keys, "chat", None)), clock=clock or FakeClock())


def accept(d: Accept | Drop) -> Accept:
    assert isinstance(d, Accept), d
    return d


def queued(d: Accept, mono: float) -> Job:
    """The job the admission makes of ``d``: a monotonic deadline ``ttl_s`` after ``mono``."""
    expires_at = None if d.ttl_s is None else mono + d.ttl_s
    return Job(id="j", text=d.text, priority=d.priority, source="chat", origin=d.origin, announce=d.announce,
               expires_at=expires_at)  # fmt: skip


def spoken(p: Pipeline, turn: Turn, text: str, origin: ChatOrigin | None) -> str:
    """What ``turn`` speaks of a line with ``origin``: the pipeline's announce added, or not."""
    job = Job(id="j", text=text, source="chat", origin=origin, announce=p.announce(origin))
    assert turn.at_turn(job) is None
    return job.text


def drop(d: Accept | Drop, reason: str) -> Drop:
    assert isinstance(d, Drop), d
    assert d.reason == reason, d
    assert d.detail
    return d


def test_defaults_clean_a_real_spam_line() -> None:
    p = make()
    d = accept(
        p.process(
            chat(
                "Kappa OMG loooooool LUL LUL LUL LUL check https://clips.twitch.tv/Abc-123 !!!!!!!!",
                emotes=((0, 4),),
            )
        )
    )
    assert d.text == "OMG lool LUL LUL check link !!!"
    assert {n.step for n in d.notes} == {"emotes", "urls", "repeats"}
    assert d.priority == "text" and d.expires_at == T0 + 120
    assert p.counters["accepted"] == 1 and p.counters["replaced.urls"] == 1


def test_priority_by_kind_and_mapping() -> None:
    p = make(priorities={"sub": "message"})
    assert accept(p.process(chat("thanks for the bits", kind="paid"))).priority == "important"
    assert accept(p.process(chat("mod here", kind="mod"))).priority == "message"
    assert accept(p.process(chat("I subbed", kind="sub"))).priority == "message"
    assert accept(p.process(chat("hello", kind="raid"))).priority == "text"


def test_ignore_list_is_casefolded() -> None:
    p = make(ignore_users=["Nightbot"])
    drop(p.process(chat("Follow the rules!", user="NIGHTBOT")), "ignored")
    accept(p.process(chat("hi", user="nightbotfan")))


def test_blocklist_actions_in_a_pipeline() -> None:
    p = make(
        blocklist=[
            {"words": ["slur"], "action": "drop"},
            {"words": ["heck"], "action": "mask"},
            {"words": ["darn"], "action": "replace", "replacement": "dang"},
        ]
    )
    assert accept(p.process(chat("oh HECK, darn it"))).text == "oh ⁎⁎⁎⁎, dang it"
    d = drop(p.process(chat("you s̸l̸u̸r̸ and heck")), "blocked")
    assert "slur" not in d.text and "heck" not in d.text  # the event shows it masked
    assert p.counters["dropped.blocked"] == 1


def test_replacements_in_order_then_lexicon() -> None:
    p = make(
        replace=[
            {"pattern": r"\bu\b", "replacement": "you"},
            {"pattern": r"you you", "replacement": "you"},
            {"pattern": r"(\d+)k\b", "replacement": r"\1 thousand"},
        ],
        lexicon={"GG": "good game", "pog": "pogg"},
    )
    d = accept(p.process(chat("u u got 5k viewers gg POG")))
    assert d.text == "you got 5 thousand viewers good game pogg"
    assert [n.step for n in d.notes] == ["replace", "replace", "replace", "lexicon"]


def test_hostile_replace_pattern_times_out_instead_of_stalling() -> None:
    p = make(
        replace=[{"pattern": r"(a|aa)+$", "replacement": "x"}],
        max_repeat_chars=0,
        stretched_words=False,
        max_chars=0,
    )
    d = accept(p.process(chat("a" * 40 + "!")))
    assert any(n.step == "replace_timeout" for n in d.notes)


def test_empty_after_filters() -> None:
    p = make()
    drop(p.process(chat("Kappa", emotes=((0, 4),))), "empty")
    drop(make(urls="remove").process(chat("https://example.com")), "empty")
    drop(p.process(chat("\u200b\u200d \u0301\x07")), "empty")  # format, marks, controls: nothing to say
    assert accept(p.process(chat("🔥🔥🔥"))).text == "🔥🔥🔥"  # emoji: the engine decides what to say


def test_duplicates_per_channel_within_window() -> None:
    clock = FakeClock()
    p = make(clock, duplicate_window_s=30)
    accept(p.process(chat("First!", user="a")))
    drop(p.process(chat("first", user="b")), "duplicate")
    drop(p.process(chat("FIRST!!!", user="c")), "duplicate")
    drop(p.process(chat("Fírst", user="c2")), "duplicate")
    accept(p.process(chat("first", user="d", channel="#other")))  # another channel
    clock.advance(31)
    accept(p.process(chat("first", user="e")))
    # paid messages are never dropped as duplicates
    accept(p.process(chat("first", user="f", kind="paid")))


def test_cooldown_drops_with_reason() -> None:
    clock = FakeClock()
    p = make(clock, user_cooldown_s=10, duplicate_window_s=0)
    accept(p.process(chat("one", user="Spammer")))
    d = drop(p.process(chat("two", user="spammer")), "cooldown")
    assert "spammer" in d.detail.lower() and "s" in d.detail
    accept(p.process(chat("hi", user="other")))
    clock.advance(10.5)
    accept(p.process(chat("three", user="spammer")))
    accept(p.process(chat("tip", user="spammer", kind="paid")))  # paid is never rate limited


def test_global_rate_limit_sliding_window() -> None:
    clock = FakeClock()
    p = make(clock, rate_limit_messages=3, rate_limit_window_s=10)
    for i in range(3):
        accept(p.process(chat(f"msg {i}", user=f"u{i}")))
        clock.advance(1)
    drop(p.process(chat("msg 3", user="u3")), "rate_limited")
    accept(p.process(chat("mod says hi", user="m", kind="mod")))
    clock.advance(7.5)  # the first one left the window
    accept(p.process(chat("msg 4", user="u4")))
    drop(p.process(chat("msg 5", user="u5")), "rate_limited")
    assert p.counters["dropped.rate_limited"] == 2


def test_dropped_lines_do_not_use_up_limits() -> None:
    clock = FakeClock()
    p = make(clock, rate_limit_messages=2, user_cooldown_s=5)
    accept(p.process(chat("a", user="x")))
    drop(p.process(chat("a", user="y")), "duplicate")
    drop(p.process(chat("b", user="x")), "cooldown")
    accept(p.process(chat("c", user="y")))  # the drops did not count towards the rate


def test_wall_clock_step_does_not_make_the_queue_stale() -> None:
    clock = FakeClock()
    p = make(clock, stale_after_s=60)
    d = accept(p.process(chat("hello")))
    job = queued(d, clock.monotonic())
    clock.wall += 86400 * 200  # NTP fixes a board that booted in the past
    assert Turn(clock.monotonic).at_turn(job) is None and job.text == "hello"


def test_stale_at_intake_and_at_turn() -> None:
    clock = FakeClock()
    p = make(clock, stale_after_s=60, stale_after_message_s=300)
    drop(p.process(chat("old line", ts=T0 - 61)), "stale")
    d = accept(p.process(chat("recent", ts=T0 - 30)))
    assert d.expires_at == T0 + 30
    assert accept(p.process(chat("future ts", ts=T0 + 999))).expires_at == T0 + 60  # skewed bot clock
    m = accept(p.process(chat("mod line", kind="mod")))
    paid = accept(p.process(chat("paid line", kind="paid")))
    assert m.expires_at == T0 + 300 and paid.expires_at is None
    assert d.ttl_s == 30 and paid.ttl_s is None
    turn = Turn(clock.monotonic)
    line, again, paid_job = (
        queued(d, clock.monotonic()),
        queued(d, clock.monotonic()),
        queued(paid, clock.monotonic()),
    )
    clock.advance(29)
    assert turn.at_turn(line) is None and line.text == "recent"
    clock.advance(2)
    end = turn.at_turn(again)
    assert isinstance(end, Dropped) and end.reason == "stale"
    # The intake's drop; the turn's is counted from its ``dropped`` event (daemon/report.py).
    assert p.counters["dropped.stale"] == 1
    assert turn.at_turn(paid_job) is None and paid_job.text == "paid line"
    clock.advance(10_000)
    assert turn.at_turn(paid_job) is None and paid_job.text == "paid line"


def test_announce_and_skip_same_user() -> None:
    p, turn = make(announce="{user} says: {text}"), Turn()
    assert spoken(p, turn, "hi", ChatOrigin(user="Cool_Cat_99")) == "Cool Cat 99 says: hi"
    assert spoken(p, turn, "again", ChatOrigin(user="cool_cat_99")) == "again"
    assert spoken(p, turn, "me", ChatOrigin(user="bob")) == "bob says: me"
    assert spoken(p, turn, "no user", None) == "no user"
    q, turn = make(announce="{user} in {channel}: {text}", announce_skip_same_user=False), Turn()
    assert spoken(q, turn, "a", ChatOrigin(user="bob", channel="#x")) == "bob in #x: a"
    assert spoken(q, turn, "b", ChatOrigin(user="bob", channel="#x")) == "bob in #x: b"


def test_blocked_word_in_a_user_name_is_masked_in_the_announce() -> None:
    p = make(announce="{user} says: {text}", blocklist=[{"words": ["heck"], "action": "mask"}])
    assert spoken(p, Turn(), "hi", ChatOrigin(user="heck_lord")) == "⁎⁎⁎⁎ lord says: hi"


def test_voice_map_overrides_bot_voice() -> None:
    p = make(voices={"VIPUser": "f5-clone"})
    assert accept(p.process(chat("hi", user="vipuser"))).voice == "f5-clone"
    assert accept(p.process(chat("hi2", user="other", voice="joe"))).voice == "joe"
    assert accept(p.process(chat("hi3", user="other2"))).voice is None


def test_truncation_reserves_the_announce() -> None:
    p = make(max_chars=0, max_seconds=5, announce="{user} says: {text}")
    long = "this is a long line " * 20
    d = accept(p.process(chat(long, user="someone")))
    assert any(n.step == "truncated" for n in d.notes)
    assert d.seconds <= 5.0 + 1e-6
    final = spoken(p, Turn(), d.text, d.origin)
    assert final.startswith("someone says: this is")


def test_ten_thousand_char_line_through_everything() -> None:
    p = make(blocklist=[{"words": ["heck"], "action": "mask"}], lexicon={"gg": "good game"})
    line = ("gg heck https://x.com/" + "a" * 50 + " 你好 👩\u200d👩\u200d👧 Z̵A̸L̷G̶O̴ مرحبا ") * 100
    d = accept(p.process(chat(line[:10_000])))
    assert len(d.text) <= 300
    assert d.text.startswith("good game ⁎⁎⁎⁎ link")


def test_mute_from_ban_and_timeout() -> None:
    clock = FakeClock()
    p = make(clock)
    p.mute("Troll", None)
    p.mute("hothead", 60)
    drop(p.process(chat("hi", user="troll")), "banned")
    drop(p.process(chat("hi", user="HotHead")), "banned")
    clock.advance(61)
    accept(p.process(chat("sorry", user="hothead")))
    drop(p.process(chat("still", user="troll")), "banned")


def test_moderator_tokens() -> None:
    token = "s3cret-token-0123456789"
    p = make(moderator_tokens=[token])
    assert p.authorised(token)
    assert not p.authorised(token + "x")
    assert not p.authorised(None)
    assert not p.authorised(123)
    assert not make().authorised("")  # no tokens configured: no bot is authorised


def test_reload_keeps_state() -> None:
    clock = FakeClock()
    p = make(clock, user_cooldown_s=30, announce="{user}: {text}")
    accept(p.process(chat("one", user="a")))
    turn = Turn()  # the worker's: a reload builds a new pipeline, not a new turn
    spoken(p, turn, "one", ChatOrigin(user="a"))
    q = Pipeline(
        parse_chat(Table({"user_cooldown_s": 30, "announce": "{user} said {text}"}, "chat", None)),
        state=p.state,
        clock=clock,
    )
    drop(q.process(chat("two", user="a")), "cooldown")
    drop(q.process(chat("one", user="b")), "duplicate")
    assert spoken(q, turn, "x", ChatOrigin(user="a")) == "x"  # a spoke last, across the reload
    assert q.counters["accepted"] == 1 and q.counters["dropped.cooldown"] == 1


def test_truncation_cannot_uncover_a_blocked_word() -> None:
    p = make(max_chars=4, blocklist=[{"words": ["heck"], "action": "drop"}])
    assert accept(p.process(chat("hecklerish"))).text == "⁎⁎⁎⁎"


def test_off_limits_keep_no_state() -> None:
    p = make(duplicate_window_s=0)
    for i in range(1000):
        accept(p.process(chat("same", user=f"u{i}")))
    assert not p.state.recent and not p.state.last_by_user and not p.state.accepted


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        ({"announce": "{usr}: {text}"}, "chat.announce"),
        ({"announce": "{user} only"}, "chat.announce"),
        ({"blocklist": [{"words": ["x"], "action": "replace"}]}, "chat.blocklist[0].replacement"),
        ({"blocklist": [{"words": ["x"], "action": "hide"}]}, "chat.blocklist[0].action"),
        ({"blocklist": [{"action": "drop"}]}, "chat.blocklist[0].words"),
        ({"replace": [{"pattern": "(unclosed"}]}, "chat.replace[0].pattern"),
        ({"replace": [{"pattern": "a", "replacement": r"\9"}]}, "chat.replace[0].replacement"),
        ({"priorities": {"paid": "urgent"}}, "chat.priorities.paid"),
        ({"urls": "hide"}, "chat.urls"),
        ({"mask_char": "**"}, "chat.mask_char"),
        ({"moderator_tokens": ["short"]}, "chat.moderator_tokens[0]"),
        ({"max_chars": -1}, "chat.max_chars"),
        ({"cooldown": 5}, "chat.cooldown"),
    ],
)
def test_config_errors_name_the_key(keys: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as ei:
        config.parse({"chat": keys}, None)
    assert ei.value.key == where, ei.value


def test_defaults_match_the_dataclass() -> None:
    assert config.parse({}, None).chat == ChatSettings()


def test_uncommitted_lines_do_not_count_against_limits() -> None:
    clock = FakeClock()
    p = make(clock, user_cooldown_s=10, rate_limit_messages=1)
    first = accept(p.process(chat("copy this", user="a"), commit=False))  # e.g. the queue refused it
    second = accept(p.process(chat("copy this", user="a"), commit=False))
    p.commit(second)
    drop(p.process(chat("copy this", user="b")), "duplicate")
    drop(p.process(chat("other", user="a")), "cooldown")
    drop(p.process(chat("other", user="c")), "rate_limited")
    assert first.dup_key == second.dup_key


# -- properties: any input, any settings, a sane outcome -----------------------------------------------

import regex  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ishowttsd.chat.text import estimate_seconds, skeleton  # noqa: E402

_pieces = st.sampled_from(
    ["gg", "heck", "https://x.com/a", "www.y.io", "LUL", " ", "  ", "\n", "\x07", "\ud800", "👩\u200d👩\u200d👧",
     "Z̵A̸", "你好", "مرحبا", "ｆｕｌｌ", "loooool", "!!!!", "1000", "\u200b", "\u0301", "_"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=400), st.lists(_pieces, max_size=60).map("".join)),
    st.lists(st.tuples(st.integers(-2, 60), st.integers(-2, 60)), max_size=4),
    st.integers(0, 120),
    st.floats(0, 10),
)
def test_any_line_gets_a_sane_decision(
    text: str, emotes: list[tuple[int, int]], max_chars: int, secs: float
) -> None:
    p = make(
        max_chars=max_chars,
        max_seconds=secs,
        blocklist=[{"words": ["heck"], "action": "mask"}],
        lexicon={"gg": "good game"},
        announce="{user} says: {text}",
    )
    d = p.process(chat(text, user="someone_1", emotes=tuple(emotes)))
    if isinstance(d, Drop):
        assert d.reason in ("empty",) and d.detail
        return
    d.text.encode("utf-8")  # no lone surrogates reach an engine or the journal
    assert d.text == d.text.strip() and "  " not in d.text and "\x07" not in d.text
    if max_chars:
        assert len(d.text) <= max_chars
    if secs:
        assert d.seconds <= max(secs, estimate_seconds("someone 1 says: ", 14.0) + 1 / 14) + 1e-6
    assert regex.search(r"(?<!\w)heck(?!\w)", skeleton(d.text)[0]) is None
    final = spoken(p, Turn(), d.text, d.origin)
    assert final.endswith(d.text)
