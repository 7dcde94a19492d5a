"""Outbound events: every class round-trips through the wire's JSON, and every code the daemon can
send is in the code tables and documented (docs/PROTOCOL.md or docs/CHAT.md)."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ishowttsd import events, protocol
from ishowttsd.chat.pipeline import DROP_REASONS as PIPELINE_DROP_REASONS
from ishowttsd.events import Event
from ishowttsd.job import ChatOrigin, Job

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ishowttsd"
DOCS = (REPO / "docs/PROTOCOL.md").read_text() + (REPO / "docs/CHAT.md").read_text()

SAMPLES: dict[type, Any] = {
    str: "x y",
    int: 3,
    float: 1.25,
    bool: True,
}


def _sample(cls: type[Event]) -> Event:
    """An instance with every field set to a value other than its default."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        t = str(f.type)
        if f.metadata.get("flat"):
            kwargs[f.name] = {"extra_key": 7, "nested": {"a": [1, 2]}}
        elif "tuple" in t:
            kwargs[f.name] = ({"step": "urls", "count": 2},) if "Mapping" in t else ("j1", "j2")
        elif "Mapping" in t:
            kwargs[f.name] = {"k": 1}
        elif t.startswith("int"):
            kwargs[f.name] = 3
        elif t.startswith("float"):
            kwargs[f.name] = 1.25
        elif t.startswith("bool"):
            kwargs[f.name] = True
        else:
            kwargs[f.name] = "x y"
    return cls(**kwargs)


def test_every_event_class_is_found() -> None:
    names = {c.__name__ for c in events.event_classes()}
    assert {"Queued", "Started", "Done", "Dropped", "Cancelled", "JobError", "Error", "Status"} <= names
    assert "Event" not in names and "JobEvent" not in names
    assert set(events.__all__) >= names


@pytest.mark.parametrize("cls", events.event_classes(), ids=lambda c: c.__name__)
def test_event_round_trips_through_json(cls: type[Event]) -> None:
    ev = _sample(cls)
    wire = json.loads(protocol.encode(ev.to_json()))
    assert wire["event"] == cls.name
    assert cls.from_json(wire) == ev
    for f in dataclasses.fields(cls):
        if not f.metadata.get("flat"):
            assert f.name in wire, f.name


@pytest.mark.parametrize("cls", events.event_classes(), ids=lambda c: c.__name__)
def test_optional_fields_are_left_out_when_unset(cls: type[Event]) -> None:
    wire = cls().to_json()
    for f in dataclasses.fields(cls):
        if f.metadata.get("omit"):
            assert f.name not in wire


def test_job_events_carry_the_job_and_its_chat_origin() -> None:
    origin = ChatOrigin(user="Ünï", channel="#c", platform="twitch", kind="paid", msg_id="m1")
    job = Job(id="j", text="hi", priority="important", voice="joe", source="chat", origin=origin, req="r7")
    wire = events.Done(audio_s=1.0, synth_s=0.5, rtf=0.5, ttfa_s=0.1, chunks=2).for_job(job).to_json()
    assert wire == {
        "event": "done",
        "job": "j",
        "priority": "important",
        "source": "chat",
        "user": "Ünï",
        "channel": "#c",
        "platform": "twitch",
        "kind": "paid",
        "voice": "joe",
        "msg_id": "m1",
        "audio_s": 1.0,
        "synth_s": 0.5,
        "rtf": 0.5,
        "ttfa_s": 0.1,
        "chunks": 2,
        "req": "r7",
    }
    assert list(wire)[-1] == "req"
    assert events.Done.terminal and not events.Queued.terminal


def test_reading_back_the_wrong_event_is_refused() -> None:
    with pytest.raises(ValueError):
        events.Queued.from_json({"event": "done"})
    with pytest.raises(ValueError):
        events.Pong.from_json({"event": "pong", "surprise": 1})


# -- the codes ------------------------------------------------------------------------------------------------


def _codes_in_source() -> tuple[set[str], set[str]]:
    """(error codes, drop reasons) written as literals where the daemon raises or sends them."""
    errors: set[str] = set()
    drops: set[str] = set(PIPELINE_DROP_REASONS)
    second_arg = {"EngineError", "JournalError", "SinkError"}
    for path in PACKAGE.rglob("*.py"):
        if "bench" in path.parts or "twitch" in path.parts:
            continue  # separate programs with their own exit codes, not daemon events
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            lits = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            kw = {
                k.arg: k.value.value
                for k in node.keywords
                if isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)
            }
            if (
                name == "ProtocolError"
                and node.args
                and lits
                and lits[0] == getattr(node.args[0], "value", None)
            ):
                errors.add(lits[0])
            elif (
                (name in second_arg or name == "__init__")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
            ):
                errors.add(str(node.args[1].value))
            elif name == "QueueFull" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                drops.add(str(node.args[1].value))
            elif name in ("Error", "JobError") and "code" in kw:
                errors.add(kw["code"])
            elif name == "Dropped" and "reason" in kw:
                drops.add(kw["reason"])
    # the defaults of the error classes (``code="journal_error"`` and the like); the queue's is a drop
    for path in PACKAGE.rglob("*.py"):
        for m in re.finditer(r'(message|reason): str, code: str = "([a-z_]+)"', path.read_text()):
            (errors if m.group(1) == "message" else drops).add(m.group(2))
    return errors, drops


def test_every_code_the_daemon_sends_is_in_the_tables() -> None:
    errors, drops = _codes_in_source()
    assert {"bad_json", "unknown_topic", "unsupported_topic", "not_ready", "journal_full"} <= errors
    assert {"queue_full", "user_limit", "text_too_long", "stale", "blocked"} <= drops
    assert errors <= set(events.ERROR_CODES), errors - set(events.ERROR_CODES)
    assert drops <= set(events.DROP_REASONS), drops - set(events.DROP_REASONS)


@pytest.mark.parametrize(
    "code",
    sorted({*events.ERROR_CODES, *events.DROP_REASONS, *events.CANCEL_REASONS}),
)
def test_every_code_is_documented(code: str) -> None:
    assert f"`{code}`" in DOCS, f"`{code}` is in no document (docs/PROTOCOL.md or docs/CHAT.md)"
