"""The stock f5-tts inference path, exactly as f5-tts runs it, for the baseline.

On a machine where ``f5_tts.infer.utils_infer`` imports (it needs transformers, matplotlib and
pydub; the GPU image has them), the baseline *is* ``infer_batch_process`` -- f5-tts's own
function behind ``infer_process`` and the socket server. Where it does not import (our CPU
venv has no transformers), the same steps run through the pieces it calls (``CFM.sample`` with
f5's text conversion and duration rule, then ``Vocos.decode``); the record says which ran.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ishowttsd.bench import workload
from ishowttsd.engine.f5 import upstream


def load_utils_infer() -> tuple[Any | None, str]:
    """f5's ``utils_infer`` module (or None) and a note on what the stock path is."""
    m = upstream.modules()
    pkg = sys.modules["f5_tts.model"]
    if not hasattr(pkg, "CFM"):
        setattr(pkg, "CFM", m.CFM)  # noqa: B010  (utils_infer: `from f5_tts.model import CFM`; the stub lacks it)
    try:
        import f5_tts.infer.utils_infer as ui
    except Exception as e:  # ImportError, or a transitive failure inside transformers
        return None, f"CFM.sample + Vocos.decode (utils_infer not importable: {type(e).__name__}: {e})"
    return ui, "f5_tts.infer.utils_infer.infer_batch_process"


def make_stock(cfm: Any, vocoder: Any, device: torch.device) -> tuple[Callable[..., npt.NDArray[Any]], str]:
    """A callable ``(audio [1, n] tensor, ref_text, gen_text, nfe) -> waveform`` and its description."""
    ui, what = load_utils_infer()
    if ui is not None:

        def run_ui(audio: torch.Tensor, ref_text: str, gen_text: str, nfe: int) -> npt.NDArray[Any]:
            wave, _sr, _spec = next(
                ui.infer_batch_process(
                    (audio, workload.SAMPLE_RATE),
                    ref_text,
                    [gen_text],
                    cfm,
                    vocoder,
                    nfe_step=nfe,
                    cfg_strength=2.0,
                    sway_sampling_coef=-1.0,
                    speed=1.0,
                    device=str(device),
                    progress=None,
                )
            )
            return np.asarray(wave)

        return run_ui, what

    utils = upstream.modules().utils

    def run_pieces(audio: torch.Tensor, ref_text: str, gen_text: str, nfe: int) -> npt.NDArray[Any]:
        # infer_batch_process's _infer_basic, step for step (RMS is already at target here).
        ref_text = workload.stock_ref_text(ref_text)
        text_list = utils.convert_char_to_pinyin([ref_text + gen_text])
        ref_len = audio.shape[-1] // workload.HOP
        duration = workload.duration_frames(audio.shape[-1], ref_text, gen_text)
        with torch.inference_mode():
            mel, _ = cfm.sample(
                cond=audio.to(device), text=text_list, duration=duration, steps=nfe,
                cfg_strength=2.0, sway_sampling_coef=-1.0,
            )  # fmt: skip
            mel = mel.to(torch.float32)[:, ref_len:, :].permute(0, 2, 1)
            wave = vocoder.decode(mel)
        return np.asarray(wave.squeeze().cpu().numpy())

    return run_pieces, what
