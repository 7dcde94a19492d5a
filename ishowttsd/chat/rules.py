"""Streamer controls: what gets read and by whose say (plain code; docs/CHAT.md, "Who is read").

:func:`decide` looks at one chat line before any filter and says one of three things:

- :class:`Command`: a chat command (``!voice NAME``, ``!tts cancel``, a moderator's ``!skip``, ...),
  never read aloud; the intake carries it out if the sender may give it;
- :class:`Refuse`: not to be read (read mode, ignored prefixes, roles, bits minimum, rewards,
  notice kinds, first-time chatters), with a drop reason;
- :class:`Read`: read it -- the text with a command prefix stripped, and the overrides a
  channel-point reward sets (priority, voice), and whether it waits for a moderator's approval.

Each line falls in one category, which picks its rules: a channel-point redemption (``reward_id``),
a paid line (``bits`` > 0 or kind ``paid``), a notice (a USERNOTICE kind: ``sub``, ``raid``, ...),
or plain chat (kinds ``chat`` and ``mod``). Read mode and ignored prefixes apply to plain chat only:
a cheer or a redemption is a request to be read by itself.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import regex

from ishowttsd.confread import Table
from ishowttsd.protocol import PRIORITIES, ChatMessage

MODES = ("all", "command")
APPROVAL = ("off", "first_time", "paid", "all")
FIRST_TIME = ("read", "skip")
ROLES = ("everyone", "broadcaster", "moderator", "vip", "subscriber", "founder")
PLAIN_KINDS = ("chat", "mod")
MODERATOR_COMMANDS = {
    "!skip": "skip",
    "!clear": "clear",
    "!ttspause": "pause",
    "!ttsresume": "resume",
    "!ttsban": "ban",
}
"""Chat word -> the moderation topic it maps onto (``ishowttsd/daemon/moderation.py`` carries them out)."""


@dataclass(frozen=True)
class RewardRule:
    """One ``[[chat.rewards]]`` entry: a channel-point reward and how its redemptions are read."""

    id: str
    """The reward's id (``ishowtts-twitch --show-rewards`` logs them), or ``"*"`` for any other."""
    read: bool = True
    priority: str | None = None
    """``important``, ``message`` or ``text``; None: as chat (``[chat.priorities]``)."""
    voice: str | None = None
    """A voice id the redemption is read in (an unknown one falls back to the default voice)."""


@dataclass(frozen=True)
class Who:
    """``[chat.who]``: whose lines are read, per category."""

    chat: tuple[str, ...] = ("everyone",)
    """Roles whose plain chat is read (any one suffices): ``everyone``, ``broadcaster``,
    ``moderator``, ``vip``, ``subscriber`` (with :attr:`subscriber_months`), ``founder``."""
    paid: tuple[str, ...] = ("everyone",)
    rewards: tuple[str, ...] = ("everyone",)
    bits_min: int = 1
    """A paid line with fewer bits is not read."""
    subscriber_months: int = 0
    """The ``subscriber`` role counts from this many months subscribed (founders are subscribers)."""
    allow_users: tuple[str, ...] = ()
    """Read whatever their role (case-folded); bans, ``ignore_users`` and the filters still apply."""
    notices: tuple[str, ...] = ("*",)
    """USERNOTICE kinds read (``sub``, ``resub``, ``subgift``, ``raid``, ...); ``"*"``: all."""


@dataclass(frozen=True)
class Rules:
    """The streamer-control keys of ``[chat]``."""

    mode: str = "all"
    """``all``: every line (but :attr:`ignore_prefixes`); ``command``: only lines that start with a
    command prefix, which is stripped."""
    command_prefixes: tuple[str, ...] = ("!tts",)
    ignore_prefixes: tuple[str, ...] = ("!",)
    """In ``all`` mode, plain chat starting with one of these (other bots' commands) is not read."""
    who: Who = Who()
    rewards: tuple[RewardRule, ...] = ()
    """Empty: every redemption is read (by :attr:`Who.rewards`). Else only those listed (or ``*``)."""
    first_time: str = "read"
    """A first-time chatter's line: ``read`` or ``skip`` (``approval = "first_time"`` holds them)."""
    commands: bool = True
    """Chat commands: ``!voice NAME``/``!voice reset``, ``!tts cancel``; moderators' ``!skip``,
    ``!clear``, ``!ttspause``, ``!ttsresume``, ``!ttsban USER``."""
    voice_tags: bool = False
    """``(voice) text (voice2) more``: each segment in its voice, when the voice exists."""
    approval: str = "off"
    """Lines held until a moderator approves them: ``off``, ``first_time``, ``paid``, ``all``."""
    approval_timeout_s: float = 300.0
    """A held line not approved within this many seconds is dropped ``not_approved``."""


@dataclass(frozen=True)
class Command:
    name: str
    """``voice``, ``voice_reset``, ``cancel`` (any viewer); ``skip``, ``clear``, ``pause``, ``resume``,
    ``ban`` (moderators)."""
    arg: str | None = None
    moderator_only: bool = False


@dataclass(frozen=True)
class Refuse:
    reason: str
    """``not_command``, ``ignored_prefix``, ``not_allowed``, ``first_time``, ``bits_below_min``,
    ``reward_not_read``, ``notice_not_read``."""
    detail: str


@dataclass(frozen=True)
class Read:
    text: str
    category: str
    """``chat``, ``paid``, ``reward`` or ``notice``."""
    priority: str | None = None
    voice: str | None = None
    hold: str | None = None
    """Why the line waits for approval (the ``approval`` mode that caught it), or None."""


Verdict = Command | Refuse | Read
REFUSE_REASONS = (
    "not_command",
    "ignored_prefix",
    "not_allowed",
    "first_time",
    "bits_below_min",
    "reward_not_read",
    "notice_not_read",
)


def category(msg: ChatMessage) -> str:
    if msg.reward_id:
        return "reward"
    if msg.bits > 0 or msg.kind == "paid":
        return "paid"
    if msg.kind not in PLAIN_KINDS:
        return "notice"
    return "chat"


def _prefixed(text: str, prefixes: tuple[str, ...]) -> str | None:
    """``text`` without the first of ``prefixes`` it starts with (case-insensitive, then a space
    or the end), or None."""
    low = text.casefold()
    for p in prefixes:
        q = p.casefold()
        if low.startswith(q) and (len(low) == len(q) or low[len(q)].isspace()):
            return text[len(p) :].strip()
    return None


def command(text: str) -> Command | None:
    """The chat command ``text`` is, if it is one."""
    words = text.strip().split()
    if not words:
        return None
    head = words[0].casefold()
    if head == "!voice":
        if len(words) == 1:
            return None
        arg = words[1]
        return Command("voice_reset") if arg.casefold() == "reset" else Command("voice", arg)
    if head == "!tts" and len(words) == 2 and words[1].casefold() == "cancel":
        return Command("cancel")
    if head in MODERATOR_COMMANDS:
        target = words[1].lstrip("@") if len(words) > 1 else None
        return Command(MODERATOR_COMMANDS[head], target, moderator_only=True)
    return None


def has_role(msg: ChatMessage, allowed: tuple[str, ...], who: Who) -> bool:
    if "everyone" in allowed:
        return True
    roles = msg.roles
    for r in allowed:
        if r == "subscriber":
            if ("subscriber" in roles or "founder" in roles) and msg.months >= who.subscriber_months:
                return True
        elif r in roles:
            return True
    return False


def decide(msg: ChatMessage, rules: Rules) -> Verdict:
    """What to do with ``msg`` (see the module docstring)."""
    cat = category(msg)
    who = rules.who
    text = msg.text.strip()
    if cat == "chat" and rules.commands:
        cmd = command(text)
        if cmd is not None:
            return cmd
    user = (msg.user or "").casefold()
    allowed = bool(user) and user in who.allow_users
    priority: str | None = None
    voice: str | None = None
    if cat == "notice":
        if "*" not in who.notices and msg.kind not in who.notices:
            return Refuse("notice_not_read", f"kind {msg.kind!r} is not in chat.who.notices")
    elif cat == "reward":
        if rules.rewards:
            rule = next((r for r in rules.rewards if r.id == msg.reward_id), None)
            rule = rule or next((r for r in rules.rewards if r.id == "*"), None)
            if rule is None or not rule.read:
                return Refuse("reward_not_read", f"reward {msg.reward_id!r} is not read (chat.rewards)")
            priority, voice = rule.priority, rule.voice
        if not allowed and not has_role(msg, who.rewards, who):
            return Refuse(
                "not_allowed", f"redemptions are read for {', '.join(who.rewards)} (chat.who.rewards)"
            )
    elif cat == "paid":
        if 0 < msg.bits < who.bits_min:  # a donation bot's "paid" line without bits has no minimum
            return Refuse("bits_below_min", f"{msg.bits} bits; chat.who.bits_min = {who.bits_min}")
        if not allowed and not has_role(msg, who.paid, who):
            return Refuse("not_allowed", f"paid lines are read for {', '.join(who.paid)} (chat.who.paid)")
    else:
        stripped = _prefixed(text, rules.command_prefixes)
        if stripped is not None:
            text = stripped
        elif rules.mode == "command":
            return Refuse(
                "not_command", f"chat.mode = command: lines start with {', '.join(rules.command_prefixes)}"
            )
        elif any(text.startswith(p) for p in rules.ignore_prefixes):
            return Refuse("ignored_prefix", "starts with one of chat.ignore_prefixes (another bot's command)")
        if not allowed and not has_role(msg, who.chat, who):
            return Refuse("not_allowed", f"chat is read for {', '.join(who.chat)} (chat.who.chat)")
    if msg.first_msg and rules.first_time == "skip":
        return Refuse("first_time", "a first-time chatter's line (chat.first_time = skip)")
    hold = None
    a = rules.approval
    if a == "all" or (a == "first_time" and msg.first_msg) or (a == "paid" and cat == "paid"):
        hold = a
    return Read(text, cat, priority, voice, hold)


_TAG = regex.compile(r"\(\s*([^()\s][^()]{0,63}?)\s*\)")


def voice_segments(text: str, known: Collection[str]) -> list[tuple[str | None, str]]:
    """``(voice) text (voice2) more`` -> ``[("voice", "text"), ("voice2", "more")]``.

    A tag names a voice id (case-insensitive) in ``known``; any other parenthesis is text. Text
    before the first tag is in the line's own voice (None). Segments with nothing to say are left
    out; a line without a known tag is one segment."""
    by_fold = {k.casefold(): k for k in known}
    out: list[tuple[str | None, str]] = []
    voice: str | None = None
    last = 0
    for m in _TAG.finditer(text):
        v = by_fold.get(m.group(1).casefold())
        if v is None:
            continue
        out.append((voice, text[last : m.start()].strip()))
        voice, last = v, m.end()
    out.append((voice, text[last:].strip()))
    return [(v, t) for v, t in out if t] or [(None, text)]


# -- settings ------------------------------------------------------------------------------------------
def _roles(t: Table, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    roles = tuple(r.casefold() for r in t.str_list(name, default))
    for r in roles:
        if r not in ROLES:
            raise t.error(name, f"unknown role {r!r}; known: {', '.join(ROLES)}")
    if not roles:
        raise t.error(name, 'lists no role (["everyone"] reads everyone)')
    return roles


def _prefixes(t: Table, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    out = t.str_list(name, default)
    for i, p in enumerate(out):
        if len(p.split()) != 1 or p != p.strip():
            raise t.error(f"{name}[{i}]", f"must be a word without spaces, got {p!r}")
    return out


def parse_rules(t: Table) -> Rules:
    """The streamer-control keys of a ``[chat]`` table (the caller finishes the table)."""
    d = Rules()
    w = t.table("who")
    who = Who(
        chat=_roles(w, "chat", d.who.chat),
        paid=_roles(w, "paid", d.who.paid),
        rewards=_roles(w, "rewards", d.who.rewards),
        bits_min=w.integer("bits_min", d.who.bits_min, min=1, max=10_000_000),
        subscriber_months=w.integer("subscriber_months", d.who.subscriber_months, min=0, max=1200),
        allow_users=tuple(u.casefold() for u in w.str_list("allow_users", ())),
        notices=tuple(k.casefold() for k in w.str_list("notices", d.who.notices)),
    )
    w.finish()
    rewards = []
    seen: set[str] = set()
    for r in t.tables("rewards"):
        rid = r.string("id", "")
        if not rid.strip():
            raise r.error("id", 'is required: a reward id (ishowtts-twitch --show-rewards) or "*"')
        if rid in seen:
            raise r.error("id", f"{rid!r} is listed twice")
        seen.add(rid)
        prio = r.opt_str("priority")
        if prio is not None and prio not in PRIORITIES:
            raise r.error("priority", f"must be one of {', '.join(PRIORITIES)}, got {prio!r}")
        rewards.append(RewardRule(rid, r.flag("read", True), prio, r.opt_str("voice")))
        r.finish()
    return Rules(
        mode=t.choice("mode", d.mode, MODES),
        command_prefixes=_prefixes(t, "command_prefixes", d.command_prefixes),
        ignore_prefixes=_prefixes(t, "ignore_prefixes", d.ignore_prefixes),
        who=who,
        rewards=tuple(rewards),
        first_time=t.choice("first_time", d.first_time, FIRST_TIME),
        commands=t.flag("commands", d.commands),
        voice_tags=t.flag("voice_tags", d.voice_tags),
        approval=t.choice("approval", d.approval, APPROVAL),
        approval_timeout_s=t.number("approval_timeout_s", d.approval_timeout_s, min=1, max=86400),
    )
