"""The ``[f5]`` section and the ``[[voices]]`` array of the config file (torch-free).

Everything that decides how F5 samples lives in one :class:`InferenceConfig`, built once here and
passed explicitly to every sampling call: the system this replaces lost its tuning because F5's
own API silently defaults to NFE 32.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ishowttsd.confread import Table
from ishowttsd.engine.f5.batch import FastSettings, parse_fast

ARCHITECTURES = ("F5TTS_v1_Base", "F5TTS_Base", "F5TTS_v1_Small", "F5TTS_Small")
"""Model architectures known by name (f5-tts's bundled ``configs/<name>.yaml``)."""
DEVICES_HINT = "'auto', 'cpu', 'cuda' or 'cuda:N'"
DTYPES = ("auto", "float32", "float16", "bfloat16")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
WARMUP_MODES = ("all", "first", "none")
VOICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

DEFAULT_MODEL_DIR = "F5TTS_v1_Base"
DEFAULT_CHECKPOINT = "model_1250000.safetensors"
DEFAULT_VOCODER_DIR = "vocos-mel-24khz"
FETCH_HINT = "run `ishowtts-models fetch` on a connected box (or `ishowtts-models tiny DIR` for a smoke test)"


@dataclass(frozen=True)
class InferenceConfig:
    """How one chunk is sampled. One instance per engine, passed explicitly to every call.

    Defaults are F5-TTS's own inference defaults except ``nfe_step`` (8 instead of 32): with the
    EPSS/sway schedule 8 steps keep quality and cost a quarter of the DiT time.
    """

    nfe_step: int = 8
    """Number of DiT evaluations (Euler steps) per chunk."""
    cfg_strength: float = 2.0
    """Classifier-free guidance weight; 0 turns CFG off (one forward of batch 1 per step)."""
    sway_sampling_coef: float | None = -1.0
    """Sway sampling of the time grid (F5 paper); None keeps the plain grid."""
    use_epss: bool = True
    """Empirically pruned step schedule where f5-tts defines one for ``nfe_step`` (uniform otherwise)."""
    speed: float = 1.0
    """Speech rate multiplier used to size each chunk's duration (> 1 faster)."""
    cross_fade_s: float = 0.15
    """Seconds of linear cross-fade between consecutive chunks of one line."""
    seed: int | None = None
    """Noise seed: an integer makes every chunk reproducible; None draws a fresh seed per chunk."""


@dataclass(frozen=True)
class F5Settings:
    model: str = "F5TTS_v1_Base"
    """Architecture by name (one of :data:`ARCHITECTURES`)."""
    model_config: Path | None = None
    """An f5-tts training YAML (``model.arch``, ``model.mel_spec``); overrides ``model``."""
    checkpoint: Path | None = None
    """``.safetensors`` (``ema_model.*`` keys) or ``.pt`` (``ema_model_state_dict``)."""
    vocab: Path | None = None
    """``vocab.txt``, one token per line, space first."""
    vocoder: Path | None = None
    """A Vocos directory with ``config.yaml`` and ``pytorch_model.bin``."""
    use_ema: bool = True
    device: str = "auto"
    """'auto' is CUDA when available, else CPU."""
    dtype: str = "auto"
    """DiT precision: 'auto' is float16 on CUDA and float32 on CPU. Vocos always runs in float32."""
    cpu_threads: int = 0
    """torch intra-op threads on the CPU; 0 keeps torch's default (one per core)."""
    compile: str = "none"
    """torch.compile mode for the DiT step, or 'none' (eager)."""
    warmup: str = "all"
    """'all' runs every length bucket once before READY, 'first' only the smallest, 'none' nothing."""
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    target_rms: float = 0.1
    """Reference audio is scaled to this RMS (F5's training loudness); output keeps that level."""
    max_ref_s: float = 12.0
    """Longer reference audio is cut (at its quietest point past half of this) with a warning."""
    max_total_s: float = 22.0
    """Reference plus one chunk's audio stays under this; it sets each voice's chunk size."""
    first_chunk_chars: int = 40
    """A line longer than this may speak a short first chunk (up to a clause or word boundary):
    only when the worker is idle and that first chunk is predicted to come at least
    ``first_chunk_gain_ms`` sooner than the whole line would (see ``first_chunk_gain_ms``)."""
    first_chunk_gain_ms: float = 2.0
    """Split off a short first chunk only when it brings the first audio this much sooner than
    synthesising the line whole, as predicted from the GPU time per shape measured at warm-up
    (docs/PERFORMANCE.md, "The daemon's path"). Every extra chunk carries the reference through
    all steps again (+16 ms of GPU per line on an H200), so under a backlog lines are never split
    for latency, only where they exceed ``max_total_s``. When idle that extra GPU time delays no
    one: the next line cannot play before this one's audio (seconds) has played, long after its
    second chunk is ready. So the bar is only a margin over the per-shape timings' noise
    (~0.5 ms); 0: always split when idle."""
    min_chunk_s: float = 0.6
    """Shortest generated audio per chunk; very short texts get at least this much time."""
    fast: FastSettings = field(default_factory=FastSettings)
    """``[f5.fast]``: the fast GPU inference path (CUDA graphs, compiled blocks, buckets)."""
    bucket_ratio: float | None = None
    """Total frame counts are rounded up to a geometric ladder of this ratio (1 = exact lengths),
    so compiled code sees few shapes; a chunk's speech gets at most this much slower. None: 1.1
    with ``compile``, exact lengths without (eager code gains nothing from fewer shapes)."""

    @property
    def ladder_ratio(self) -> float:
        if self.bucket_ratio is not None:
            return self.bucket_ratio
        return 1.1 if self.compile != "none" else 1.0

    def files(self) -> dict[str, Path | None]:
        """The files F5 needs, by config key (for presence checks and error messages)."""
        return {"checkpoint": self.checkpoint, "vocab": self.vocab, "vocoder": self.vocoder}


@dataclass(frozen=True)
class VoiceSettings:
    """One cloned voice: ``[[voices]]`` in the config file."""

    id: str
    ref_audio: Path
    ref_text: str
    """Exactly what ``ref_audio`` says (required: no speech recognition at run time)."""
    speed: float | None = None
    language: str | None = None
    description: str = ""


def availability(s: F5Settings, voices: tuple[VoiceSettings, ...]) -> tuple[bool, str]:
    """Whether F5 can start here, without importing torch: the packages, the files and at least one
    voice. The string says why not (or what was found), for the engine choice's log line."""
    import importlib.util

    for pkg in ("torch", "f5_tts", "vocos"):
        if importlib.util.find_spec(pkg) is None:
            return False, f"the {pkg} package is not installed"
    for key, path in s.files().items():
        if path is None or not path.exists():
            return False, f"[f5] {key} {path} does not exist"
    assert s.vocoder is not None
    for name in ("config.yaml", "pytorch_model.bin"):
        if not (s.vocoder / name).is_file():
            return False, f"[f5] vocoder {s.vocoder / name} does not exist"
    if not voices:
        return False, "no [[voices]] are configured"
    return True, f"F5 files are present ({s.checkpoint}) with {len(voices)} voice(s)"


def parse_f5(t: Table, state_dir: Path) -> F5Settings:
    """Read ``[f5]``. File paths default to where ``ishowtts-models fetch`` puts them."""
    d = F5Settings()
    models = state_dir / "models"
    model = t.choice("model", d.model, ARCHITECTURES)
    model_config = t.path("model_config", None)
    default_dir = models / DEFAULT_MODEL_DIR
    checkpoint = t.path("checkpoint", default_dir / DEFAULT_CHECKPOINT)
    vocab = t.path("vocab", None)
    if vocab is None and checkpoint is not None:
        vocab = checkpoint.parent / "vocab.txt"  # f5-tts ships vocab.txt beside each checkpoint
    device = t.string("device", d.device)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise t.error("device", f"must be {DEVICES_HINT}, got {device!r}")
    i = InferenceConfig()
    seed = t.opt_int("seed", min=0, max=2**63 - 1)
    sway = t.raw("sway_sampling_coef", i.sway_sampling_coef)
    if sway is not None and (isinstance(sway, bool) or not isinstance(sway, (int, float))):
        raise t.error("sway_sampling_coef", f"expected a number, got {sway!r}")
    inference = InferenceConfig(
        nfe_step=t.integer("nfe_step", i.nfe_step, min=1, max=128),
        cfg_strength=t.number("cfg_strength", i.cfg_strength, min=0.0, max=20.0),
        sway_sampling_coef=None if sway is None else float(sway),
        use_epss=t.flag("use_epss", i.use_epss),
        speed=t.number("speed", i.speed, min=0.25, max=4.0),
        cross_fade_s=t.number("cross_fade_s", i.cross_fade_s, min=0.0, max=1.0),
        seed=seed,
    )
    s = F5Settings(
        model=model,
        model_config=model_config,
        checkpoint=checkpoint,
        vocab=vocab,
        vocoder=t.path("vocoder", models / DEFAULT_VOCODER_DIR),
        use_ema=t.flag("use_ema", d.use_ema),
        device=device,
        dtype=t.choice("dtype", d.dtype, DTYPES),
        cpu_threads=t.integer("cpu_threads", d.cpu_threads, min=0, max=1024),
        compile=t.choice("compile", d.compile, COMPILE_MODES),
        warmup=t.choice("warmup", d.warmup, WARMUP_MODES),
        inference=inference,
        target_rms=t.number("target_rms", d.target_rms, min=0.001, max=1.0),
        max_ref_s=t.number("max_ref_s", d.max_ref_s, min=1.0, max=30.0),
        max_total_s=t.number("max_total_s", d.max_total_s, min=4.0, max=60.0),
        first_chunk_chars=t.integer("first_chunk_chars", d.first_chunk_chars, min=0, max=1000),
        first_chunk_gain_ms=t.number("first_chunk_gain_ms", d.first_chunk_gain_ms, min=0.0, max=10000.0),
        min_chunk_s=t.number("min_chunk_s", d.min_chunk_s, min=0.1, max=5.0),
        bucket_ratio=t.opt_float("bucket_ratio", min=1.0, max=2.0),
        fast=parse_fast(t.table("fast")),
    )
    if s.max_total_s <= s.max_ref_s:
        raise t.error("max_total_s", f"must exceed max_ref_s ({s.max_ref_s}), got {s.max_total_s}")
    t.finish()
    return s


def parse_voices(tables: list[Table]) -> tuple[VoiceSettings, ...]:
    """Read ``[[voices]]``; ids must be unique and ``ref_text`` non-empty."""
    out: list[VoiceSettings] = []
    seen: set[str] = set()
    for t in tables:
        vid = t.string("id", "")
        if not VOICE_ID.fullmatch(vid):
            raise t.error("id", f"expected 1-64 letters, digits, '_', '.', '-' (required), got {vid!r}")
        if vid in seen:
            raise t.error("id", f"voice {vid!r} is defined twice")
        seen.add(vid)
        ref_audio = t.path("ref_audio", None)
        if ref_audio is None:
            raise t.error("ref_audio", "required: the reference recording of this voice (wav/flac/ogg)")
        ref_text = t.string("ref_text", "").strip()
        if not ref_text:
            raise t.error(
                "ref_text", "required: the exact words of ref_audio (no speech recognition at run time)"
            )
        out.append(
            VoiceSettings(
                id=vid,
                ref_audio=ref_audio,
                ref_text=ref_text,
                speed=t.opt_float("speed", min=0.25, max=4.0),
                language=t.opt_str("language"),
                description=t.string("description", ""),
            )
        )
        t.finish()
    return tuple(out)
