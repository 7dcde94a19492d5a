"""The ``[chat]`` section: how chat lines are filtered, limited and announced.

Parsed with :class:`ishowttsd.confread.Table`, so every mistake names the file and the key.
Every step is optional; its "off" value is documented next to its field and in docs/CHAT.md.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import regex

from ishowttsd.chat.rules import Rules, parse_rules
from ishowttsd.chat.text import CHARS_PER_SECOND
from ishowttsd.confread import Table
from ishowttsd.protocol import PRIORITIES

URL_MODES = ("keep", "remove", "replace")
BLOCK_ACTIONS = ("drop", "mask", "replace")
ANNOUNCE_FIELDS = ("user", "text", "channel", "platform")

_EMPTY: MappingProxyType[str, str] = MappingProxyType({})


def _frozen(d: dict[str, str]) -> MappingProxyType[str, str]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class BlockRule:
    """One ``[[chat.blocklist]]`` entry: whole words (case-folded), and what to do on a match."""

    words: tuple[str, ...]
    action: str = "mask"
    """``drop`` the whole line, ``mask`` each character of the word, or ``replace`` it."""
    replacement: str = ""
    """For ``replace``: what is spoken instead of the word."""


@dataclass(frozen=True)
class ReplaceRule:
    """One ``[[chat.replace]]`` entry: a regular expression (``regex`` syntax) and its replacement."""

    pattern: str
    replacement: str = ""
    ignore_case: bool = True


@dataclass(frozen=True)
class ChatSettings:
    # -- length ----------------------------------------------------------------------------------
    max_chars: int = 300
    """Code points kept of a line (cut at a word, never inside a character); 0 = no limit."""
    max_seconds: float = 20.0
    """Estimated seconds of speech kept of a line, announce prefix included; 0 = no limit."""
    chars_per_second: float = CHARS_PER_SECOND
    """Speaking rate the estimate assumes for alphabetic text (CJK ideographs count ~3 each)."""
    # -- content filters ----------------------------------------------------------------------------
    urls: str = "replace"
    """``keep``, ``remove``, or ``replace`` each link with :attr:`url_replacement`."""
    url_replacement: str = "link"
    strip_emotes: bool = True
    """Remove the emote ranges the bot sends (Twitch ``emotes`` tag)."""
    emote_names: tuple[str, ...] = ()
    """Words removed as emotes when the bot sends no ranges (e.g. ``Kappa``, ``LUL``)."""
    strip_emoji: bool = False
    """Remove emoji. Piper reads their names aloud ("face with tears of joy"); F5-TTS is silent."""
    max_repeat_tokens: int = 2
    """A word repeated more than this many times in a row is cut to this many; 0 = off."""
    max_repeat_chars: int = 3
    """A character (grapheme) repeated more than this many times in a row is cut; 0 = off."""
    stretched_words: bool = True
    """Read a stretched word as a word: a letter repeated 3+ times is cut to two, and a stretched
    word in capitals is lower-cased ("LOOOOOOL" -> "lool"; an engine spells short capitals out)."""
    blocklist: tuple[BlockRule, ...] = ()
    mask_char: str = "\u204e"
    """One per masked grapheme. The default LOW ASTERISK (⁎) reads as a mask and is silent: espeak
    (Piper) skips it, and it is not in F5-TTS's vocabulary (unknown characters become a space).
    A plain ``*`` is read aloud as "asterisk" by Piper."""
    replace: tuple[ReplaceRule, ...] = ()
    lexicon: MappingProxyType[str, str] = field(default_factory=lambda: _EMPTY)
    """Whole word (case-folded) -> how to say it."""
    # -- who ------------------------------------------------------------------------------------------
    ignore_users: tuple[str, ...] = ()
    voices: MappingProxyType[str, str] = field(default_factory=lambda: _EMPTY)
    """User (case-folded) -> voice id."""
    priorities: MappingProxyType[str, str] = field(
        default_factory=lambda: _frozen({"paid": "important", "mod": "message"})
    )
    """Message ``kind`` -> priority; kinds not listed are ``text``."""
    announce: str = ""
    """Template like ``"{user} says: {text}"``; empty = speak the text alone."""
    announce_skip_same_user: bool = True
    """Leave the prefix out when the previous line spoken was the same user's."""
    # -- limits (apply to ``text`` priority only: paid and mod lines are never rate-limited) ------------
    user_cooldown_s: float = 0.0
    """A user's next line within this many seconds of their last accepted one is dropped; 0 = off."""
    rate_limit_messages: int = 0
    """At most this many lines accepted per :attr:`rate_limit_window_s` (all users); 0 = off."""
    rate_limit_window_s: float = 30.0
    duplicate_window_s: float = 60.0
    """The same normalised text in the same channel within this window is dropped; 0 = off."""
    stale_after_s: float = 120.0
    """A ``text`` line older than this when its turn comes is dropped; 0 = never."""
    stale_after_message_s: float = 0.0
    """The same for ``message`` priority; 0 = never. ``important`` (paid) lines never go stale."""
    # -- authority ----------------------------------------------------------------------------------------
    moderator_tokens: tuple[str, ...] = ()
    """Shared secrets a bot puts in ``token`` to send ``skip``/``clear``/``pause``/``resume``."""
    # -- streamer controls (ishowttsd/chat/rules.py) ----------------------------------------------------
    rules: Rules = field(default_factory=Rules)
    """Read mode, who is read, channel-point rewards, chat commands, voice tags, approval."""
    # -- journal ------------------------------------------------------------------------------------------
    journal: bool = True
    """Write accepted jobs to ``<state_dir>/journal.sqlite3`` and replay unfinished ones on start."""
    journal_sync: str = "normal"
    """SQLite ``synchronous``: ``normal`` survives a crash of the daemon, ``full`` also a power cut."""
    journal_max_mb: float = 64.0
    """Size cap of the journal; past it new jobs are refused with ``journal_full``."""


def _announce(t: Table, name: str, default: str) -> str:
    v = t.string(name, default)
    if not v:
        return v
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
    except ValueError as e:
        raise t.error(name, f"not a valid template: {e}") from None
    for f in fields:
        if f not in ANNOUNCE_FIELDS:
            raise t.error(name, f"unknown placeholder {{{f}}}; known: {', '.join(ANNOUNCE_FIELDS)}")
    if "text" not in fields:
        raise t.error(name, "must contain {text}")
    return v


def _words(t: Table, name: str) -> tuple[str, ...]:
    words = t.str_list(name, ())
    for i, w in enumerate(words):
        if not w.strip():
            raise t.error(f"{name}[{i}]", "is empty")
    return words


def _blocklist(root: Table) -> tuple[BlockRule, ...]:
    out = []
    for t in root.tables("blocklist"):
        words = _words(t, "words")
        if not words:
            raise t.error("words", "is required and must list at least one word")
        action = t.choice("action", "mask", BLOCK_ACTIONS)
        replacement = t.string("replacement", "")
        if action == "replace" and not t.has("replacement"):
            raise t.error("replacement", 'is required when action = "replace"')
        t.finish()
        out.append(BlockRule(words=words, action=action, replacement=replacement))
    return tuple(out)


_GROUP_REF = regex.compile(r"\\(\d+)|\\g<([^>]*)>")


def _check_groups(t: Table, compiled: regex.Pattern[str], replacement: str) -> None:
    """A replacement naming a group the pattern lacks would fail on the first match, live: fail now."""
    for m in _GROUP_REF.finditer(replacement):
        ref = m.group(1) or m.group(2)
        ok = int(ref) <= compiled.groups if ref.isdigit() else ref in compiled.groupindex
        if not ok:
            raise t.error("replacement", f"refers to group {ref!r}, which the pattern does not have")


def _replace(root: Table) -> tuple[ReplaceRule, ...]:
    out = []
    for t in root.tables("replace"):
        if not t.has("pattern"):
            raise t.error("pattern", "is required")
        rule = ReplaceRule(
            pattern=t.string("pattern", ""),
            replacement=t.string("replacement", ""),
            ignore_case=t.flag("ignore_case", True),
        )
        try:
            compiled = regex.compile(rule.pattern, regex.IGNORECASE if rule.ignore_case else 0)
        except regex.error as e:
            raise t.error("pattern", f"not a valid regular expression: {e}") from None
        _check_groups(t, compiled, rule.replacement)
        t.finish()
        out.append(rule)
    return tuple(out)


def _str_map(t: Table, name: str, *, fold_keys: bool) -> dict[str, str]:
    m = t.str_map(name)
    return {(k.casefold() if fold_keys else k): v for k, v in m.items()}


def parse_chat(t: Table) -> ChatSettings:
    """Read the ``[chat]`` table (pass ``root.table("chat")``); calls ``t.finish()``."""
    d = ChatSettings()
    priorities = dict(d.priorities)
    for kind, prio in _str_map(t, "priorities", fold_keys=False).items():
        if prio not in PRIORITIES:
            raise t.error(f"priorities.{kind}", f"must be one of {', '.join(PRIORITIES)}, got {prio!r}")
        priorities[kind] = prio
    mask_char = t.string("mask_char", d.mask_char)
    if len(mask_char) != 1:
        raise t.error("mask_char", f"must be exactly one character, got {mask_char!r}")
    lexicon: dict[str, Any] = _str_map(t, "lexicon", fold_keys=True)
    for k in lexicon:
        if not k.strip():
            raise t.error("lexicon", "has an empty word")
    s = ChatSettings(
        max_chars=t.integer("max_chars", d.max_chars, min=0, max=1_000_000),
        max_seconds=t.number("max_seconds", d.max_seconds, min=0, max=3600),
        chars_per_second=t.number("chars_per_second", d.chars_per_second, min=1, max=100),
        urls=t.choice("urls", d.urls, URL_MODES),
        url_replacement=t.string("url_replacement", d.url_replacement),
        strip_emotes=t.flag("strip_emotes", d.strip_emotes),
        emote_names=_words(t, "emote_names"),
        strip_emoji=t.flag("strip_emoji", d.strip_emoji),
        max_repeat_tokens=t.integer("max_repeat_tokens", d.max_repeat_tokens, min=0, max=1000),
        max_repeat_chars=t.integer("max_repeat_chars", d.max_repeat_chars, min=0, max=1000),
        stretched_words=t.flag("stretched_words", d.stretched_words),
        blocklist=_blocklist(t),
        mask_char=mask_char,
        replace=_replace(t),
        lexicon=_frozen(lexicon),
        ignore_users=tuple(u.casefold() for u in _words(t, "ignore_users")),
        voices=_frozen(_str_map(t, "voices", fold_keys=True)),
        priorities=_frozen(priorities),
        announce=_announce(t, "announce", d.announce),
        announce_skip_same_user=t.flag("announce_skip_same_user", d.announce_skip_same_user),
        user_cooldown_s=t.number("user_cooldown_s", d.user_cooldown_s, min=0),
        rate_limit_messages=t.integer("rate_limit_messages", d.rate_limit_messages, min=0),
        rate_limit_window_s=t.number("rate_limit_window_s", d.rate_limit_window_s, min=0.001),
        duplicate_window_s=t.number("duplicate_window_s", d.duplicate_window_s, min=0),
        stale_after_s=t.number("stale_after_s", d.stale_after_s, min=0),
        stale_after_message_s=t.number("stale_after_message_s", d.stale_after_message_s, min=0),
        moderator_tokens=t.str_list("moderator_tokens", ()),
        journal=t.flag("journal", d.journal),
        journal_sync=t.choice("journal_sync", d.journal_sync, ("normal", "full")),
        journal_max_mb=t.number("journal_max_mb", d.journal_max_mb, min=1),
        rules=parse_rules(t),
    )
    for i, tok in enumerate(s.moderator_tokens):
        # A short shared secret is guessable; refuse it rather than pretend it protects anything.
        if len(tok) < 16:
            raise t.error(f"moderator_tokens[{i}]", "must be at least 16 characters long")
    t.finish()
    return s
