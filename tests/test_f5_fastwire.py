"""The engine's fast-path wiring ([f5.fast]): on CPU with ``on_cpu`` the daemon's engine runs the
fast pipeline (no graphs, no compile) and must speak like the reference sampler."""

from __future__ import annotations

from typing import Any

import numpy as np
from f5tiny import f5_doc

from ishowttsd import config
from ishowttsd.engine.base import CancelToken
from ishowttsd.engine.f5.engine import F5Engine

LINE = "Hello chat, thanks for the follow! Today we are trying something new."


def _engine(**fast: Any) -> F5Engine:
    # first_chunk_gain_ms = 0: the fast path splits off a first chunk whenever the reference
    # sampler does (it always does), so the two speak the same chunks
    doc = f5_doc(seed=7, warmup="none", first_chunk_gain_ms=0.0)
    doc["f5"]["fast"] = fast
    e = F5Engine(*config.f5_sections(config.parse(doc, None)))
    e.load(lambda _m: None)
    return e


def _audio(e: F5Engine) -> np.ndarray:
    return np.concatenate([c.pcm for c in e.synthesize(LINE, None, CancelToken())]).astype(np.int32)


def test_fast_path_off_on_cpu_by_default_and_on_when_asked() -> None:
    assert _engine()._fast is None
    assert _engine(on_cpu=True, compile=False, cuda_graph=False)._fast is not None


def test_fast_path_speaks_like_the_reference_sampler() -> None:
    ref = _audio(_engine())
    fast_engine = _engine(on_cpu=True, compile=False, cuda_graph=False)
    got = _audio(fast_engine)
    assert got.shape == ref.shape
    # fp32 on both sides: the same arithmetic up to reassociation (int16 rounding: 1 LSB or so)
    assert np.abs(got - ref).max() <= 4, np.abs(got - ref).max()
    assert np.abs(ref).max() > 100
    chunks = list(fast_engine.synthesize(LINE, None, CancelToken()))
    assert all({"text", "model", "vocoder", "total"} <= set(c.timings) for c in chunks)


def test_fast_settings_errors_name_the_key() -> None:
    import pytest

    doc = f5_doc()
    doc["f5"]["fast"] = {"dtype": "fp4"}
    with pytest.raises(config.ConfigError) as e:
        config.parse(doc, None)
    assert e.value.key == "f5.fast.dtype"


def test_fast_stream_stops_at_the_chunk_boundary_after_a_cancel() -> None:
    """The fast stream queues chunk i+1 before handing out chunk i; a cancel between them still
    ends the job there (the queued work is dropped), and a later job speaks normally."""
    e = _engine(on_cpu=True, compile=False, cuda_graph=False)
    whole = list(e.synthesize(LINE, None, CancelToken()))
    assert len(whole) >= 2
    cancel = CancelToken()
    stream = e.synthesize(LINE, None, cancel)
    first = next(stream)
    cancel.cancel("stop")
    assert list(stream) == []
    assert np.array_equal(first.pcm, whole[0].pcm)
    again = list(e.synthesize(LINE, None, CancelToken()))
    assert [c.pcm.tobytes() for c in again] == [c.pcm.tobytes() for c in whole]
