"""[f5] and [[voices]] parsing, the engine choice, and the torch-free import boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ishowttsd import config
from ishowttsd.confread import ConfigError
from ishowttsd.engine.f5.settings import InferenceConfig, availability


def _parse(doc: dict[str, Any], file: Path | None = None) -> config.Settings:
    return config.parse(doc, file)


def test_defaults_point_at_fetch_layout_and_nfe_8(tmp_path: Path) -> None:
    s = _parse({"daemon": {"state_dir": str(tmp_path)}})
    assert s.f5.checkpoint == tmp_path / "models" / "F5TTS_v1_Base" / "model_1250000.safetensors"
    assert s.f5.vocab == tmp_path / "models" / "F5TTS_v1_Base" / "vocab.txt"
    assert s.f5.vocoder == tmp_path / "models" / "vocos-mel-24khz"
    assert s.f5.inference == InferenceConfig()
    assert s.f5.inference.nfe_step == 8
    assert s.voices == ()


def test_inference_keys_and_relative_paths(tmp_path: Path) -> None:
    doc = {
        "f5": {"nfe_step": 16, "seed": 7, "sway_sampling_coef": -0.5, "checkpoint": "ckpt/m.pt"},
        "voices": [{"id": "me", "ref_audio": "me.wav", "ref_text": "Hi there.", "speed": 1.2}],
    }
    s = _parse(doc, tmp_path / "x.toml")
    assert (s.f5.inference.nfe_step, s.f5.inference.seed, s.f5.inference.sway_sampling_coef) == (16, 7, -0.5)
    assert s.f5.checkpoint == tmp_path / "ckpt" / "m.pt"
    assert s.f5.vocab == tmp_path / "ckpt" / "vocab.txt"
    assert s.voices[0].ref_audio == tmp_path / "me.wav" and s.voices[0].speed == 1.2


@pytest.mark.parametrize(
    ("doc", "key", "words"),
    [
        ({"f5": {"nfe_step": 0}}, "f5.nfe_step", ">= 1"),
        ({"f5": {"model": "F5TTS_Huge"}}, "f5.model", "must be one of"),
        ({"f5": {"device": "tpu"}}, "f5.device", "cuda"),
        ({"f5": {"nfe_steps": 8}}, "f5.nfe_steps", "did you mean 'nfe_step'"),
        ({"f5": {"sway_sampling_coef": "x"}}, "f5.sway_sampling_coef", "number"),
        ({"voices": [{"id": "a", "ref_audio": "a.wav"}]}, "voices[0].ref_text", "no speech recognition"),
        ({"voices": [{"id": "a", "ref_text": "x"}]}, "voices[0].ref_audio", "required"),
        ({"voices": [{"id": "bad id", "ref_audio": "a", "ref_text": "x"}]}, "voices[0].id", "letters"),
        (
            {
                "voices": [
                    {"id": "a", "ref_audio": "a", "ref_text": "x"},
                    {"id": "a", "ref_audio": "b", "ref_text": "y"},
                ]
            },
            "voices[1].id",
            "twice",
        ),
    ],
)
def test_errors_name_the_key(doc: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        _parse(doc, Path("/etc/x.toml"))
    assert e.value.key == key
    assert words in e.value.problem
    assert "/etc/x.toml" in str(e.value)


def test_availability_says_why(tmp_path: Path) -> None:
    s = _parse({"daemon": {"state_dir": str(tmp_path)}})
    ok, why = availability(s.f5, s.voices)
    assert not ok and str(s.f5.checkpoint) in why
    for p in (s.f5.checkpoint, s.f5.vocab, s.f5.vocoder / "config.yaml", s.f5.vocoder / "pytorch_model.bin"):
        assert p is not None
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    ok, why = availability(s.f5, s.voices)
    assert not ok and "[[voices]]" in why
    s = _parse(
        {"daemon": {"state_dir": str(tmp_path)}, "voices": [{"id": "a", "ref_audio": "a", "ref_text": "x"}]}
    )
    assert availability(s.f5, s.voices)[0]


def test_config_and_text_modules_do_not_import_torch() -> None:
    code = (
        "import sys, ishowttsd.config, ishowttsd.engine, ishowttsd.engine.f5.settings, ishowttsd.engine.f5.text, "
        "ishowttsd.engine.f5.stream, ishowttsd.engine.f5.fetch\n"
        "from ishowttsd.engine import create_engine\n"
        "create_engine(*ishowttsd.config.engine_sections(ishowttsd.config.load(None)))\n"
        "bad = [m for m in ('torch', 'f5_tts', 'vocos') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
