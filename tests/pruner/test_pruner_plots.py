"""The run figure shared by `python -m pruner prune` and the digits demo: what it draws, from which numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure

import pruner.plots
from pruner.plots import plot_prune_run

TIMELINE: list[dict[str, Any]] = [
    {"step": 0, "predicted_ms": 24.0, "accuracy": 94.0,
     "dims": {"emb": 128, "blocks": [{"heads": 4, "qk": 32, "v": 32, "mlp": 512}] * 2}},
    {"step": 1, "predicted_ms": 17.5, "accuracy": 93.0,
     "dims": {"emb": 112, "blocks": [{"heads": 4, "qk": 24, "v": 32, "mlp": 384}] * 2}},
    {"step": 2, "predicted_ms": 11.0, "accuracy": 90.5,
     "dims": {"emb": 96, "blocks": [{"heads": 3, "qk": 24, "v": 24, "mlp": 256}] * 2}},
]  # fmt: skip


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures `plot_prune_run` finishes, kept open instead of closed."""
    figures: list[Figure] = []
    monkeypatch.setattr(pruner.plots.plt, "close", figures.append)
    return figures


def test_the_demo_figure_shows_prediction_target_measured_points_accuracy_and_widths(
    tmp_path: Path, drawn: list[Figure]
):
    path = tmp_path / "latency_accuracy.png"
    plot_prune_run(TIMELINE, [12.0], path, measured_ms=(24.5, 10.2), title="digits")
    assert path.stat().st_size > 0
    (fig,) = drawn
    latency_ax, dims_ax, accuracy_ax = fig.axes
    predicted, target = latency_ax.get_lines()
    assert list(predicted.get_xdata()) == [0, 1, 2] and list(predicted.get_ydata()) == [24.0, 17.5, 11.0]
    assert list(target.get_ydata()) == [12.0, 12.0]
    (measured,) = latency_ax.collections
    assert measured.get_offsets().tolist() == [[0.0, 24.5], [2.0, 10.2]]  # original at the start, pruned at the end
    assert list(accuracy_ax.get_lines()[0].get_ydata()) == [94.0, 93.0, 90.5]
    legend = [t.get_text() for t in accuracy_ax.get_legend().get_texts()]
    assert legend == ["predicted latency (table)", "target", "measured", "held-out accuracy"]
    totals = {line.get_label(): list(line.get_ydata()) for line in dims_ax.get_lines()}
    assert totals["total mlp"] == [1024, 768, 512] and totals["emb"] == [128, 112, 96]
    assert fig.get_suptitle() == "digits"


def test_the_prune_command_figure_has_one_legend_entry_for_all_targets_and_no_measured_points(
    tmp_path: Path, drawn: list[Figure]
):
    plot_prune_run(TIMELINE, [18.0, 12.0], tmp_path / "latency_accuracy_dims.png")
    (fig,) = drawn
    latency_ax, _, accuracy_ax = fig.axes
    assert [line.get_ydata()[0] for line in latency_ax.get_lines()[1:]] == [18.0, 12.0]
    assert not latency_ax.collections
    legend = [t.get_text() for t in accuracy_ax.get_legend().get_texts()]
    assert legend == ["predicted latency (table)", "targets", "held-out accuracy"]
    assert fig.get_suptitle() == ""
