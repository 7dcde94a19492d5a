"""The history PNG: RTF (stock and fast), time to first audio and 16-line throughput per run.
matplotlib is optional (the ``bench`` extra); without it the bench says so and skips the PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(history: list[dict[str, Any]], latest: dict[str, Any] | None, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 4 if latest else 3, figsize=(18 if latest else 14, 4))
    xs = list(range(1, len(history) + 1))
    # each point names its card: runs on different GPUs compare only through their own stock run
    labels = [f"{_card(h.get('device'))}\n{(h.get('git_commit') or '')[:7]}" for h in history]

    def series(ax: Any, keys: list[tuple[str, str]], title: str, log: bool = False) -> None:
        for key, lab in keys:
            ys = [h.get(key) if isinstance(h.get(key), (int, float)) else float("nan") for h in history]
            ax.plot(xs, ys, marker="o", label=lab)
        ax.set_title(title)
        ax.set_xticks(xs, labels, fontsize=6)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    series(axes[0], [("stock_rtf", "stock f5-tts"), ("rtf", "fast path"), ("fp8_rtf", "fast, fp8")],
           "RTF (lower is better)", log=True)  # fmt: skip
    axes[0].axhline(0.0035, color="red", ls="--", lw=0.8)
    ttfa = [("ttfa_ms", "fast path"), ("fp8_ttfa_ms", "fast, fp8"), ("daemon_ttfa_ms", "daemon engine")]
    series(axes[1], ttfa, "time to first audio, ms")
    axes[1].axhline(15.0, color="red", ls="--", lw=0.8)
    x16 = [("x_realtime_16", "16 mixed lines (bench)"), ("daemon_x_realtime_16", "16 mixed (daemon)"),
           ("fp8_x_realtime_16_same", "16 x line, fp8")]  # fmt: skip
    series(axes[2], x16, "x real time, 16 lines")
    axes[2].axhline(400.0, color="red", ls="--", lw=0.8)
    if latest:
        ax = axes[3]
        stock = (latest.get("stock") or {}).get("nfe_sweep_ms") or {}
        fast = latest.get("fast_nfe_sweep_ms") or {}
        nfes = sorted({int(k) for k in list(stock) + list(fast)})
        if nfes:
            ax.plot(nfes, [stock.get(str(n), float("nan")) for n in nfes], marker="o", label="stock")
            ax.plot(nfes, [fast.get(str(n), float("nan")) for n in nfes], marker="o", label="fast")
            ax.set_yscale("log")
            ax.set_xlabel("NFE")
            ax.set_title(f"latest run: ms per line by NFE ({latest.get('device')})", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("ishowtts-bench history (F5TTS_v1_Base random weights; 5 s ref + 85-char line)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _card(device: Any) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100'; otherwise the name's first word."""
    words = str(device or "?").split()
    for w in words:
        if len(w) >= 4 and w[0].isalpha() and w[1:4].isdigit():
            return w
    return words[0] if words else "?"
