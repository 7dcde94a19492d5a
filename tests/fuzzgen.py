"""Hypothesis strategies and a corpus of hostile messages for the control and ingest sockets.

About one generated control body in eight is big: from just over the default
``[zmq] max_message_bytes`` (64 KiB) to 4 MiB, each answered ``too_large`` unread. Frames over the
control socket's transport bound (8 MiB) are tested on their own (libzmq drops them with the
connection, unanswered).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from ishowttsd.protocol import MODERATION_TOPICS, OPS, PRIORITIES

NASTY = [
    "\x00",
    "\ud800",  # lone surrogates: valid JSON escapes, not Unicode
    "\udfff",
    "\u202e",  # right-to-left override
    "\u200d",  # zero-width joiner
    "\u200b",  # zero-width space (not whitespace to str.strip)
    "\ufeff",
    "\x1b[31m",
    "\x7f",
    "\x07",
    "\r\n",
    "\u0301\u0301\u0301",  # combining marks (zalgo)
    "👩\u200d👩\u200d👧",
    "مرحبا",
    "你好",
    "%s%n%x",
    "$(reboot)",
    "`id`; rm -rf /",
    "../../etc/passwd",
    "\\",
    '"',
]

chars = st.one_of(
    st.characters(),
    st.characters(max_codepoint=0x7F),
    st.sampled_from([c for c in NASTY if len(c) == 1]),
)
pieces = st.one_of(st.text(chars, max_size=8), st.sampled_from(NASTY))
text = st.text(chars, max_size=60) | st.lists(pieces, max_size=8).map("".join)
short_text = st.text(chars, max_size=12)

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(short_text, c, max_size=3),
    max_leaves=8,
)


def _nested(depth: int) -> Any:
    obj: Any = "deep"
    for i in range(depth):
        obj = [obj] if i % 2 else {"k": obj}
    return obj


json_values_deep = st.integers(min_value=20, max_value=200).map(_nested)
anything = st.one_of(json_values, json_values, json_values, json_values_deep)

ops = st.one_of(st.sampled_from(OPS), st.sampled_from(OPS), st.sampled_from(OPS), text, anything)
ops_req = st.one_of(st.sampled_from([o for o in OPS if o != "pause"]), text, json_values)
"""A REQ waits for its one reply; a paused daemon answers ``say`` with ``wait`` only on resume."""

say_text = st.one_of(text, text, anything, st.integers(0, 2000).map(lambda n: "a" * n))
voices = st.one_of(st.sampled_from(["joe", "nobody", "", "JOE"]), anything)
priorities = st.one_of(st.sampled_from(PRIORITIES), anything)
ids = st.one_of(st.none(), short_text, st.integers(), st.sampled_from(["fuzz-1", "fuzz-2"]), anything)


def with_unknown_keys(obj: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Add keys the protocol does not know (ignored, forward compatible) — never replacing known ones."""
    return st.dictionaries(short_text, anything, max_size=2).map(lambda extra: {**extra, **obj})


def requests(op: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"op": op},
        optional={
            "text": say_text,
            "voice": voices,
            "priority": priorities,
            "id": ids,
            "req": ids,
            "pcm": st.one_of(st.booleans(), anything),
            "wait": st.one_of(st.booleans(), anything),
        },
    ).flatmap(with_unknown_keys) | st.fixed_dictionaries({}, optional={"text": say_text, "id": ids})


plausible_says = st.fixed_dictionaries(
    {"op": st.just("say"), "text": text},
    optional={"priority": st.sampled_from(PRIORITIES), "voice": st.just("joe"), "req": short_text},
)
"""Well-formed requests with hostile text: these reach the engine (espeak-ng runs in-process)."""


def _encode(obj: Any, how: str) -> bytes:
    if how == "ascii":
        return json.dumps(obj).encode()
    s = json.dumps(obj, ensure_ascii=False)
    return s.encode("utf-16" if how == "utf16" else "utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, body: st.SearchStrategy[bytes]) -> bytes:
    b = draw(body)
    how = draw(st.sampled_from(["none", "none", "none", "truncate", "insert", "flip", "dup"]))
    if how == "none" or not b:
        return b
    i = draw(st.integers(0, len(b) - 1))
    if how == "truncate":
        return b[:i]
    if how == "insert":
        return b[:i] + bytes([draw(st.integers(0, 255))]) + b[i:]
    if how == "flip":
        return b[:i] + bytes([b[i] ^ (1 << draw(st.integers(0, 7)))]) + b[i + 1 :]
    j = draw(st.integers(i, len(b)))
    return b[:j] + b[i:j] + b[j:]


def encoded(objs: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.builds(_encode, objs, st.sampled_from(["ascii", "utf8", "utf8", "utf16"]))


BIG_MIN = (64 << 10) + 1
BIG_MAX = 4 << 20
"""Big control bodies: over the default max_message_bytes, up to 4 MiB (under the 8 MiB bound)."""


def big_body(n: int, how: str) -> bytes:
    """An ``n``-byte body: a say with a huge text, a padded ping, raw bytes, or deep nesting."""
    if how == "raw":
        return bytes(range(256)) * (n // 256) + b"\xff" * (n % 256)
    if how == "nested":
        return b"[" * (n // 2) + b"]" * (n - n // 2)
    head, tail = (b'{"op": "say", "text": "', b'"}') if how == "say" else (b'{"op": "ping", "pad": "', b'"}')
    return head + b"a" * (n - len(head) - len(tail)) + tail


big_bodies = st.builds(
    big_body,
    st.integers(BIG_MIN, BIG_MAX) | st.sampled_from([BIG_MIN, 1 << 20, BIG_MAX]),
    st.sampled_from(["say", "ping", "raw", "nested"]),
)


def bodies(op: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        big_bodies,
        encoded(plausible_says),
        encoded(plausible_says),
        mutated(encoded(requests(op))),
        mutated(encoded(requests(op))),
        mutated(encoded(requests(op))),
        encoded(anything),
        st.binary(max_size=300),
    )


extra_frames = st.lists(st.binary(max_size=40), min_size=1, max_size=3)


@st.composite
def control_frames(draw: st.DrawFn) -> list[bytes]:
    """What a DEALER can send: a body, a REQ-style empty delimiter, extra frames."""
    body = draw(bodies(ops))
    shape = draw(st.sampled_from(["plain"] * 6 + ["delim", "extra", "delim_extra", "two_delims", "raw"]))
    if shape == "plain":
        return [body]
    if shape == "delim":
        return [b"", body]
    if shape == "extra":
        return [body, *draw(extra_frames)]
    if shape == "delim_extra":
        return [b"", body, *draw(extra_frames)]
    if shape == "two_delims":
        return [b"", b"", body]
    return draw(st.lists(st.binary(max_size=60), min_size=1, max_size=4))


@st.composite
def req_frames(draw: st.DrawFn) -> list[bytes]:
    """What a REQ can send (it adds the empty delimiter itself)."""
    body = draw(bodies(ops_req))
    shape = draw(st.sampled_from(["plain"] * 6 + ["extra", "leading_empty"]))
    if shape == "plain":
        return [body]
    if shape == "extra":
        return [body, *draw(extra_frames)]
    return [b"", body]


# -- ingest --------------------------------------------------------------------------------------------

topics = st.one_of(
    st.just(b"chat"),
    st.just(b"chat"),
    st.just(b"chat"),
    st.sampled_from(MODERATION_TOPICS),
    st.sampled_from([b"", b"event", b"CHAT", b"chat\x00", b"pcm", b"chat/x", b"\xff\xfe"]),
    st.binary(max_size=16),
)
kinds = st.one_of(st.sampled_from(["chat", "paid", "mod", "sub", "raid", "", "x" * 200]), anything)
emotes = st.one_of(
    st.lists(st.lists(st.integers(-5, 10**12), max_size=3), max_size=5),
    st.dictionaries(short_text, st.lists(st.one_of(short_text, st.just("0-4"), st.just("9-2")), max_size=3)),
    anything,
)
timestamps = st.one_of(st.floats(), st.integers(-(2**70), 2**70), anything)
chat_bodies = st.fixed_dictionaries(
    {},
    optional={
        "text": say_text,
        "user": ids,
        "channel": ids,
        "platform": ids,
        "kind": kinds,
        "voice": voices,
        "id": ids,
        "ts": timestamps,
        "emotes": emotes,
        "bits": anything,
        "subscriber": anything,
        "badges": anything,
    },
).flatmap(with_unknown_keys)
moderation_bodies = st.fixed_dictionaries(
    {},
    optional={"user": ids, "id": ids, "msg_id": ids, "duration_s": anything, "reason": text, "by": ids},
)


def _encode_float_specials(obj: Any) -> bytes:
    # json.dumps writes NaN/Infinity (not JSON) for them: exactly the kind of input to check.
    return json.dumps(obj).encode()


plausible_chat = st.fixed_dictionaries(
    {"text": text},
    optional={"user": short_text, "kind": kinds, "id": short_text, "emotes": emotes, "voice": voices},
)
"""Well-formed chat with hostile text and fields: these go through the chat pipeline to the engine."""

ingest_bodies = st.one_of(
    mutated(encoded(chat_bodies)),
    mutated(encoded(chat_bodies)),
    st.builds(_encode_float_specials, chat_bodies),
    mutated(encoded(moderation_bodies)),
    encoded(anything),
    st.binary(max_size=200),
)


@st.composite
def ingest_frames(draw: st.DrawFn) -> list[bytes]:
    if draw(st.integers(0, 9)) < 4:
        return [b"chat", draw(encoded(plausible_chat))]
    topic = draw(topics)
    shape = draw(st.sampled_from(["two"] * 6 + ["topic_only", "extra", "many"]))
    if shape == "topic_only":
        return [topic]
    body = draw(ingest_bodies)
    if shape == "two":
        return [topic, body]
    if shape == "extra":
        return [topic, body, *draw(extra_frames)]
    return draw(st.lists(st.binary(max_size=40), min_size=1, max_size=5))


# -- corpus: hand-written cases the generator might take long to find ------------------------------------


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


REQUEST_BODIES: list[bytes] = [
    b"",
    b"\x00",
    b"\x00" * 1000,
    b"{}",
    b"null",
    b'"ping"',
    b"\xef\xbb\xbf" + _j({"op": "ping"}),  # UTF-8 BOM
    json.dumps({"op": "ping"}).encode("utf-16"),
    b'{"op": "ping"\x00}',
    b'{"op": "say", "text": "a\x00b"}',  # raw control character inside a JSON string
    b'{"op": "say", "text": "\xc0\xaf"}',  # overlong UTF-8
    b'{"op": "say", "text": "\xed\xa0\x80"}',  # CESU-8 surrogate
    b'{"op": "say", "text": "a\\ud800b"}',
    b'{"op": "say", "text": "\\udfff"}',
    b'{"op": "say", "text": "\\ude00\\ud83d"}',  # a surrogate pair in the wrong order
    b'{"op": "say", "text": "ok \\ud83d\\ude00 emoji"}',
    b'{"op": "say", "text": "a\\u0000b\\u0001\\u001b[31m\\u007f"}',
    b'{"op": "say", "text": "hi", "priority": 1e999}',
    b'{"op": "say", "text": "hi", "id": 1' + b"0" * 5000 + b"}",  # past Python's int-digits limit
    b'{"op": "say", "text": "hi", "req": 1' + b"0" * 200 + b"}",
    b'{"op": "ping", "op": "say"}',  # duplicate keys: the last wins
    b'{"op": "say", "text": "hi", "voice": ""}',
    b'{"op": "say", "text": "hi", "voice": null, "priority": null, "id": null}',
    b'{"op": "say", "text": "\\u200b\\u3000"}',
    b'{"op": "say", "text": "....!!!???"}',
    _j({"op": "say", "text": "\u202eevil reversed\u202c text"}),
    _j({"op": "say", "text": "Z\u0351\u0363\u0300\u0301\u0352\u0357a\u0300\u0301l\u0301\u0301go " * 10}),
    _j({"op": "say", "text": "👩‍👩‍👧" * 90}),
    _j({"op": "say", "text": "x" * 301}),
    _j({"op": "say", "text": "pcm please", "pcm": True}),
    _j({"op": "say", "text": "wait ignored on a dealer", "wait": True}),
    _j({"op": "say", "text": "$(touch /tmp/ishowtts-pwned) `touch /tmp/ishowtts-pwned`"}),
    _j({"op": "cancel", "id": "no-such-job"}),
    _j({"op": "stop", "id": 12345}),
    _j({"op": "status", **{f"k{i}": i for i in range(3000)}}),
    _j({"op": "ping", "x": _nested(33)}),
    b'{"op": "ping", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"[" * 30000,
    b'{"op": "ping", "x": "' + b"\\" * 1001 + b'"}',
    b'{"op": "ping", "x": ' + b"1" * 50000 + b"}",
]

REQUEST_CORPUS: list[list[bytes]] = [
    *[[b] for b in REQUEST_BODIES],
    [big_body(65536, "say")],  # exactly at the default limit: read and parsed
    [big_body(65537, "say")],
    [big_body(BIG_MAX, "ping")],
    [b"", big_body(1 << 20, "say")],
    [_j({"op": "ping"}), b"x" * 65536],  # over the limit only with its extra frame
    [b""],
    [b"", b""],
    [b"", b"", _j({"op": "ping"})],
    [_j({"op": "ping"}), b"x", b"y"],
    [b"", _j({"op": "say", "text": "REQ-style through a DEALER", "wait": True})],
    [b"", _j({"op": "status"}), b"trailing"],
]

INGEST_CORPUS: list[list[bytes]] = [
    [b"chat"],
    [b"chat", b""],
    [b"chat", b"{}"],
    [b"chat", b"\xff"],
    [b"chat", _j({"text": None})],
    [b"chat", _j({"text": "hi", "ts": 1e308 * 10})],  # json.dumps writes Infinity
    [b"chat", b'{"text": "hi", "ts": 1e999}'],
    [b"chat", b'{"text": "hi", "ts": NaN}'],
    [b"chat", b'{"text": "a\\ud800"}'],
    [b"chat", _j({"text": "emotes", "emotes": {"25": ["0-4", "x-y", "9-2", "-1-3"]}})],
    [b"chat", _j({"text": "emotes", "emotes": [[0, 10**30], [5], "0-1", None]})],
    [b"chat", _j({"text": "x" * 301, "user": "u"})],
    [b"chat", _j({"text": "kind", "kind": ["paid"]})],
    [b"chat", _j({"text": "user", "user": {"name": "x"}})],
    [b"chat", _j({"text": "hi", "voice": "nobody"})],
    [b"chat", _j({"text": "$(reboot)", "user": "; rm -rf /"})],
    [b"chat", _j({"text": "hi"}), b"extra"],
    [b"chat", _j({"text": "deep", "x": _nested(500)})],
    *[[t] for t in MODERATION_TOPICS],
    *[[t, b"not json"] for t in MODERATION_TOPICS],
    *[[t, _j({"user": None, "id": ["x"], "duration_s": -1})] for t in MODERATION_TOPICS],
    *[[t, _j({"user": "u" * 500, "id": 10**40, "duration_s": 1e300})] for t in MODERATION_TOPICS],
    [b"event", _j({"event": "ready"})],
    [b"", b""],
    [b"\x00\x00"],
]
