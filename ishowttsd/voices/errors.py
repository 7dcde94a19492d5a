"""The one error type of the voice studio."""

from __future__ import annotations

CODES = (
    "not_audio",
    "too_short",
    "too_large",
    "too_long",
    "silent",
    "bad_id",
    "exists",
    "bad_text",
    "unknown_voice",
)
"""Stable codes (the HTTP API answers each with 400 and the message; ``unknown_voice`` with 404)."""


class VoiceError(ValueError):
    """An upload or request that cannot become a voice. ``message`` is for a person; ``code`` for code."""

    def __init__(self, code: str, message: str) -> None:
        assert code in CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
