"""A job's turn: the last checks just before the worker speaks it, on the worker thread.

Cancelled while it waited? Stale (its monotonic deadline passed: a wall-clock step, such as NTP
fixing a Jetson's clock after boot, must not make the whole queue stale at once)? Then a chat
line gets its announce (:class:`~ishowttsd.job.Announce`, worked out when the line was accepted)
unless the same user spoke last: only now, in speaking order, is that known, so the last speaker
is kept here. A ``say`` job has no announce and does not change who spoke last.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ishowttsd.events import Cancelled, Dropped, JobEvent
from ishowttsd.job import Job


class Turn:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.last_speaker: str | None = None
        """Whose chat line was spoken last (casefolded; None: a line without a user)."""

    def still_wanted(self, job: Job) -> JobEvent | None:
        """Cancelled or stale: the event that ends ``job`` instead of speaking it."""
        if job.cancel.cancelled:
            return Cancelled(reason=job.cancel.reason or "cancelled")
        if job.expires_at is not None and self._monotonic() > job.expires_at:
            return Dropped(reason="stale", text=job.text)
        return None

    def at_turn(self, job: Job) -> JobEvent | None:
        """Just before ``job`` is spoken: :meth:`still_wanted`, then a chat line's text becomes
        the one to speak (its announce added, or not when the same user spoke last)."""
        end = self.still_wanted(job)
        if end is not None or not job.from_chat:
            return end
        user = job.user
        key = user.casefold() if user else None
        same = key is not None and key == self.last_speaker
        self.last_speaker = key
        a = job.announce
        if a is None or (same and a.skip_same_user):
            return None
        if job.segments:  # the announce goes with the first voice-tag segment
            (voice, first), *rest = job.segments
            job.segments = ((voice, a.format(first)), *rest)
            job.text = " ".join(t for _, t in job.segments)
        else:
            job.text = a.format(job.text)
        return None
