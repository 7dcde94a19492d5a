"""Batching policy of the fast path (torch-free): length groups and the ``[f5.fast]`` settings."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ishowttsd.confread import ConfigError, Table
from ishowttsd.engine.f5.batch import (
    SLOT_SIZES,
    FastSettings,
    group_by_length,
    parse_fast,
    slots_for,
)


def test_slots_are_captured_sizes() -> None:
    assert [slots_for(n) for n in (1, 2, 3, 5, 9, 16)] == [1, 2, 4, 8, 16, 16]
    with pytest.raises(ValueError):
        slots_for(SLOT_SIZES[-1] + 1)


def test_length_groups_cover_every_job_once() -> None:
    frames = [509, 634, 634, 580, 661, 736, 811, 998, 661, 561, 1010, 923, 705, 561, 929, 580]
    groups = group_by_length(frames, 32)
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(len(frames)))
    assert all(1 <= len(g) <= SLOT_SIZES[-1] for g in groups)
    # groups are length-sorted ranges: no group's shortest job is shorter than a later group's longest
    spans = [(min(frames[i] for i in g), max(frames[i] for i in g)) for g in groups]
    assert all(a[0] >= b[1] for a, b in itertools.pairwise(spans))


def test_length_groups_split_outliers_and_keep_uniform_batches() -> None:
    assert len(group_by_length([1000] * 16, 32)) == 1
    g = group_by_length([3000] + [200] * 15, 32)
    assert len(g) == 2 and g[0] == [0]  # one long line does not pad fifteen short ones
    assert group_by_length([], 32) == []


def table(data: dict[str, object]) -> Table:
    return Table(data, "f5.fast", Path("/etc/ishowtts/ishowtts.toml"))


def test_parse_fast_defaults_and_values() -> None:
    assert parse_fast(table({})) == FastSettings()
    s = parse_fast(table({"dtype": "fp16", "bucket_frames": 0, "batch_window_ms": 10, "max_batch": 4}))
    assert (s.dtype, s.bucket_frames, s.batch_window_ms, s.max_batch) == ("fp16", 0, 10.0, 4)
    q = parse_fast(table({"quant": "int8", "fast_accum": False}))
    assert (q.quant, q.fast_accum) == ("int8", False)
    assert FastSettings().quant == "auto"  # fp8 where the GPU has it (measured faster), else fp16


def test_quant_resolves_per_device() -> None:
    """'auto' is fp8 only where fp8 tensor cores exist; fp8 asked for on a CPU (or an Orin)
    falls back to the unquantised path; int8 runs anywhere."""
    import torch

    from ishowttsd.engine.f5.pipeline import resolve_quant

    cpu = torch.device("cpu")
    assert resolve_quant(FastSettings(quant="auto"), cpu) == "none"
    assert resolve_quant(FastSettings(quant="fp8"), cpu) == "none"
    assert resolve_quant(FastSettings(fp8=True, dtype="bf16"), cpu) == "none"
    assert resolve_quant(FastSettings(quant="int8"), cpu) == "int8"
    assert (
        resolve_quant(FastSettings(quant="fp8_static"), cpu) == "fp8_static"
    )  # the CPU arithmetic, for tests


def test_attn_mode_auto_is_the_default_and_resolves_per_device() -> None:
    """'auto' (the default): FA2 told each sequence's key count on CUDA where FA2 runs (padded
    batches 15 % faster on the H200, session 6); SDPA's mask elsewhere, the CPU included.
    Explicit modes are kept as configured."""
    import torch

    from ishowttsd.engine.f5.attention import resolve_attn_mode

    assert FastSettings().attn_mode == "auto"
    assert parse_fast(table({})).attn_mode == "auto"
    assert parse_fast(table({"attn_mode": "flash_seqlen"})).attn_mode == "flash_seqlen"
    cpu = torch.device("cpu")
    assert resolve_attn_mode("auto", cpu) == "sdpa"
    for mode in ("sdpa", "augment", "flash_seqlen"):
        assert resolve_attn_mode(mode, cpu) == mode


def test_auto_quant_follows_the_measurement() -> None:
    """'auto': per-token fp8 where fp8 tensor cores exist (fp8_static, faster for batches, made a
    lone line's first audio slower on the H200), nothing below them (the Orin)."""
    from ishowttsd.engine.f5.pipeline import auto_quant

    assert auto_quant((9, 0)) == auto_quant((8, 9)) == "fp8"
    assert auto_quant((8, 7)) == "none"  # Jetson Orin
    assert auto_quant(None) == "none"


@pytest.mark.parametrize(
    "data,key",
    [
        ({"fp8": True, "dtype": "fp16"}, "fp8"),
        ({"batch_window_ms": 500}, "batch_window_ms"),
        ({"attn_mode": "flash"}, "attn_mode"),
        ({"quant": "fp4"}, "quant"),
        ({"fp8_gemm": "cutlass"}, "fp8_gemm"),
        ({"bucket_frame": 32}, "bucket_frame"),
    ],
)
def test_parse_fast_errors_name_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_fast(table(data))
    assert key in str(e.value)
