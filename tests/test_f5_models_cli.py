"""``ishowtts-models``: the tiny model writer and fetch's verification (no network here)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ishowttsd import config
from ishowttsd.engine.f5 import fetch as f5fetch
from ishowttsd.engine.f5.settings import availability

REPO = Path(__file__).resolve().parent.parent


def test_tiny_writes_f5_layout_and_a_working_config(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ishowttsd.cli.models", "tiny", str(tmp_path / "t")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    d = tmp_path / "t"
    assert r.stdout.strip() == str(d / "f5.toml")
    s = config.load(d / "f5.toml")
    assert s.f5.checkpoint == d / "model_tiny.safetensors"
    assert availability(s.f5, s.voices)[0]
    import torch
    from safetensors.torch import load_file

    st = load_file(str(d / "model_tiny.safetensors"))
    assert "initted" in st and "step" in st
    assert all(k.startswith("ema_model.") for k in st if k not in ("initted", "step"))
    pt = torch.load(d / "model_tiny.pt", weights_only=True)
    assert set(pt) == {"ema_model_state_dict"} and set(pt["ema_model_state_dict"]) == set(st)
    # the layers DiT.initialize_weights zeroes were re-randomised
    for k in ("ema_model.transformer.proj_out.weight", "ema_model.transformer.norm_out.linear.weight"):
        assert st[k].abs().sum() > 0
    assert (d / "vocos" / "config.yaml").is_file() and (d / "vocos" / "pytorch_model.bin").is_file()


def _asset(tmp: Path, name: str, data: bytes, good: bool = True) -> f5fetch.Asset:
    digest = hashlib.sha256(data if good else data + b"!").hexdigest()
    return f5fetch.Asset("o/r", "0" * 40, name, f"dir/{name}", len(data), digest)


def test_verify_checks_size_and_sha256(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"hello")
    f5fetch.verify(p, 5, hashlib.sha256(b"hello").hexdigest())
    with pytest.raises(f5fetch.FetchError, match="size 5 bytes, expected 6"):
        f5fetch.verify(p, 6, None)
    with pytest.raises(f5fetch.FetchError, match=r"f\.bin: sha256 .* expected 00"):
        f5fetch.verify(p, 5, "00" * 32)
    with pytest.raises(f5fetch.FetchError, match="missing"):
        f5fetch.verify(tmp_path / "nope", None, None)


def test_fetch_installs_verified_files_and_rejects_corrupt_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = {"a.bin": b"A" * 100, "b.yaml": b"b: 1\n"}
    assets = tuple(_asset(tmp_path, n, d) for n, d in payload.items())
    monkeypatch.setattr(f5fetch, "ASSETS", assets)
    calls: list[str] = []

    def fake_download(a: f5fetch.Asset, tmp: Path) -> Path:  # stands in for the Hub (no network here)
        calls.append(a.filename)
        p = tmp / a.repo / a.filename
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(payload[a.filename])
        return p

    models = tmp_path / "models"
    lines: list[str] = []
    f5fetch.fetch(models, fake_download, lines.append)
    assert (models / "dir" / "a.bin").read_bytes() == payload["a.bin"]
    assert (models / "F5TTS_v1_Base" / "vocab.txt").is_file()  # the pinned, bundled vocab
    assert calls == ["a.bin", "b.yaml"] and not (models / ".partial").exists()
    f5fetch.fetch(models, fake_download, lines.append)  # second run: everything verified in place
    assert calls == ["a.bin", "b.yaml"]

    bad = (_asset(tmp_path, "a.bin", payload["a.bin"], good=False),)
    monkeypatch.setattr(f5fetch, "ASSETS", bad)
    (models / "dir" / "a.bin").unlink()
    with pytest.raises(f5fetch.FetchError, match="sha256"):
        f5fetch.fetch(models, fake_download, lines.append)
    assert not (models / "dir" / "a.bin").exists()  # a corrupt download never lands in place


def test_pinned_assets_are_complete() -> None:
    names = {a.dest for a in f5fetch.ASSETS}
    assert names == {
        "F5TTS_v1_Base/model_1250000.safetensors",
        "vocos-mel-24khz/config.yaml",
        "vocos-mel-24khz/pytorch_model.bin",
    }
    assert all(len(a.revision) == 40 for a in f5fetch.ASSETS)
    weights = [a for a in f5fetch.ASSETS if a.size > 1_000_000]
    assert weights and all(a.sha256 and len(a.sha256) == 64 for a in weights)
    assert hashlib.sha256(f5fetch.bundled_vocab().read_bytes()).hexdigest() == f5fetch.VOCAB_SHA256


def test_fidelity_script_passes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "fid.json"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "f5_fidelity.py"),
            "--tiny",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--repeat",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["pass"] and rep["rel_err_generated"] < 1e-5 and rep["nfe_step"] == 8
    assert rep["output_vs_noise_rel"] > 0.1
