"""Stream-chat intake: the ``[chat]`` moderation pipeline (pure code; no sockets, no engine)."""

from __future__ import annotations

from ishowttsd.chat.pipeline import DROP_REASONS, Accept, Clock, Decision, Drop, Note, Pipeline, SystemClock
from ishowttsd.chat.settings import BlockRule, ChatSettings, ReplaceRule, parse_chat
from ishowttsd.chat.state import ChatState

__all__ = [
    "DROP_REASONS",
    "Accept",
    "BlockRule",
    "ChatSettings",
    "ChatState",
    "Clock",
    "Decision",
    "Drop",
    "Note",
    "Pipeline",
    "ReplaceRule",
    "SystemClock",
    "parse_chat",
]
