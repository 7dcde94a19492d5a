"""A job's turn (ishowttsd/daemon/turn.py): cancelled, stale, and a chat line's announce."""

from __future__ import annotations

from typing import Any

from ishowttsd.daemon.turn import Turn
from ishowttsd.events import Cancelled, Dropped
from ishowttsd.job import Announce, ChatOrigin, Job

SAYS = Announce("{user} says: {text}", "Cool Cat")


def chat_job(text: str, user: str | None = "cool_cat", **kw: Any) -> Job:
    return Job(id="j", text=text, source="chat", origin=ChatOrigin(user=user), announce=SAYS, **kw)


def test_the_announce_goes_with_the_first_voice_tag_segment() -> None:
    job = chat_job("hi there", segments=(("joe", "hi"), (None, "there")))
    assert Turn().at_turn(job) is None
    assert job.segments == (("joe", "Cool Cat says: hi"), (None, "there"))
    assert job.text == "Cool Cat says: hi there"


def test_a_say_job_is_not_announced_and_does_not_change_who_spoke_last() -> None:
    turn = Turn()
    assert turn.at_turn(chat_job("one")) is None
    say = Job(id="s", text="from the API", announce=SAYS)
    assert turn.at_turn(say) is None and say.text == "from the API"
    again = chat_job("two")
    assert turn.at_turn(again) is None and again.text == "two"  # the same user spoke last


def test_cancelled_and_stale_end_the_job_before_it_is_spoken() -> None:
    now = [100.0]
    turn = Turn(lambda: now[0])
    cancelled = chat_job("bye")
    cancelled.cancel.cancel("skipped")
    end = turn.at_turn(cancelled)
    assert isinstance(end, Cancelled) and end.reason == "skipped"
    stale = chat_job("late", expires_at=99.0)
    end = turn.at_turn(stale)
    assert isinstance(end, Dropped) and end.reason == "stale" and stale.text == "late"
    assert turn.last_speaker is None  # neither was spoken
