"""Import f5-tts's model code without its package ``__init__`` (which imports the trainer stack).

``f5_tts.model.__init__`` pulls in the trainer (wandb, accelerate, datasets: not installed), and
``f5_tts.infer.utils_infer`` pulls in transformers, matplotlib and pydub and may reach the Hub.
Inference only needs ``cfm``, ``backbones.dit``, ``modules`` and ``utils``, so we register empty
package modules for ``f5_tts.model`` / ``f5_tts.model.backbones`` whose ``__path__`` points at
the real folders: submodule imports then resolve normally and the heavy ``__init__`` never runs.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from ishowttsd.engine.base import StartupError

_PACKAGES = ("f5_tts.model", "f5_tts.model.backbones")


def f5_root() -> Path:
    """The installed ``f5_tts`` folder. Raises :class:`StartupError` if f5-tts is not installed."""
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or not spec.submodule_search_locations:
        raise StartupError(
            "the F5 engine needs the f5-tts package (pip install --no-deps f5-tts==1.1.22; see install.sh)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _stub_packages() -> None:
    root = f5_root()
    for name in _PACKAGES:
        mod = sys.modules.get(name)
        if mod is not None:
            continue  # already imported (stub or the real one): either way submodules resolve
        stub = types.ModuleType(name)
        stub.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        stub.__package__ = name
        sys.modules[name] = stub


def modules() -> types.SimpleNamespace:
    """f5-tts's inference classes and helpers: ``CFM``, ``DiT``, ``MelSpec``, ``utils``."""
    _stub_packages()
    import f5_tts.model.backbones.dit as dit
    import f5_tts.model.cfm as cfm
    import f5_tts.model.modules as mods
    import f5_tts.model.utils as utils

    return types.SimpleNamespace(CFM=cfm.CFM, DiT=dit.DiT, MelSpec=mods.MelSpec, utils=utils, cfm=cfm)


def configs_dir() -> Path:
    """f5-tts's bundled model configs (``F5TTS_v1_Base.yaml`` ...)."""
    return f5_root() / "configs"
