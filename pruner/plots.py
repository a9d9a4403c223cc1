"""A pruning run's figures (matplotlib, PNG): latency, accuracy and widths along the run, the final dims."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from lut_server.dims import WIDTH_AXES, ModelDims


def plot_dims(original: ModelDims, pruned: ModelDims, path: Path) -> None:
    """Per-block widths before and after (like NViT's Fig. 4), with the shared EMB in the title."""
    fig, axes = plt.subplots(1, len(WIDTH_AXES), figsize=(12, 3.2))
    blocks = list(range(1, original.depth + 1))
    for ax, axis in zip(axes, WIDTH_AXES, strict=True):
        before = [getattr(b, axis) for b in original.blocks]
        after = [getattr(b, axis) for b in pruned.blocks]
        ax.bar(blocks, before, color="lightgray", label="original")
        ax.bar(blocks, after, color="tab:green", width=0.6, label="pruned")
        ax.set_title(axis.upper() + (" per head" if axis in ("qk", "v") else ""))
        ax.set_xlabel("block")
        ax.set_xticks(blocks)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Per-block dims after pruning (EMB {original.emb} → {pruned.emb})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_prune_run(
    timeline: list[dict[str, Any]],
    targets_ms: list[float],
    path: Path,
    measured_ms: tuple[float, float] | None = None,
    title: str | None = None,
) -> None:
    """Predicted latency, held-out accuracy and the model's total widths after each pruning step.

    `measured_ms`, (original, pruned) latency measured on the device, is drawn at the first and the last step
    beside the table's prediction, so the figure shows how far the prediction was from the truth.
    """
    steps = [t["step"] for t in timeline]
    fig, (ax, dims_ax) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(steps, [t["predicted_ms"] for t in timeline], color="tab:blue", label="predicted latency (table)")
    for i, target in enumerate(targets_ms):
        label = ("target" if len(targets_ms) == 1 else "targets") if i == 0 else None
        ax.axhline(target, color="tab:blue", linestyle=":", linewidth=1, label=label)
    if measured_ms is not None and steps:
        ax.scatter([steps[0], steps[-1]], list(measured_ms), color="black", zorder=3, label="measured")
    ax.set_xlabel("pruning step")
    ax.set_ylabel("latency (ms)", color="tab:blue")
    acc = ax.twinx()
    scored = [float("nan") if t["accuracy"] is None else t["accuracy"] for t in timeline]  # --eval-images 0
    acc.plot(steps, scored, color="tab:red", label="held-out accuracy")
    acc.set_ylabel("held-out accuracy (%)", color="tab:red")
    handles, labels = ax.get_legend_handles_labels()
    acc_handles, acc_labels = acc.get_legend_handles_labels()
    acc.legend(handles + acc_handles, labels + acc_labels, loc="center right", fontsize=8)  # the top axes: over both
    for axis in ("heads", "qk", "v", "mlp"):
        dims_ax.plot(steps, [sum(b[axis] for b in t["dims"]["blocks"]) for t in timeline], label=f"total {axis}")
    dims_ax.plot(steps, [t["dims"]["emb"] for t in timeline], label="emb")
    dims_ax.set_yscale("log")
    dims_ax.set_xlabel("pruning step")
    for a in (ax, dims_ax):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    dims_ax.legend(fontsize=8)
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
