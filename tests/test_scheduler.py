from __future__ import annotations

import threading
import time

import pytest

from ishowttsd.daemon.scheduler import Limits, QueueFull, Scheduler
from ishowttsd.job import ChatOrigin, Job


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def job(i: str, prio: str = "text", user: str | None = None, source: str = "chat", text: str = "hi") -> Job:
    return Job(id=i, text=text, priority=prio, origin=ChatOrigin(user=user), source=source)


def test_priority_then_fifo() -> None:
    s = Scheduler(Limits(max_jobs=10))
    for j in (job("t1"), job("m1", "message"), job("t2"), job("i1", "important"), job("m2", "message")):
        s.submit(j)
    order = []
    while (j := s.next(0)) is not None:
        order.append(j.id)
        s.done(j)
    assert order == ["i1", "m1", "m2", "t1", "t2"]


def test_full_queue_drops_oldest_chat_first() -> None:
    s = Scheduler(Limits(max_jobs=3))
    s.submit(job("t1"))
    s.submit(job("m1", "message"))
    s.submit(job("t2"))
    dropped = s.submit(job("i1", "important"))
    assert [d.id for d in dropped] == ["t1"]
    dropped = s.submit(job("t3"))
    assert [d.id for d in dropped] == ["t2"]
    assert [j.id for j in s.queued()] == ["i1", "m1", "t3"]


def test_full_of_messages_refuses_new_message_and_loses_nothing() -> None:
    s = Scheduler(Limits(max_jobs=2))
    s.submit(job("m1", "message"))
    s.submit(job("m2", "message"))
    with pytest.raises(QueueFull):
        s.submit(job("m3", "message"))
    with pytest.raises(QueueFull):
        s.submit(job("t1"))
    assert [j.id for j in s.queued()] == ["m1", "m2"]


def test_audio_seconds_bound() -> None:
    s = Scheduler(Limits(max_jobs=100, max_audio_s=10))
    s.submit(job("a", text="x" * 70))  # 5 s at 14 characters a second
    s.submit(job("b", text="x" * 70))  # 10 s queued
    dropped = s.submit(job("c", text="x" * 70))
    assert [d.id for d in dropped] == ["a"]
    assert sum(j.est_seconds for j in s.queued()) <= 10


def test_per_user_fairness() -> None:
    s = Scheduler(Limits(max_jobs=100, max_per_user=2))
    s.submit(job("a1", user="spammer"))
    s.submit(job("a2", user="spammer"))
    with pytest.raises(QueueFull, match="spammer"):
        s.submit(job("a3", user="spammer"))
    s.submit(job("b1", user="other"))


def test_remove_cancels_current_and_queued() -> None:
    s = Scheduler(Limits())
    s.submit(job("a"))
    s.submit(job("b"))
    cur = s.next(0)
    assert cur is not None and cur.id == "a"
    removed = s.remove(lambda j: True, "cancelled")
    assert {j.id for j in removed} == {"a", "b"}
    assert cur.cancel.cancelled and cur.cancel.reason == "cancelled"
    assert len(s) == 0


def test_pause_blocks_next_until_resume() -> None:
    clock = Clock()
    s = Scheduler(Limits(), clock=clock)
    s.pause()
    s.submit(job("a"))
    assert s.next(0) is None
    got: list[Job | None] = []
    t = threading.Thread(target=lambda: got.append(Scheduler.next(s, 5.0)))
    s._clock = __import__("time").monotonic  # real time for the blocking wait
    t.start()
    s.resume()
    t.join(5)
    assert got and got[0] is not None and got[0].id == "a"


def test_closed_scheduler_refuses_and_returns_leftovers() -> None:
    s = Scheduler(Limits())
    s.submit(job("a"))
    assert [j.id for j in s.close()] == ["a"]
    with pytest.raises(QueueFull):
        s.submit(job("b"))


def test_queued_seconds_follow_every_way_in_and_out() -> None:
    s = Scheduler(Limits(max_jobs=3, max_audio_s=1000))
    jobs = [job(f"j{i}", text="x" * (14 * (i + 1))) for i in range(5)]  # 1 s, 2 s, ... 5 s
    for j in jobs[:3]:
        s.submit(j)
    assert abs(s.queued_seconds - 6.0) < 1e-9
    s.submit(jobs[3])  # full: j0 (1 s) makes room
    assert abs(s.queued_seconds - 9.0) < 1e-9
    s.remove(lambda j: j.id == "j2", "cancelled")
    assert abs(s.queued_seconds - 6.0) < 1e-9
    nxt = s.next(0)
    assert nxt is not None
    assert abs(s.queued_seconds - sum(j.est_seconds for j in s.queued())) < 1e-9
    s.close()
    assert s.queued_seconds == 0.0


# -- taking a batch (a batching worker) ----------------------------------------------------------


def test_take_gives_up_to_n_jobs_in_speaking_order_all_in_flight() -> None:
    s = Scheduler(Limits())
    for j in (job("t1"), job("m1", "message"), job("t2"), job("i1", "important"), job("m2", "message")):
        s.submit(j)
    got = s.take(4, 0.0, 0)
    assert [j.id for j in got] == ["i1", "m1", "m2", "t1"]
    assert s.current is got[0]
    assert [j.id for j in s.queued()] == ["t2"]
    assert all(s.in_flight(j) for j in got) and s.busy
    assert {j.id for j in s.find(["m2", "t2", "zz"])} == {"m2", "t2"}  # in flight or queued
    for j in got:
        s.done(j)
    assert not s.busy and s.current is None
    assert [j.id for j in s.take(4, 0.0, 0)] == ["t2"]  # taken by the next batch


def test_take_waits_the_window_for_company_and_no_longer() -> None:
    s = Scheduler(Limits())
    s.submit(job("a"))
    threading.Timer(0.1, lambda: s.submit(job("b"))).start()
    t0 = time.monotonic()
    got = s.take(2, 1.0, 0)
    assert [j.id for j in got] == ["a", "b"]
    assert time.monotonic() - t0 < 0.9  # back as soon as the batch was full
    for j in got:
        s.done(j)
    s.submit(job("c"))
    t0 = time.monotonic()
    assert [j.id for j in s.take(4, 0.2, 0)] == ["c"]
    assert 0.15 <= time.monotonic() - t0 < 1.0  # a lone job waited the window, then went alone


def test_turn_lets_an_outranking_job_go_before_a_batch_job() -> None:
    s = Scheduler(Limits())
    for i in "abc":
        s.submit(job(i))
    a, b, c = s.take(3, 0.0, 0)
    s.done(a)
    s.submit(job("late"))  # same priority, later: waits its turn after the batch
    assert s.turn(b) is b and s.current is b
    s.done(b)
    urgent = job("urgent", "important")
    s.submit(urgent)
    s.pause()
    assert s.turn(c) is c  # nothing is handed out while paused
    s.resume()
    assert s.turn(c) is urgent and s.current is urgent and s.in_flight(urgent)
    assert [j.id for j in s.queued()] == ["late"]
    s.done(urgent)
    assert s.turn(c) is c


def test_remove_stop_and_close_reach_the_jobs_in_flight() -> None:
    s = Scheduler(Limits())
    for i in "abcd":
        s.submit(job(i, user=i))
    a, b, c = s.take(3, 0.0, 0)
    d = s.queued()[0]
    # moderation (delete/ban) cancels a batch's other job as it would a queued one
    removed = s.remove(lambda j: j.user in ("b", "d"), "banned")
    assert {j.id for j in removed} == {"b", "d"}
    assert b.cancel.reason == "banned" and s.in_flight(b) and not s.in_flight(d)
    assert not a.cancel.cancelled and not c.cancel.cancelled
    # stop stops the job being spoken, not the others
    assert s.stop_current("stopped", "c") is None
    assert s.stop_current("stopped") is a and a.cancel.reason == "stopped" and not c.cancel.cancelled
    # shutdown: the speaking job may finish, the others are cancelled as if still queued
    s.done(a)
    s.turn(c)
    s.submit(job("e"))
    assert [j.id for j in s.close()] == ["e"]
    assert not c.cancel.cancelled  # current: drained
    s.done(b)
    s.done(c)
    assert not s.busy


def test_close_cancels_the_batch_jobs_not_yet_spoken() -> None:
    s = Scheduler(Limits())
    for i in "abc":
        s.submit(job(i))
    a, b, c = s.take(3, 0.0, 0)
    assert s.close() == []
    assert not a.cancel.cancelled
    assert b.cancel.reason == "shutdown" and c.cancel.reason == "shutdown"
    assert s.busy
    assert s.take(3, 0.0, 0) == []  # closed: nothing more
