"""Twitch IRC commands -> the daemon's ingest messages (``ishowttsd.protocol``, docs/PROTOCOL.md).

=============  ======================================================================
PRIVMSG        ``chat``: ``kind`` is ``paid`` (bits), ``mod`` (moderator/broadcaster) or ``chat``
USERNOTICE     ``chat`` with ``kind`` = Twitch's ``msg-id`` (``sub``, ``resub``, ``raid``, ...),
               text = ``system-msg`` + the user's own message
CLEARMSG       ``delete`` of that message id
CLEARCHAT      ``timeout`` (with ``ban-duration``) or ``ban`` of that user; ``clear`` with no user
=============  ======================================================================

Pure except for one memory: the display name last seen for each login. Twitch's moderation
commands name users by login (``ronni``) while chat lines carry the display name (``Ronni``,
or a localised ``로니``), and the daemon matches a ban against the ``user`` of queued lines;
so a ban is sent with the display name the banned user's lines were queued under.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ishowttsd.protocol import CHAT_TOPIC, MAX_ID_CHARS
from ishowttsd.twitch.irc import MalformedLine, Message

PLATFORM = "twitch"
MAX_NAMES = 20000
"""Logins whose display name we remember (least recently seen are forgotten first)."""
MAX_EMOTE_RANGES = 500

_ACTION_PREFIX = "\x01ACTION "
_KIND_RE = re.compile(r"^[a-z0-9_-]{1,40}$")
_BADGE_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_BADGES = 20
ROLES = ("broadcaster", "moderator", "vip", "subscriber", "founder")
"""Roles, most powerful first, as the ingest field ``roles`` names them."""


@dataclass(frozen=True)
class Outgoing:
    """One ingest message: ``[topic, JSON(body)]``."""

    topic: bytes
    body: dict[str, Any]


def _digits(s: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts "²", which ``int`` refuses."""
    return s.isascii() and s.isdigit()


def parse_emotes(tag: str, text_len: int, shift: int = 0) -> list[list[int]]:
    """Twitch's ``emotes`` tag (``25:0-4,12-16/1902:6-10``) -> sorted ``[[start, end], ...]``.

    Ranges are inclusive code-point indices into the message text, which is how Python indexes a
    ``str``, so they are kept as they are (plus ``shift`` when the text gets a prefix). A range that
    is garbled or falls outside the text is skipped: a wrong range would cut real words.
    """
    out: set[tuple[int, int]] = set()
    if not tag:
        return []
    for group in tag.split("/"):
        _, _, ranges = group.rpartition(":")
        for r in ranges.split(","):
            a, sep, b = r.partition("-")
            if not sep or not _digits(a) or not _digits(b) or len(a) > 9 or len(b) > 9:
                continue
            start, end = int(a), int(b)
            if start <= end < text_len:
                out.add((start + shift, end + shift))
            if len(out) >= MAX_EMOTE_RANGES:
                break
    return [list(r) for r in sorted(out)]


def _int_tag(tags: dict[str, str] | Any, key: str) -> int | None:
    v = tags.get(key)
    if v is None or not _digits(v) or len(v) > 15:
        return None
    return int(v)


def _clip(value: str) -> str:
    """Names and ids longer than the protocol allows would get the whole message rejected: clip them
    (the same way everywhere, so a clipped ``delete`` id still matches its clipped chat id)."""
    return value[:MAX_ID_CHARS]


def _channel(msg: Message) -> str:
    ch = msg.param(0)
    if not ch or not ch.startswith("#") or len(ch) < 2:
        raise MalformedLine(f"{msg.command} without a #channel", f"{msg.command} {' '.join(msg.params)}")
    return _clip(ch[1:].lower())


def strip_action(text: str) -> str | None:
    """``/me waves`` arrives as ``\\x01ACTION waves\\x01``: keep ``waves``. Other CTCP: None (not chat)."""
    if text.startswith(_ACTION_PREFIX) or text in ("\x01ACTION", "\x01ACTION\x01"):
        inner = text[len(_ACTION_PREFIX) :] if text.startswith(_ACTION_PREFIX) else ""
        return inner[:-1] if inner.endswith("\x01") else inner
    if text.startswith("\x01"):
        return None
    return text


def parse_badges(tag: str) -> dict[str, str]:
    """``badges``/``badge-info`` tag (``subscriber/12,vip/1``) -> ``{"subscriber": "12", "vip": "1"}``.

    At most :data:`MAX_BADGES` badges; names and versions clipped like ids (a garbled tag must not
    get the whole line rejected by the daemon's protocol check).
    """
    out: dict[str, str] = {}
    for item in tag.split(","):
        name, sep, version = item.partition("/")
        if sep and _BADGE_RE.match(name) and len(out) < MAX_BADGES:
            out[name] = version[:32]
    return out


def role_facts(tags: dict[str, str] | Any) -> dict[str, Any]:
    """The role facts a line's IRC tags carry, as ingest fields (docs/PROTOCOL.md, "role facts").

    ``roles`` is the platform-neutral list the daemon's ``[chat]`` rules read (``broadcaster``,
    ``moderator``, ``vip``, ``subscriber``, ``founder``); ``badges`` the raw badges for other uses;
    ``months`` the months subscribed (``badge-info``); ``first_msg`` a first-time chatter;
    ``reward_id`` a channel-point redemption with text; ``msg_type`` Twitch's ``msg-id`` of a
    PRIVMSG (``highlighted-message``, ``skip-subs-mode-message``, ...). Absent facts are left out.
    """
    out: dict[str, Any] = {}
    badges = parse_badges(tags.get("badges", ""))
    if badges:
        out["badges"] = badges
    roles = [r for r in ROLES if r in badges]
    if tags.get("mod") == "1" and "moderator" not in roles:
        roles.append("moderator")
    if tags.get("vip") == "1" and "vip" not in roles:
        roles.append("vip")
    if tags.get("subscriber") == "1" and "subscriber" not in roles:
        roles.append("subscriber")
    if roles:
        out["roles"] = sorted(roles, key=ROLES.index)
    info = parse_badges(tags.get("badge-info", ""))
    months = info.get("subscriber") or info.get("founder")
    if months and _digits(months) and len(months) < 6:
        out["months"] = int(months)
    if tags.get("first-msg") == "1":
        out["first_msg"] = True
    reward = tags.get("custom-reward-id", "")
    if reward:
        out["reward_id"] = _clip(reward)
    return out


class Translator:
    def __init__(self, max_names: int = MAX_NAMES) -> None:
        self._names: OrderedDict[str, str] = OrderedDict()
        self._max_names = max_names

    # -- the login -> display name memory ----------------------------------------------------------
    def _remember(self, login: str | None, display: str) -> None:
        if not login:
            return
        self._names[login.lower()] = display
        self._names.move_to_end(login.lower())
        while len(self._names) > self._max_names:
            self._names.popitem(last=False)

    def display_name(self, login: str) -> str:
        """The display name last seen for ``login``, else the login itself."""
        return self._names.get(login.lower(), login)

    # -- translation ---------------------------------------------------------------------------------
    def translate(self, msg: Message) -> Outgoing | None:
        """The ingest message for ``msg``, or None when it carries nothing for the daemon.

        Raises :class:`MalformedLine` when a command the bridge handles lacks a part it needs.
        """
        handler = {
            "PRIVMSG": self._privmsg,
            "USERNOTICE": self._usernotice,
            "CLEARMSG": self._clearmsg,
            "CLEARCHAT": self._clearchat,
        }.get(msg.command)
        return handler(msg) if handler else None

    def _user(self, msg: Message) -> str | None:
        display = msg.tags.get("display-name", "").strip()
        login = msg.tags.get("login") or msg.nick
        user = _clip(display or login or "")
        if user:
            self._remember(login, user)
        return user or None

    @staticmethod
    def _common(msg: Message, channel: str, body: dict[str, Any]) -> dict[str, Any]:
        body["channel"] = channel
        body["platform"] = PLATFORM
        if msg.tags.get("id"):
            body["id"] = _clip(msg.tags["id"])
        ts = _int_tag(msg.tags, "tmi-sent-ts")
        if ts is not None:
            body["ts"] = ts / 1000.0
        if "subscriber" in msg.tags:
            body["subscriber"] = msg.tags["subscriber"] == "1"
        body.update(role_facts(msg.tags))
        return body

    def _privmsg(self, msg: Message) -> Outgoing | None:
        channel = _channel(msg)
        raw = msg.param(1)
        if raw is None:
            raise MalformedLine("PRIVMSG without text", f"PRIVMSG {' '.join(msg.params)}")
        text = strip_action(raw)
        if text is None or not text.strip():
            return None
        user = self._user(msg)
        badges = msg.tags.get("badges", "")
        bits = _int_tag(msg.tags, "bits")
        if bits:
            kind = "paid"
        elif msg.tags.get("mod") == "1" or "broadcaster/" in badges:
            kind = "mod"
        else:
            kind = "chat"
        body: dict[str, Any] = {"text": text, "kind": kind}
        if user:
            body["user"] = user
        body["emotes"] = parse_emotes(msg.tags.get("emotes", ""), len(text))
        if bits:
            body["bits"] = bits
        msg_type = msg.tags.get("msg-id", "").lower()
        if _KIND_RE.match(msg_type):
            body["msg_type"] = msg_type
        return Outgoing(CHAT_TOPIC, self._common(msg, channel, body))

    def _usernotice(self, msg: Message) -> Outgoing | None:
        channel = _channel(msg)
        system = msg.tags.get("system-msg", "").strip()
        said = msg.param(1) or ""
        if not said.strip():
            said = ""  # kept unstripped otherwise: the emote ranges index into it as sent
        if not system and not said:
            return None
        text = f"{system} {said}" if system and said else system or said
        shift = len(system) + 1 if system and said else 0
        kind = msg.tags.get("msg-id", "").lower()
        if not _KIND_RE.match(kind):
            kind = "announcement"
        body: dict[str, Any] = {"text": text, "kind": kind}
        user = self._user(msg)
        if user:
            body["user"] = user
        body["emotes"] = parse_emotes(msg.tags.get("emotes", ""), len(said), shift) if said else []
        months = _int_tag(msg.tags, "msg-param-cumulative-months") or _int_tag(msg.tags, "msg-param-months")
        viewers = _int_tag(msg.tags, "msg-param-viewerCount")
        if viewers is not None:
            body["viewers"] = viewers
        body = self._common(msg, channel, body)
        if months:
            body["months"] = months  # the notice's own count beats badge-info's (it may lag a month)
        return Outgoing(CHAT_TOPIC, body)

    def _clearmsg(self, msg: Message) -> Outgoing:
        channel = _channel(msg)
        target = msg.tags.get("target-msg-id")
        if not target:
            raise MalformedLine("CLEARMSG without target-msg-id", f"CLEARMSG {' '.join(msg.params)}")
        body: dict[str, Any] = {"id": _clip(target), "channel": channel}
        login = msg.tags.get("login")
        if login:
            body["user"] = _clip(self.display_name(login))
        return Outgoing(b"delete", body)

    def _clearchat(self, msg: Message) -> Outgoing:
        channel = _channel(msg)
        login = (msg.param(1) or "").strip()
        if not login:
            return Outgoing(b"clear", {"channel": channel})
        body: dict[str, Any] = {
            "user": _clip(self.display_name(login)),
            "login": _clip(login.lower()),
            "channel": channel,
        }
        duration = _int_tag(msg.tags, "ban-duration")
        if duration is None:
            return Outgoing(b"ban", body)
        # ``duration_s`` is the bridge's documented field; ``duration`` is the name the daemon's
        # moderation reads (ishowttsd/daemon/moderation.py). Both carry the same seconds until one name wins.
        body["duration_s"] = duration
        return Outgoing(b"timeout", body)
