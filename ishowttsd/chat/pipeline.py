"""The chat moderation pipeline: one :class:`ChatMessage` in, one :class:`Accept` or :class:`Drop` out.

Plain code (no sockets, no engine, injectable clock), applied in this order; each step is off
when its setting is (docs/CHAT.md lists the keys):

 1. ``ignored`` / ``banned``: users on ``ignore_users``, or banned / timed out by a moderator.
 2. ``stale``: the line's ``ts`` is already older than its staleness limit.
 3. emotes: the bot's emote ranges (on the raw text, whose offsets they are), then ``emote_names``,
    then emoji (``strip_emoji``).
 4. speakable (:mod:`ishowttsd.chat.speakable`): HTML entities unescaped; ANSI escapes, SSML/HTML
    tags, bidi controls and stacks of combining marks (zalgo) removed. Then sanitise: control
    characters and lone surrogates removed, whitespace runs made one space.
 5. links: removed or replaced (``urls``, ``url_replacement``).
 6. repeats: runs of one word, then of one character, cut (``max_repeat_tokens``/``_chars``).
 7. blocklist: ``drop`` the line (``blocked``), or ``mask``/``replace`` the word.
 8. ``[[chat.replace]]`` regular expressions, in file order.
 9. ``[chat.lexicon]`` pronunciations.
10. ``empty``: nothing speakable left.
11. limits, for ``text`` priority only: ``duplicate`` (same normalised text in the channel within
    ``duplicate_window_s``), ``cooldown`` (per user), ``rate_limited`` (global window).
12. truncation to ``max_chars`` and ``max_seconds`` (the announce prefix counted), at a word.

An accepted line carries its :class:`~ishowttsd.job.Announce` (the announce with the user's
spoken name); the job's turn (:mod:`ishowttsd.daemon.turn`) adds it, since only then is "the
same user spoke last" known, and judges staleness again.
"""

from __future__ import annotations

import hmac
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import regex

from ishowttsd import log
from ishowttsd.chat.filters import (
    collapse_chars,
    collapse_tokens,
    replace_urls,
    strip_emoji,
    strip_emote_ranges,
)
from ishowttsd.chat.normalize import collapse_stretched, spam_key, user_key
from ishowttsd.chat.normalize import warm as warm_spam_key
from ishowttsd.chat.settings import ChatSettings
from ishowttsd.chat.speakable import speakable
from ishowttsd.chat.state import ChatState
from ishowttsd.chat.text import estimate_seconds, skeleton, truncate
from ishowttsd.chat.words import WordMatcher, mask
from ishowttsd.job import Announce, ChatOrigin
from ishowttsd.protocol import ChatMessage

_log = log.get(__name__)

REPLACE_TIMEOUT_S = 0.05
"""A ``[[chat.replace]]`` pattern that backtracks longer than this on one line is skipped for it:
a streamer's regex must never stall the socket loop on a hostile 10,000-character line."""

DROP_REASONS = (
    "ignored",
    "banned",
    "stale",
    "blocked",
    "empty",
    "duplicate",
    "cooldown",
    "rate_limited",
)

_WS = regex.compile(r"\s+")


class Clock(Protocol):
    def time(self) -> float:
        """Unix seconds (stored in the journal: it must survive a restart)."""
        ...

    def monotonic(self) -> float:
        """Seconds for windows and cooldowns (immune to wall-clock steps)."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True)
class Note:
    """One kind of change the pipeline made to a line, for the ``filtered`` event."""

    step: str
    """``emotes``, ``urls``, ``repeats``, ``blocklist``, ``replace``, ``lexicon``, ``truncated``, ..."""
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "count": self.count}


@dataclass(frozen=True)
class Accept:
    text: str
    """The line to speak (the announce not yet added: see :attr:`announce`)."""
    priority: str
    voice: str | None
    origin: ChatOrigin
    """Who posted the line, where (the message's own, passed on)."""
    accepted_at: float
    """Unix seconds."""
    expires_at: float | None
    """Unix seconds after which the line is stale; None: never (stored in the journal)."""
    ttl_s: float | None
    """Seconds from now until it is stale; None: never (for a monotonic deadline in this process)."""
    seconds: float
    """Estimated seconds of speech, announce prefix included (for the queue's bound)."""
    original: str
    notes: tuple[Note, ...] = ()
    dup_key: tuple[str, str] = ("", "")
    """(channel, normalised text): what :meth:`Pipeline.commit` remembers for duplicates."""
    announce: Announce | None = None
    """How the line is introduced at its turn (None: ``[chat] announce`` off, or no user)."""

    accepted = True


@dataclass(frozen=True)
class Drop:
    reason: str
    """Machine-readable, one of :data:`DROP_REASONS`."""
    detail: str
    """For people: why, with the numbers."""
    text: str
    """The line as it stood when dropped (blocked words masked)."""
    priority: str = "text"
    origin: ChatOrigin | None = None
    notes: tuple[Note, ...] = ()

    accepted = False


Decision = Accept | Drop


def _sanitise(text: str) -> str:
    """Drop control characters (bells, escapes), lone surrogates and non-characters; one space per run."""
    if not text.isprintable():
        text = "".join(
            c
            for c in text
            if c.isprintable() or c.isspace() or unicodedata.category(c) in ("Cf", "Mn", "Me", "Mc")
        )
    return _WS.sub(" ", text).strip()


def normalise_for_duplicates(text: str) -> str:
    """The duplicate key: case, accents, marks, look-alike letters, spacing and punctuation between
    letters and stretched letters folded ("LOL!!", "l o l", "LOOOOL" are one line; see
    :mod:`ishowttsd.chat.normalize`)."""
    return spam_key(text) or text


class Pipeline:
    """The ``[chat]`` rules, compiled. Build a new one on SIGHUP and pass it the old :attr:`state`."""

    def __init__(
        self, settings: ChatSettings, state: ChatState | None = None, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.state = state if state is not None else ChatState()
        self.clock: Clock = clock if clock is not None else SystemClock()
        s = settings
        self._ignored = frozenset(s.ignore_users)
        self._emote_names: WordMatcher[None] = WordMatcher([(w, None) for w in s.emote_names])
        self._block: WordMatcher[tuple[str, str]] = WordMatcher(
            [(w, (r.action, r.replacement)) for r in s.blocklist for w in r.words]
        )
        self._lexicon: WordMatcher[str] = WordMatcher(list(s.lexicon.items()))
        self._replace = [
            (regex.compile(r.pattern, regex.IGNORECASE if r.ignore_case else 0), r.replacement)
            for r in s.replace
        ]
        self._tokens = tuple(t.encode("utf-8") for t in s.moderator_tokens)
        warm_spam_key()  # once per process, before the first line (not in the socket loop)

    @property
    def counters(self) -> Counter[str]:
        """``accepted``, ``dropped.<reason>``, ``replaced.<step>``: for the ``status`` reply."""
        return self.state.counters

    # -- intake ----------------------------------------------------------------------------------------------
    def priority_of(self, msg: ChatMessage) -> str:
        return self.settings.priorities.get(msg.kind, "text")

    def process(self, msg: ChatMessage, commit: bool = True) -> Decision:
        """Filter one line. With ``commit=False`` an accepted line does not count against the
        limits (duplicates, cooldown, rate) until :meth:`commit` is called, e.g. once the queue
        has taken it: a line the queue refuses must not make its later copies "duplicates"."""
        d = self._process(msg)
        if commit and isinstance(d, Accept):
            self.commit(d)
        if isinstance(d, Accept):
            self.counters["accepted"] += 1
        else:
            self.counters[f"dropped.{d.reason}"] += 1
        for n in d.notes:
            self.counters[f"replaced.{n.step}"] += n.count
        return d

    def _process(self, msg: ChatMessage) -> Decision:
        """The steps of the module docstring, in order: gate, clean, words, limits, fit."""
        s = self.settings
        wall, mono = self.clock.time(), self.clock.monotonic()
        prio = self.priority_of(msg)
        user = (msg.user or "").casefold()
        notes: list[Note] = []

        def drop(why: tuple[str, str], text: str) -> Drop:
            return Drop(why[0], why[1], text, prio, msg.origin, tuple(notes))

        limit = self.stale_limit(prio)
        posted = min(msg.ts, wall) if msg.ts is not None else wall
        refused = self._gate(msg, user, mono, wall - posted, limit)
        if refused is not None:
            return drop(refused, msg.text)
        text = self._clean(msg, notes)
        text, blocked = self._words(text, notes)
        if blocked:
            return drop(("blocked", "contains a word on a chat.blocklist rule with action = drop"), text)
        if not skeleton(text)[0].strip():
            return drop(("empty", "nothing speakable left after the chat filters"), text)
        dup_key = (msg.channel or "", normalise_for_duplicates(text))
        if prio == "text":
            limited = self._limits(msg, user, dup_key, mono)
            if limited is not None:
                return drop(limited, text)
        announce = self.announce(msg.origin)
        text, reserve = self._fit(text, notes, announce)
        return Accept(
            text=text,
            priority=prio,
            voice=s.voices.get(user) if user in s.voices else msg.voice,
            origin=msg.origin,
            accepted_at=wall,
            expires_at=posted + limit if limit > 0 else None,
            ttl_s=posted + limit - wall if limit > 0 else None,
            seconds=estimate_seconds(text, s.chars_per_second) + reserve,
            original=msg.text,
            notes=tuple(notes),
            dup_key=dup_key,
            announce=announce,
        )

    def _gate(
        self, msg: ChatMessage, user: str, mono: float, age: float, limit: float
    ) -> tuple[str, str] | None:
        """Steps 1-2: ignored, banned or timed out, stale at intake; (reason, detail) to drop."""
        if user and user in self._ignored:
            return "ignored", f"user {msg.user!r} is on chat.ignore_users"
        left = self.state.muted_left(user, mono) if user else 0.0
        if left > 0:
            what = "banned" if left == float("inf") else f"timed out for {left:.0f} s more"
            return "banned", f"user {msg.user!r} is {what}"
        if limit > 0 and age > limit:
            return "stale", f"posted {age:.0f} s ago; limit {limit:g} s"
        return None

    def _clean(self, msg: ChatMessage, notes: list[Note]) -> str:
        """Steps 3-6: emotes and emoji, the speakable cleanup, sanitising, links, repeats."""
        s = self.settings
        text = msg.text
        if s.strip_emotes and msg.emotes:
            text, n = strip_emote_ranges(text, msg.emotes)
            if n:
                notes.append(Note("emotes", n))
        if self._emote_names:
            text, n = self._emote_names.sub(text, lambda _span, _p: "")
            if n:
                notes.append(Note("emotes", n))
        if s.strip_emoji:
            text, n = strip_emoji(text)
            if n:
                notes.append(Note("emoji", n))
        text, cleaned = speakable(text)
        notes.extend(Note(step, n) for step, n in cleaned.items())
        text = _sanitise(text)
        if s.urls != "keep":
            text, n = replace_urls(text, s.url_replacement if s.urls == "replace" else "")
            if n:
                notes.append(Note("urls", n))
        text, n1 = collapse_tokens(text, s.max_repeat_tokens)
        text, n2 = collapse_chars(text, s.max_repeat_chars)
        n3 = 0
        if s.stretched_words:
            text, n3 = collapse_stretched(text)
        if n1 + n2 + n3:
            notes.append(Note("repeats", n1 + n2 + n3))
        return text

    def _words(self, text: str, notes: list[Note]) -> tuple[str, bool]:
        """Steps 7-9: the blocklist (True: a ``drop`` word), ``[[chat.replace]]``, the lexicon."""
        s = self.settings
        if self._block:
            dropped = False

            def block(span: str, payload: tuple[str, str]) -> str:
                nonlocal dropped
                action, replacement = payload
                if action == "drop":
                    dropped = True
                return replacement if action == "replace" else mask(span, s.mask_char)

            text, n = self._block.sub(text, block)
            if n:
                notes.append(Note("blocklist", n))
            if dropped:
                return text, True
        for i, (pattern, replacement) in enumerate(self._replace):
            try:
                text, n = pattern.subn(replacement, text, timeout=REPLACE_TIMEOUT_S)
            except TimeoutError:
                _log.warning("chat_replace_timeout", rule=f"chat.replace[{i}]", chars=len(text))
                notes.append(Note("replace_timeout", 1))
                continue
            if n:
                notes.append(Note("replace", n))
        if self._lexicon:
            text, n = self._lexicon.sub(text, lambda _span, say: say)
            if n:
                notes.append(Note("lexicon", n))
        return _WS.sub(" ", text).strip(), False

    def _limits(
        self, msg: ChatMessage, user: str, dup_key: tuple[str, str], mono: float
    ) -> tuple[str, str] | None:
        """Step 11 (``text`` priority only): duplicate, cooldown, rate; (reason, detail) to drop."""
        s = self.settings
        if s.duplicate_window_s > 0 and self.state.seen_within(dup_key, mono, s.duplicate_window_s):
            return "duplicate", f"same text in this channel within {s.duplicate_window_s:g} s"
        if user and s.user_cooldown_s > 0:
            wait = self.state.cooldown_left(user_key(user), mono, s.user_cooldown_s)
            if wait > 0:
                return "cooldown", f"user {msg.user!r} may speak again in {wait:.1f} s"
        if s.rate_limit_messages > 0:
            count = self.state.rate_count(mono, s.rate_limit_window_s)
            if count >= s.rate_limit_messages:
                return (
                    "rate_limited",
                    f"{count} lines in the last {s.rate_limit_window_s:g} s; "
                    f"limit chat.rate_limit_messages = {s.rate_limit_messages}",
                )
        return None

    def _fit(self, text: str, notes: list[Note], announce: Announce | None) -> tuple[str, float]:
        """Step 12: truncation to ``max_chars`` and ``max_seconds``, the announce prefix counted;
        returns the text and the prefix's estimated seconds."""
        s = self.settings
        prefix = announce.format("") if announce is not None else ""
        reserve = estimate_seconds(prefix, s.chars_per_second)
        max_seconds = max(s.max_seconds - reserve, 1.0 / s.chars_per_second) if s.max_seconds > 0 else 0.0
        text, cut = truncate(text, s.max_chars, max_seconds, s.chars_per_second)
        if cut:
            notes.append(Note("truncated", 1))
            if self._block:
                # A cut inside one long token can leave a blocked word ("heckler" -> "heck"); masking
                # keeps the length within the limits that the cut just met.
                text, n = self._block.sub(text, lambda span, _p: mask(span, s.mask_char))
                if n:
                    notes.append(Note("blocklist", n))
        return text, reserve

    def commit(self, d: Accept) -> None:
        """Count an accepted line against the limits (see :meth:`process`)."""
        if d.priority != "text":
            return
        s, mono = self.settings, self.clock.monotonic()
        # Remember only what a limit that is on will ask about: off limits keep no state.
        if s.duplicate_window_s > 0:
            self.state.note_text(d.dup_key, mono)
        if d.origin.user and s.user_cooldown_s > 0:
            self.state.note_user(user_key(d.origin.user.casefold()), mono)
        if s.rate_limit_messages > 0:
            self.state.note_accept(mono)

    # -- staleness and the announce ---------------------------------------------------------------------
    def stale_limit(self, priority: str) -> float:
        """Seconds a line of ``priority`` may wait; 0: forever (paid lines are never dropped for age)."""
        if priority == "text":
            return self.settings.stale_after_s
        if priority == "message":
            return self.settings.stale_after_message_s
        return 0.0

    def announce(self, origin: ChatOrigin | None) -> Announce | None:
        """How a line of ``origin`` is introduced at its turn; None: ``[chat] announce`` is off or
        the line has no user. (The admission asks again for a replayed chat line.)"""
        user = origin.user if origin is not None else None
        if not self.settings.announce or origin is None or not user:
            return None
        return Announce(
            self.settings.announce,
            self._speakable_user(user),
            origin.channel or "",
            origin.platform or "",
            self.settings.announce_skip_same_user,
        )

    def _speakable_user(self, user: str) -> str:
        # "xX_Gamer_Xx" reads better as words; a blocked word in a user name is masked like in text.
        name = _WS.sub(" ", user.replace("_", " ")).strip()
        if self._block:
            name, _ = self._block.sub(
                name, lambda span, p: p[1] if p[0] == "replace" else mask(span, self.settings.mask_char)
            )
        if self._lexicon:
            name, _ = self._lexicon.sub(name, lambda _span, say: say)
        return name

    # -- moderation ------------------------------------------------------------------------------------------
    def authorised(self, token: object) -> bool:
        """Whether a bot's ``token`` is one of ``chat.moderator_tokens`` (constant-time compare)."""
        if not isinstance(token, str) or not self._tokens:
            return False
        given = token.encode("utf-8")
        return any(hmac.compare_digest(given, t) for t in self._tokens)

    def mute(self, user: str, seconds: float | None) -> None:
        """A ``ban`` (``seconds`` None) or ``timeout``: drop the user's next lines as ``banned``."""
        self.state.mute(user.casefold(), self.clock.monotonic(), seconds)
