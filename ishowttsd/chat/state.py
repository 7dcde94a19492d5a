"""What the chat pipeline remembers between lines: cooldowns, rate window, recent texts, mutes.

Kept apart from :class:`~ishowttsd.chat.pipeline.Pipeline` so a SIGHUP reload builds a new
pipeline from new settings and hands it the same state: a reload does not reset a cooldown
or let a copy-pasta through again. Times are ``time.monotonic()`` seconds; every structure is
pruned as it is used, so a raid of one-time chatters cannot grow it without bound.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque


class ChatState:
    def __init__(self) -> None:
        self.last_by_user: OrderedDict[str, float] = OrderedDict()
        """User -> when their last line was accepted (oldest first)."""
        self.accepted: deque[float] = deque()
        """When recent lines were accepted (for the global rate window)."""
        self.recent: OrderedDict[tuple[str, str], float] = OrderedDict()
        """(channel, normalised text) -> when it was last accepted (oldest first)."""
        self.muted: dict[str, float] = {}
        """User -> until when their lines are dropped (ban: infinity; timeout: its end)."""
        self.counters: Counter[str] = Counter()
        """``accepted``, ``dropped.<reason>``, ``replaced.<step>`` since start (for ``status``)."""

    # -- per-user cooldown -----------------------------------------------------------------------------------
    def cooldown_left(self, user: str, now: float, cooldown: float) -> float:
        while self.last_by_user:
            _, oldest = next(iter(self.last_by_user.items()))
            if now - oldest < cooldown:
                break
            self.last_by_user.popitem(last=False)
        t = self.last_by_user.get(user)
        return 0.0 if t is None else max(0.0, cooldown - (now - t))

    def note_user(self, user: str, now: float) -> None:
        self.last_by_user[user] = now
        self.last_by_user.move_to_end(user)

    # -- global rate -----------------------------------------------------------------------------------------
    def rate_count(self, now: float, window: float) -> int:
        while self.accepted and now - self.accepted[0] >= window:
            self.accepted.popleft()
        return len(self.accepted)

    def note_accept(self, now: float) -> None:
        self.accepted.append(now)

    # -- duplicates ------------------------------------------------------------------------------------------
    def seen_within(self, key: tuple[str, str], now: float, window: float) -> bool:
        while self.recent:
            _, t = next(iter(self.recent.items()))
            if now - t < window:
                break
            self.recent.popitem(last=False)
        return key in self.recent

    def note_text(self, key: tuple[str, str], now: float) -> None:
        self.recent[key] = now
        self.recent.move_to_end(key)

    # -- mutes (ban / timeout) -------------------------------------------------------------------------------
    def mute(self, user: str, now: float, seconds: float | None) -> None:
        """``seconds`` None (a ban) mutes until the daemon restarts."""
        self.muted[user] = math.inf if seconds is None else now + seconds

    def muted_left(self, user: str, now: float) -> float:
        until = self.muted.get(user)
        if until is None:
            return 0.0
        if until <= now:
            del self.muted[user]
            return 0.0
        return until - now
