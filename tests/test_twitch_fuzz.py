"""Fuzzing the bridge's line handling with hypothesis: no exception but MalformedLine ever escapes the
parser or the translator, tag values survive escaping exactly, and every message the bridge would
publish is one the daemon's own protocol parser accepts.

``ISHOWTTS_LONG=1`` runs many more examples (the ``long`` marker is off in CI).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ishowttsd.protocol import ChatMessage, encode, parse_ingest
from ishowttsd.twitch.irc import LineBuffer, MalformedLine, Message, parse_line
from ishowttsd.twitch.translate import Translator


def escape_tag_value(value: str) -> str:
    """The inverse of the IRCv3 unescaping that ``parse_line`` does (the fuzzer writes tags with it)."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\:")
        .replace(" ", "\\s")
        .replace("\r", "\\r")
        .replace("\n", "\\n")
    )


LONG = os.environ.get("ISHOWTTS_LONG") == "1"
EXAMPLES = 20000 if LONG else 600
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TWITCH_TAGS = [
    "badge-info", "badges", "bits", "color", "display-name", "emotes", "id", "mod", "subscriber",
    "tmi-sent-ts", "login", "msg-id", "system-msg", "msg-param-cumulative-months", "msg-param-months",
    "msg-param-viewerCount", "target-msg-id", "ban-duration", "room-id", "user-type",
]  # fmt: skip
COMMANDS = ["PRIVMSG", "USERNOTICE", "CLEARMSG", "CLEARCHAT", "PING", "NOTICE", "ROOMSTATE", "001", "JOIN"]

# Text that stresses the parser: IRC syntax characters, escapes, control bytes, astral and combining chars.
irc_text = st.text(
    alphabet=st.sampled_from(list(" :;@!#=\\/,-0123456789abcXYZ\x01\x02\x7f\u00e9\u0301\u200d\U0001f600 ")),
    max_size=40,
) | st.text(max_size=30)

tag_value = st.one_of(
    irc_text,
    st.integers(-5, 10**12).map(str),
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=4).map(
        lambda rs: "25:" + ",".join(f"{a}-{b}" for a, b in rs)
    ),
    st.sampled_from(["broadcaster/1", "moderator/1,subscriber/12", "", "1", "0", "resub", "raid"]),
)


@st.composite
def twitch_lines(draw: st.DrawFn) -> bytes:
    tags = draw(st.dictionaries(st.sampled_from(TWITCH_TAGS), tag_value, max_size=8))
    cmd = draw(st.sampled_from(COMMANDS))
    source = draw(st.sampled_from(["", ":tmi.twitch.tv ", ":u!u@u.tmi.twitch.tv ", ":: ", ":!@ "]))
    params = draw(st.lists(st.sampled_from(["#chan", "#", "chan", "*", "#Chan"]), max_size=2))
    trailing = draw(st.none() | irc_text)
    head = ("@" + ";".join(f"{k}={escape_tag_value(v)}" for k, v in tags.items()) + " ") if tags else ""
    parts = [head + source + cmd, *params]
    if trailing is not None:
        parts.append(":" + trailing)
    return " ".join(parts).encode("utf-8", "surrogatepass")


def check_translation(t: Translator, msg: Message) -> None:
    try:
        out = t.translate(msg)
    except MalformedLine:
        return
    if out is None:
        return
    frames = [out.topic, encode(out.body)]
    topic, body = parse_ingest(frames, 10**6)  # the daemon's own parser
    if topic == "chat":
        cm = ChatMessage.from_json(body, 10**6)
        assert cm.platform == "twitch"
        for a, b in cm.emotes:
            assert 0 <= a <= b < len(cm.text)


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_escape_as_anything_but_malformed(raw: bytes) -> None:
    t = Translator()
    for line in LineBuffer().feed(raw + b"\r\n"):
        try:
            msg = parse_line(line)
        except MalformedLine:
            continue
        check_translation(t, msg)


@FUZZ
@given(twitch_lines())
def test_twitch_shaped_lines_translate_to_valid_ingest_messages(raw: bytes) -> None:
    try:
        msg = parse_line(raw)
    except MalformedLine:
        return
    check_translation(Translator(), msg)


@FUZZ
@given(
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True), st.text(max_size=50), max_size=6)
)
def test_tag_values_round_trip_through_escaping(tags: dict[str, str]) -> None:
    # Lone surrogates cannot travel in UTF-8, and a NUL/CR/LF inside a value is escaped by the sender.
    tags = {k: v.encode("utf-8", "replace").decode("utf-8").replace("\x00", "") for k, v in tags.items()}
    raw = "@" + ";".join(f"{k}={escape_tag_value(v)}" for k, v in tags.items()) + " :s PRIVMSG #c :x"
    if not tags:
        raw = raw[1:].lstrip()
    assert dict(parse_line(raw.encode()).tags) == tags


@pytest.mark.parametrize(
    "raw",
    [
        b"@=;=;== :a PRIVMSG #c :x",
        b"@display-name=\\ :a!a@a PRIVMSG #c :\x01ACTION",
        b"@emotes=:-,-:/// CLEARCHAT #c :",
    ],
)
def test_regressions(raw: bytes) -> None:
    try:
        msg = parse_line(raw)
    except MalformedLine:
        return
    check_translation(Translator(), msg)
