"""``ishowtts-models fetch``: F5TTS_v1_Base + Vocos into the state directory, verified (torch-free).

Files are pinned by repository, revision and path, and checked against sizes and SHA-256 sums
recorded here, so a moved tag or a corrupted download is an error rather than a strange voice.
The sums of the checkpoint and the Vocos weights come from a public manifest of these exact
revisions; the vocab is the one f5-tts 1.1.22 itself pairs with F5TTS_v1_Base (its bundled
``infer/examples/vocab.txt``), copied from the installed package; the small Vocos ``config.yaml``
is pinned by revision and size, and validated when the engine loads it.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ishowttsd.engine.f5.settings import DEFAULT_CHECKPOINT, DEFAULT_MODEL_DIR, DEFAULT_VOCODER_DIR

F5_REPO = "SWivid/F5-TTS"
F5_REVISION = "84e5a410d9cead4de2f847e7c9369a6440bdfaca"
VOCOS_REPO = "charactr/vocos-mel-24khz"
VOCOS_REVISION = "0feb3fdd929bcd6649e0e7c5a688cf7dd012ef21"
VOCAB_SHA256 = "4e173934be56219eb38759fa8d4c48132d5a34454f0c44abce409bcf6a07ec46"


@dataclass(frozen=True)
class Asset:
    repo: str
    revision: str
    filename: str
    """Path inside the repository."""
    dest: str
    """Path under ``<state>/models``."""
    size: int
    sha256: str | None


ASSETS = (
    Asset(
        F5_REPO,
        F5_REVISION,
        f"{DEFAULT_MODEL_DIR}/{DEFAULT_CHECKPOINT}",
        f"{DEFAULT_MODEL_DIR}/{DEFAULT_CHECKPOINT}",
        1348435761,
        "670900fd14e6c458b95da6e9ed317cdb20dbaf7a1c02ac06a05475a9d32b6a38",
    ),
    Asset(VOCOS_REPO, VOCOS_REVISION, "config.yaml", f"{DEFAULT_VOCODER_DIR}/config.yaml", 461, None),
    Asset(
        VOCOS_REPO,
        VOCOS_REVISION,
        "pytorch_model.bin",
        f"{DEFAULT_VOCODER_DIR}/pytorch_model.bin",
        54365991,
        "97ec976ad1fd67a33ab2682d29c0ac7df85234fae875aefcc5fb215681a91b2a",
    ),
)


class FetchError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, size: int | None, sha256: str | None) -> None:
    """Raise :class:`FetchError` naming ``path`` unless it has the expected size and hash."""
    if not path.is_file():
        raise FetchError(f"{path}: missing")
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise FetchError(f"{path}: size {actual} bytes, expected {size}")
    if sha256 is not None:
        digest = sha256_file(path)
        if digest != sha256:
            raise FetchError(f"{path}: sha256 {digest}, expected {sha256}")


Downloader = Callable[[Asset, Path], Path]
"""Fetches one asset into a folder and returns the downloaded file (huggingface_hub by default)."""


def hub_download(asset: Asset, tmp: Path) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(asset.repo, asset.filename, revision=asset.revision, local_dir=str(tmp / asset.repo))
    )


def fetch(models_dir: Path, download: Downloader = hub_download, log: Callable[[str], None] = print) -> None:
    """Download and verify every asset into ``models_dir``; files already there and valid are kept.
    A file lands at its final path only after it verified (downloads go to ``models_dir/.partial``)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / ".partial"
    for a in ASSETS:
        dest = models_dir / a.dest
        try:
            verify(dest, a.size, a.sha256)
            log(f"ok      {dest}")
            continue
        except FetchError:
            pass
        log(f"fetch   {a.repo}@{a.revision[:10]}:{a.filename}")
        got = download(a, tmp)
        verify(got, a.size, a.sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(got), dest)
        log(f"ok      {dest}")
    vocab = models_dir / DEFAULT_MODEL_DIR / "vocab.txt"
    src = bundled_vocab()
    verify(src, None, VOCAB_SHA256)
    vocab.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, vocab)
    log(f"ok      {vocab}")
    shutil.rmtree(tmp, ignore_errors=True)


def bundled_vocab() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("f5_tts")
    if spec is None or not spec.submodule_search_locations:
        raise FetchError("f5-tts is not installed (its vocab.txt is the F5TTS_v1_Base vocab)")
    return Path(next(iter(spec.submodule_search_locations))) / "infer" / "examples" / "vocab.txt"
