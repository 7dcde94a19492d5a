"""The F5-TTS engine: cloned voices on the GPU, from local files only.

This package is the only place that imports torch, f5_tts and vocos, and only from its
``engine``, ``sampler``, ``model``, ``refaudio`` and ``upstream`` modules; ``settings`` and
``text`` are torch-free so the config reader and tools can use them anywhere.
"""

from __future__ import annotations

from ishowttsd.engine.f5.settings import F5Settings, InferenceConfig, VoiceSettings

__all__ = ["F5Settings", "InferenceConfig", "VoiceSettings"]
