"""The F5 engine on a tiny random checkpoint: loading, voices, streamed synthesis, failures."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from f5tiny import f5_doc, tiny_dir

from ishowttsd import config
from ishowttsd.engine.base import AudioChunk, CancelToken, StartupError, UnknownVoice
from ishowttsd.engine.f5.engine import F5Engine, bucket_ladder

LINE = "Hello chat, thanks for the follow! Today we are trying something new. Stay tuned for more fun."


def make(doc: dict[str, Any], tmp: Path | None = None) -> F5Engine:
    file = (tmp / "ishowtts.toml") if tmp else None
    if file is not None:
        import tomlkit

        file.write_text(tomlkit.dumps(doc))
    return F5Engine(*config.f5_sections(config.parse(doc, file)))


def loaded(**f5: Any) -> F5Engine:
    e = make(f5_doc(**{"seed": 42, "warmup": "none", **f5}))
    e.load(lambda _m: None)
    return e


@pytest.fixture(scope="module")
def engine() -> F5Engine:
    return loaded()


def run(e: F5Engine, text: str, voice: str | None = None) -> list[AudioChunk]:
    return list(e.synthesize(text, voice, CancelToken()))


def test_streams_chunks_in_order_with_timings(engine: F5Engine) -> None:
    plan = engine.plan(LINE)
    assert len(plan) >= 2 and len(plan[0][0]) <= 40  # a short first chunk
    chunks = run(engine, LINE)
    assert [c.text for c in chunks] == [t for t, _ in plan]
    for c in chunks:
        assert c.rate == 24000 and c.pcm.dtype == np.int16 and c.pcm.ndim == 1
        assert set(c.timings) == {"text", "model", "vocoder", "total"}
        assert all(v >= 0 for v in c.timings.values())
        assert c.timings["total"] >= c.timings["model"] + c.timings["vocoder"]
        assert np.abs(c.pcm).max() > 100  # not silence
    # durations follow the plan: every chunk's frames minus the reference, joined by cross-fades
    ref = engine._voices["tiny"].ref_frames
    total = sum((f - ref) * 256 for _, f in plan) - (len(plan) - 1) * int(0.15 * 24000)
    assert abs(sum(len(c.pcm) for c in chunks) - total) <= 256 * len(plan)


def test_seeded_synthesis_is_reproducible_and_chunkwise_equal_to_a_direct_join(engine: F5Engine) -> None:
    a = np.concatenate([c.pcm for c in run(engine, LINE)])
    b = np.concatenate([c.pcm for c in run(engine, LINE)])
    assert np.array_equal(a, b)
    # Seams: the join is no rougher than the audio itself (no gap, no click).
    chunks = run(engine, LINE)
    edges = np.cumsum([len(c.pcm) for c in chunks])[:-1]
    jumps = np.abs(np.diff(a.astype(np.int32)))
    typical = np.percentile(jumps, 99.9)
    for e in edges:
        assert jumps[e - 2 : e + 2].max() <= typical
    # no gap: no run of digital silence anywhere near a seam
    for e in edges:
        assert np.abs(a[e - 240 : e + 240]).max() > 0


def test_first_chunk_only_when_idle_and_worth_it() -> None:
    """A short first chunk is split off only for a line spoken alone (idle worker) whose first
    audio it brings at least ``first_chunk_gain_ms`` sooner (predicted GPU time per shape: the
    warm-up's measurement on CUDA, else the fallback cost model); a batch (backlog) never splits
    for latency, only at the length budget."""
    doc = f5_doc(seed=42, warmup="none")
    doc["f5"]["fast"] = {"on_cpu": True, "compile": False, "cuda_graph": False}
    always = make(json_copy(doc, first_chunk_gain_ms=0.0))
    always.load(lambda _m: None)
    idle, backlog = always.plan(LINE), always.plan(LINE, idle=False)
    assert len(idle) == len(backlog) + 1 and len(idle[0][0]) <= 40
    assert " ".join(c for c, _ in idle) == " ".join(c for c, _ in backlog)
    never = make(json_copy(doc, first_chunk_gain_ms=1000.0))
    never.load(lambda _m: None)
    assert never.plan(LINE) == never.plan(LINE, idle=False) == backlog
    # the fallback cost model: the bench line's shape against its first chunk's, fp16 on an H200
    assert never.predict_ms(1008) - never.predict_ms(592) == pytest.approx(0.0148 * 416)


def json_copy(doc: dict[str, Any], **f5: Any) -> dict[str, Any]:
    import copy

    d = copy.deepcopy(doc)
    d["f5"].update(f5)
    return d


def test_cancel_stops_between_chunks(engine: F5Engine) -> None:
    tok = CancelToken()
    out = []
    for c in engine.synthesize(LINE, None, tok):
        out.append(c)
        tok.cancel("skip")
    assert len(out) == 1


def test_unknown_voice_and_default(engine: F5Engine) -> None:
    assert engine.default_voice() == "tiny"
    assert [v.id for v in engine.voices()] == ["tiny"]
    assert engine.voices()[0].sample_rate == 24000 and engine.voices()[0].engine == "f5"
    with pytest.raises(UnknownVoice):
        run(engine, "hi", "nobody")


def test_pt_checkpoint_gives_the_same_audio_as_safetensors() -> None:
    d = tiny_dir()
    a = np.concatenate([c.pcm for c in run(loaded(), "Same weights, same seed.")])
    b = np.concatenate(
        [c.pcm for c in run(loaded(checkpoint=str(d / "model_tiny.pt")), "Same weights, same seed.")]
    )
    assert np.array_equal(a, b)


def test_missing_checkpoint_names_path_and_fetch_command(tmp_path: Path) -> None:
    e = make(f5_doc(checkpoint=str(tmp_path / "nope.safetensors")))
    with pytest.raises(StartupError) as ex:
        e.load(lambda _m: None)
    assert str(tmp_path / "nope.safetensors") in str(ex.value)
    assert "ishowtts-models fetch" in str(ex.value)


def test_missing_vocoder_file_names_it(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    shutil.copytree(tiny_dir() / "vocos", voc)
    (voc / "pytorch_model.bin").unlink()
    with pytest.raises(StartupError, match=str(voc / "pytorch_model.bin")):
        make(f5_doc(vocoder=str(voc))).load(lambda _m: None)


def test_architecture_mismatch_is_a_startup_error() -> None:
    # The tiny checkpoint is not an F5TTS_v1_Small model.
    doc = f5_doc()
    del doc["f5"]["model_config"]
    doc["f5"]["model"] = "F5TTS_v1_Small"
    with pytest.raises(StartupError) as ex:
        make(doc).load(lambda _m: None)
    assert "does not match" in str(ex.value) and "model_tiny.safetensors" in str(ex.value)
    assert "ishowtts-models fetch" in str(ex.value)


def test_vocab_mismatch_is_a_startup_error(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(" \na\nb\n")
    with pytest.raises(StartupError, match="vocab"):
        make(f5_doc(vocab=str(vocab))).load(lambda _m: None)


def test_broken_voice_fails_startup_with_its_key(tmp_path: Path) -> None:
    doc = f5_doc()
    doc["voices"][0]["ref_audio"] = str(tmp_path / "missing.wav")
    with pytest.raises(StartupError, match=r"voices\[0\]\.ref_audio.*missing\.wav"):
        make(doc).load(lambda _m: None)


@pytest.mark.parametrize(("seconds", "amp", "words"), [(3.0, 0.0, "silent"), (0.2, 0.3, "under 0.5 s")])
def test_unusable_reference_audio_fails_startup(
    tmp_path: Path, seconds: float, amp: float, words: str
) -> None:
    p = tmp_path / "r.wav"
    t = np.arange(int(seconds * 24000)) / 24000
    sf.write(
        p, np.concatenate([(amp * np.sin(2 * np.pi * 200 * t)), np.zeros(24000)]).astype(np.float32), 24000
    )
    doc = f5_doc()
    doc["voices"][0]["ref_audio"] = str(p)
    with pytest.raises(StartupError, match=rf"voices\[0\]\.ref_audio: .*r\.wav .*{words}"):
        make(doc).load(lambda _m: None)


def test_reference_audio_is_mono_resampled_trimmed_and_cached_by_content(tmp_path: Path) -> None:
    rate = 44100
    t = np.arange(int(15 * rate)) / rate
    x = (0.05 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    stereo = np.stack([x, x], axis=1)
    a, b = tmp_path / "a.wav", tmp_path / "b.flac"
    sf.write(a, stereo, rate)
    sf.write(b, stereo, rate, subtype="PCM_24")
    doc = f5_doc()
    doc["voices"] = [
        {"id": "long", "ref_audio": str(a), "ref_text": "A long reference."},
        {"id": "copy", "ref_audio": str(a), "ref_text": "The same file again."},
        {"id": "flac", "ref_audio": str(b), "ref_text": "Same sound, other file."},
    ]
    e = make(doc)
    e.load(lambda _m: None)
    long, copy = e._voices["long"], e._voices["copy"]
    # cut near max_ref_s (12 s), within its last 2 s: not at half of it, as it once was
    assert long.ref.trimmed and 12.0 - 2.0 <= long.ref.seconds <= 12.0 + 0.06, long.ref.seconds
    assert long.ref.mel.shape[2] == 100
    assert copy.ref is long.ref  # same bytes -> one cached mel
    assert e._voices["flac"].ref.key != long.ref.key  # different bytes -> its own entry
    # loudness-normalised: the mel of the (quiet) input corresponds to target_rms
    assert run(e, "Quick test.", "flac")


def test_reload_voices_picks_up_changes_and_survives_a_broken_entry(tmp_path: Path) -> None:
    doc = f5_doc(warmup="none")
    e = make(doc, tmp_path)
    e.load(lambda _m: None)
    import tomlkit

    doc["voices"].append({"id": "second", "ref_audio": doc["voices"][0]["ref_audio"], "ref_text": "Again."})
    doc["voices"].append({"id": "broken", "ref_audio": str(tmp_path / "gone.wav"), "ref_text": "x"})
    (tmp_path / "ishowtts.toml").write_text(tomlkit.dumps(doc))
    e.reload_voices(config.load(tmp_path / "ishowtts.toml").voices)
    assert [v.id for v in e.voices()] == ["tiny", "second"]
    assert run(e, "Hi.", "second")
    e.reload_voices(())  # nothing usable: the loaded voices stay
    assert [v.id for v in e.voices()] == ["tiny", "second"]


def test_warmup_runs_every_bucket_with_progress() -> None:
    e = make(f5_doc(warmup="all", max_ref_s=4.0, max_total_s=8.0, bucket_ratio=1.3))
    e.load(lambda _m: None)
    seen: list[str] = []
    e.warmup(seen.append)
    shapes = e.warmup_shapes()
    assert len(seen) == len(shapes) >= 3
    assert all("warming up F5" in s for s in seen)
    # every chunk the daemon can make lands on a warmed shape
    cjk = "今天天气很好，我们一起去公园散步吧。" * 12
    for line in ("Hi!", "A medium line of chat text, with a clause.", "word " * 60, cjk):
        for _, frames in e.plan(line):
            assert frames in shapes


def test_bucket_ladder_is_geometric_and_quantised() -> None:
    lad = bucket_ladder(1.1, 2000)
    assert lad[-1] >= 2000 and all(b % 16 == 0 for b in lad)
    assert all(1.0 < b2 / b1 <= 1.1 + 16 / b1 for b1, b2 in itertools.pairwise(lad))


def test_sampling_leaves_the_global_rng_alone(engine: F5Engine) -> None:
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    run(engine, "Does sampling touch the global RNG?")
    assert torch.equal(torch.rand(1), before)


@pytest.mark.slow
def test_compiled_step_matches_eager_and_caches_kernels_in_cache_dir(tmp_path: Path) -> None:
    """torch.compile on the CPU (inductor, C++): same audio as eager; kernels in [daemon] cache_dir."""
    import subprocess
    import sys

    import tomlkit

    doc = f5_doc(compile="default", warmup="first", seed=3)
    doc["daemon"] = {"cache_dir": str(tmp_path / "cache")}
    cfg = tmp_path / "c.toml"
    cfg.write_text(tomlkit.dumps(doc))
    code = (
        "import sys, numpy as np\nfrom pathlib import Path\nfrom ishowttsd import config\n"
        "from ishowttsd.engine.f5.engine import F5Engine\nfrom ishowttsd.engine.base import CancelToken\n"
        "s = config.load(Path(sys.argv[1]))\ne = F5Engine(*config.f5_sections(s))\ne.load(lambda m: None)\ne.warmup(lambda m: None)\n"
        "pcm = np.concatenate([c.pcm for c in e.synthesize('Hi chat!', None, CancelToken())])\n"
        "np.save(sys.argv[2], pcm)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR",)}
    r = subprocess.run(
        [sys.executable, "-c", code, str(cfg), str(tmp_path / "c.npy")],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    compiled = np.load(tmp_path / "c.npy").astype(np.float64)
    eager = np.concatenate([c.pcm for c in run(loaded(seed=3, bucket_ratio=1.1), "Hi chat!")]).astype(
        np.float64
    )
    assert len(compiled) == len(eager)
    assert np.linalg.norm(compiled - eager) / np.linalg.norm(eager) < 1e-3
    assert any((tmp_path / "cache" / "inductor").rglob("*")), "no inductor artefacts in the cache dir"


def test_half_precision_dit_keeps_vocos_in_float32() -> None:
    e = loaded(dtype="bfloat16")
    m = e._m
    assert m is not None
    assert next(m.dit.parameters()).dtype == torch.bfloat16
    assert e._voices["tiny"].ref.mel.dtype == torch.bfloat16
    assert {p.dtype for p in m.vocoder.parameters()} == {torch.float32}
    full = np.concatenate([c.pcm for c in run(loaded(), "Precision check.")]).astype(np.float64)
    half = np.concatenate([c.pcm for c in run(e, "Precision check.")]).astype(np.float64)
    assert len(half) == len(full) and np.abs(half).max() > 100
    # bf16 rounding through 8 steps: 0.6 % and 6 % measured on two lengths; a wrong path is ~100 %
    assert np.linalg.norm(half - full) / np.linalg.norm(full) < 0.25


def test_compile_mode_allows_one_graph_per_bucket() -> None:
    """dynamo stops recompiling after 8 shapes by default (measured: 12 buckets -> 8 graphs, the
    rest silently eager); the engine raises the limit to cover its whole ladder."""
    import torch._dynamo.config as dynamo_config

    e = loaded(compile="default")  # compiles lazily: loading costs nothing extra
    assert len(e._ladder) > 8
    assert dynamo_config.recompile_limit >= len(e._ladder)


def test_warmup_runs_each_shape_exactly_with_voices_of_different_lengths(tmp_path: Path) -> None:
    from ishowttsd.engine.f5 import sampler

    long_ref = tmp_path / "long.wav"
    x, rate = sf.read(tiny_dir() / "ref.wav", dtype="float32")
    sf.write(long_ref, np.concatenate([x, x]), rate)  # ~6 s
    doc = f5_doc(warmup="all", max_ref_s=7.0, max_total_s=8.0, bucket_ratio=1.5)
    doc["voices"] = [
        {
            "id": "long",
            "ref_audio": str(long_ref),
            "ref_text": "Twice the tiny voice, one after the other.",
        },
        *doc["voices"],
    ]
    e = make(doc)
    e.load(lambda _m: None)
    seen: set[int] = set()

    def spy(x: torch.Tensor, t: torch.Tensor, c: sampler.Conditioning) -> torch.Tensor:
        seen.add(int(x.shape[1]))
        return sampler.velocity(x, t, c)

    e._step = spy  # the engine's step hook (what a compiled or graphed step plugs into)
    e.warmup(lambda _m: None)
    assert seen == set(e.warmup_shapes())
    assert min(seen) < e._voices["long"].ref_frames  # some shapes only fit the short voice
