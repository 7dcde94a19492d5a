"""Probe (GPU): cuDNN's attention through NVIDIA's cuDNN frontend (the ``nvidia-cudnn-frontend``
package, carried to the lent GPU as a wheel; not a dependency of the daemon), for what PyTorch's
SDPA does not offer: fp8 attention, and padded batches masked by their valid lengths rather than
by an additive mask.

fp8: Q, K and V arrive as fp8 e4m3 with one scale each; the kernel computes

    S = (Q K^T) * dq * dk / sqrt(d),  P = softmax(S),  O = (fp8(P * 448) V) * dv / 448

and writes O as fp8 times ``scale_o`` (on Hopper cuDNN's fp8 attention writes fp8 only), which is
what an fp8 output projection would take. Measured on the H200 at the DiT's shapes (head dim 64)
it was no faster than bf16 SDPA for one line and less accurate (docs/perf-log.md, session 6), so
the engine does not use it; this module keeps the measurement repeatable
(``python -m ishowttsd.bench.kprobe --fp8-attention``).

Layout: q, k, v and O are ``[B, N, H, D]`` (what the QKV GEMM's output gives without a
transpose; cuDNN takes the strides). ``klen`` masks padded keys by cuDNN's padding mask; rows
past a line's length come back zero. :func:`fp8_sdpa_reference` is the fp8 arithmetic in fp32.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any

import torch
from torch import Tensor

from ishowttsd.engine.f5 import quant

P_SCALE = quant.FP8_MAX
"""softmax probabilities lie in [0, 1]: times 448 they use e4m3's whole range."""


@functools.cache
def _cudnn() -> Any:
    """The frontend module, or None. Imported on first use: it is optional, and loads cuDNN."""
    try:
        import cudnn  # type: ignore[import-not-found,unused-ignore]  # optional (Hopper boxes)
    except Exception:  # missing, or present without a loadable libcudnn
        return None
    return cudnn


def available(device: torch.device) -> bool:
    """fp8 attention runs here: CUDA on Hopper or later (cuDNN's fp8 attention), with the frontend."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 9:
        return False
    return _cudnn() is not None


def fp8_sdpa(
    q: Tensor, k: Tensor, v: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, scale_o: Tensor, klen: Tensor | None
) -> Tensor:
    """q, k, v fp8 e4m3 ``[B, N, H, D]``; dq, dk, dv their fp32 scales (0-d); ``scale_o`` (0-d)
    multiplies O before its fp8 cast; ``klen`` int32 [B] valid frames (a prefix) or None.
    Returns O fp8 ``[B, N, H, D]``, contiguous."""
    return _run(q, k, v, klen, scales=(dq, dk, dv, scale_o))


def bf16_sdpa(q: Tensor, k: Tensor, v: Tensor, klen: Tensor | None) -> Tensor:
    """cuDNN's attention in q's dtype, padded keys masked by ``klen``: ``[B, N, H, D]`` in and out."""
    return _run(q, k, v, klen, scales=None)


def fp8_sdpa_reference(
    q: Tensor, k: Tensor, v: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, scale_o: Tensor, klen: Tensor | None
) -> Tensor:
    """The kernel's arithmetic in fp32: fp8 probabilities (times :data:`P_SCALE`), fp32 sums."""
    n, d = q.shape[1], q.shape[3]
    qf = q.float().transpose(1, 2) * dq
    kf = k.float().transpose(1, 2) * dk
    s = (qf @ kf.transpose(-1, -2)) / math.sqrt(d)  # [B, H, N, N]
    if klen is not None:
        valid = torch.arange(n, device=q.device)[None, :] < klen.to(q.device)[:, None]  # [B, N]
        s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    p8 = (torch.softmax(s, dim=-1) * P_SCALE).to(torch.float8_e4m3fn)
    o = (p8.float() @ v.float().transpose(1, 2)) * (dv / P_SCALE)  # [B, H, N, D]
    if klen is not None:
        o = o * valid[:, None, :, None]
    o8 = (o * scale_o).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
    return o8.transpose(1, 2).contiguous()


class _Plan:
    """One built cuDNN graph for a (shape, strides, masked) and its workspace and scalar tensors."""

    def __init__(self, graph: Any, names: dict[str, Any], workspace: Tensor, consts: dict[str, Tensor]):
        self.graph = graph
        self.names = names
        self.workspace = workspace
        self.consts = consts


_PLANS: dict[tuple[Any, ...], _Plan] = {}
_LOCK = threading.Lock()


@functools.cache
def _handle(index: int) -> Any:
    with torch.cuda.device(index):
        return _cudnn().create_handle()


def _bhsd(t: Tensor) -> tuple[list[int], list[int]]:
    """cuDNN's (B, H, S, D) dims and strides for a ``[B, N, H, D]`` tensor."""
    b, n, h, d = t.shape
    sb, sn, sh, sd = t.stride()
    return [b, h, n, d], [sb, sh, sn, sd]


def _plan(q: Tensor, k: Tensor, v: Tensor, masked: bool) -> _Plan:
    key = (q.device.index, q.dtype, tuple(q.shape), q.stride(), k.stride(), v.stride(), masked)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    with _LOCK:
        if key not in _PLANS:
            _PLANS[key] = _build(q, k, v, masked)
        return _PLANS[key]


def _build(q: Tensor, k: Tensor, v: Tensor, masked: bool) -> _Plan:
    cudnn = _cudnn()
    fp8 = q.dtype == torch.float8_e4m3fn
    f32 = cudnn.data_type.FLOAT
    io = {torch.float8_e4m3fn: cudnn.data_type.FP8_E4M3, torch.bfloat16: cudnn.data_type.BFLOAT16,
          torch.float16: cudnn.data_type.HALF}[q.dtype]  # fmt: skip
    handle = _handle(q.device.index or 0)
    graph = cudnn.pygraph(io_data_type=io, intermediate_data_type=f32, compute_data_type=f32, handle=handle)
    names: dict[str, Any] = {}
    for name, t in (("q", q), ("k", k), ("v", v)):
        dims, strides = _bhsd(t)
        names[name] = graph.tensor(name=name, dim=dims, stride=strides, data_type=io)
    extra: dict[str, Any] = {}
    b = q.shape[0]
    if masked:
        lens = {"dim": [b, 1, 1, 1], "stride": [1, 1, 1, 1], "data_type": cudnn.data_type.INT32}
        names["lq"] = graph.tensor(name="lq", **lens)
        names["lk"] = graph.tensor(name="lk", **lens)
        extra = {"use_padding_mask": True, "seq_len_q": names["lq"], "seq_len_kv": names["lk"]}
    scale = 1.0 / math.sqrt(q.shape[-1])
    if fp8:
        scalar = {"dim": [1, 1, 1, 1], "stride": [1, 1, 1, 1], "data_type": f32}
        for name in ("dq", "dk", "dv", "ds", "ss", "so"):
            names[name] = graph.tensor(name=name, **scalar)
        o, _stats, amax_s, amax_o = graph.sdpa_fp8(
            q=names["q"], k=names["k"], v=names["v"],
            descale_q=names["dq"], descale_k=names["dk"], descale_v=names["dv"],
            descale_s=names["ds"], scale_s=names["ss"], scale_o=names["so"],
            is_inference=True, attn_scale=scale, use_causal_mask=False, name="fp8_sdpa", **extra,
        )  # fmt: skip
        for amax in (amax_s, amax_o):
            amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(f32)
        names["amax_s"], names["amax_o"] = amax_s, amax_o
    else:
        o, _stats = graph.sdpa(q=names["q"], k=names["k"], v=names["v"], is_inference=True, attn_scale=scale,
                               use_causal_mask=False, name="sdpa", **extra)  # fmt: skip
    dims, strides = _bhsd(torch.empty_like(q, device="meta", memory_format=torch.contiguous_format))
    o.set_output(True).set_dim(dims).set_stride(strides).set_data_type(io)
    names["o"] = o
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    dev = q.device
    workspace = torch.empty(max(int(graph.get_workspace_size()), 1), device=dev, dtype=torch.uint8)
    consts = {}
    if fp8:
        consts = {
            "ds": torch.full((1, 1, 1, 1), 1.0 / P_SCALE, device=dev),
            "ss": torch.full((1, 1, 1, 1), P_SCALE, device=dev),
            "amax_s": torch.zeros((1, 1, 1, 1), device=dev),
            "amax_o": torch.zeros((1, 1, 1, 1), device=dev),
        }
    return _Plan(graph, names, workspace, consts)


def _run(q: Tensor, k: Tensor, v: Tensor, klen: Tensor | None, scales: tuple[Tensor, ...] | None) -> Tensor:
    plan = _plan(q, k, v, klen is not None)
    # rows past a line's length are not written under the padding mask: zeros, not stale bytes
    o = (torch.zeros if klen is not None else torch.empty)(q.shape, dtype=q.dtype, device=q.device)
    n = plan.names
    pack: dict[Any, Tensor] = {n["q"]: q, n["k"]: k, n["v"]: v, n["o"]: o}
    if scales is not None:
        for name, t in zip(("dq", "dk", "dv", "so"), scales, strict=True):
            pack[n[name]] = t.reshape(1, 1, 1, 1)
    for name, t in plan.consts.items():
        pack[n[name]] = t
    if klen is not None:
        lens = klen.to(torch.int32).reshape(-1, 1, 1, 1).contiguous()
        pack[n["lq"]] = lens
        pack[n["lk"]] = lens
    handle = _handle(q.device.index or 0)
    # the handle follows the caller's stream (a CUDA graph's capture stream, too)
    _cudnn().set_stream(handle=handle, stream=torch.cuda.current_stream(q.device).cuda_stream)
    plan.graph.execute(pack, plan.workspace, handle=handle)
    return o
