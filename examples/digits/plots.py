"""The digits demo's run figure: predicted latency and held-out accuracy after each pruning step, measured ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_run(timeline: list[dict[str, Any]], target_ms: float, measured: dict[str, float], path: Path) -> None:
    """Predicted latency (left axis) and held-out accuracy (right axis) after each pruning step."""
    steps = [t["step"] for t in timeline]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [t["predicted_ms"] for t in timeline], color="tab:blue", label="predicted latency (table)")
    ax.axhline(target_ms, color="tab:blue", linestyle=":", label="target")
    last = steps[-1] if steps else 0
    ax.scatter([0, last], [measured["original"], measured["pruned"]], color="black", zorder=3, label="measured")
    ax.set_xlabel("pruning step")
    ax.set_ylabel("latency (ms)", color="tab:blue")
    acc = ax.twinx()
    acc.plot(steps, [t["accuracy"] for t in timeline], color="tab:red", label="held-out accuracy")
    acc.set_ylabel("held-out accuracy (%)", color="tab:red")
    lines = ax.get_legend_handles_labels()
    more = acc.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    ax.set_title("Latency-aware pruning on digits (during pruning; before the final finetune)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
