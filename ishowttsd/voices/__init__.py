"""Cloned voices made from an upload or a recording: preparation and storage (the voice studio).

- :mod:`.prepare` turns uploaded bytes (wav, mp3, ogg, webm/opus, m4a) into a clean reference
  clip: mono 24 kHz, edge silence trimmed, cut to at most 12 s at a pause, loudness normalised.
- :mod:`.transcribe` writes the clip's words with the bundled Whisper when the user gave none.
- :mod:`.store` keeps voices under ``<state_dir>/voices/<id>/`` (written whole or not at all) and
  merges them with the configured ``[[voices]]`` for the engine.

Everything here is plain code without sockets; every way an upload can be wrong is a
:class:`VoiceError` whose message is meant for the person who uploaded it.
"""

from __future__ import annotations

from ishowttsd.voices.errors import VoiceError

__all__ = ["VoiceError"]
