"""`python -m profiler plot TABLE`: a table's own evidence for trusting it, in one figure.

Everything drawn is what the table records, so the figure costs no timing and can be drawn anywhere:
- the latest validation's off-grid blocks: the table's raw answer now against what was measured, with the block bar;
- its whole models: the raw answer and the answer as served now (calibrated where it is), with the model bar;
- the machine's level in every session that re-timed the table's reference (the sweep, each validation, each
  `check --record`), against the level the table answers at and the band within which `check` says `holds` now
  (the calibration's level and threshold as they are now; earlier checks were judged against the band of their
  day).

A scatter shows which sizes a table gets wrong and a time series shows whether the machine wanders or moved, where
`validate` and `check` print one number each.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from lut_server.atomic_file import write_bytes_atomic
from lut_server.dims import AXES, BlockDims, ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import read_table
from profiler.check import drift_threshold_pct, table_level, wander_pct
from profiler.level_history import recorded_sessions
from profiler.validate import BLOCK_P95_MAX_PCT, MODEL_MEDIAN_MAX_PCT, MODEL_P95_MAX_PCT


@dataclass
class Session:
    """One re-time of the table's reference: when, by what, and how much slower than the sweep (percent)."""

    at: datetime
    source: str
    level_pct: float


@dataclass
class TrustFigures:
    """What the figure draws, separated from drawing it so it can be checked without reading pixels."""

    title: str
    block_measured_ms: np.ndarray
    block_predicted_ms: np.ndarray
    block_bar_pct: float | None
    block_p95_bar_pct: float
    model_measured_ms: np.ndarray
    model_raw_ms: np.ndarray
    model_served_ms: np.ndarray | None
    served_saw_models: bool
    sessions: list[Session] = field(default_factory=list)
    answers_at_pct: float = 0.0
    threshold_pct: float = 0.0
    validation_note: str = ""


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _sessions(doc: Mapping[str, Any]) -> list[Session]:
    """The sweep (level 0 by definition) and every recorded session on the table's device, in time order."""
    device = (doc.get("device") or {}).get("name")
    out = []
    swept = _time(doc.get("created"))
    if doc.get("sweep") and swept is not None:
        out.append(Session(swept, "sweep", 0.0))
    for s in recorded_sessions(doc):
        at = _time(s.get("created"))
        if at is not None and s.get("device") in (None, device):
            out.append(Session(at, str(s.get("source")), float(s["level_pct"])))
    return sorted(out, key=lambda s: s.at)


def _validated_points(validation: Mapping[str, Any], name: str) -> tuple[list[BlockDims], list[ModelDims], dict]:
    """The validation's timed blocks and models with their measurements; ValueError where they are not recorded."""
    blocks = validation.get("blocks") or []
    models = validation.get("model_points") or []
    if not blocks and not models:
        what = "per-point results (validations before they were kept)" if validation else "validation"
        raise ValueError(f"{name} holds no {what} to draw: run `python -m profiler validate` on it")
    try:
        block_dims = [BlockDims.from_mapping({a: b[a] for a in AXES}) for b in blocks]
        model_dims = [ModelDims.from_dict(m["dims"]) for m in models]
        measured = {
            "blocks": np.array([b["measured_ms"] for b in blocks], dtype=float),
            "models": np.array([m["measured_ms"] for m in models], dtype=float),
        }
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{name}: a validated point lacks its dims or measurement ({exc!r})") from None
    return block_dims, model_dims, measured


def trust_figures(doc: Mapping[str, Any], name: str) -> TrustFigures:
    """The arrays and limits of the figure: the latest validation's measurements against the table as it answers
    now (raw, and calibrated where it is). Raises ValueError for a table with no validated points to draw."""
    validation = doc.get("validation") or {}
    block_dims, model_dims, measured = _validated_points(validation, name)
    raw = LatencyTable(doc, name, calibrated=False)
    served = LatencyTable(doc, name) if doc.get("calibration") else None
    fitted_on = set(((doc.get("calibration") or {}).get("fitted") or {}).get("validations") or [])
    seed = validation.get("seed")
    bar = validation.get("bar") or {}
    steps = sorted(raw.steps, key=AXES.index)
    reading = f"; read with {', '.join(steps)} as steps" if steps else ""
    return TrustFigures(
        title=f"{name}: {(doc.get('device') or {}).get('name', 'unknown device')}, {doc['workload']['backend']}",
        block_measured_ms=measured["blocks"],
        block_predicted_ms=raw.block_latency(block_dims),
        block_bar_pct=bar.get("median_ape_pct_max"),
        block_p95_bar_pct=float(bar.get("p95_ape_pct_max", BLOCK_P95_MAX_PCT)),
        model_measured_ms=measured["models"],
        model_raw_ms=np.array([raw.model_latency(m) for m in model_dims], dtype=float),
        model_served_ms=None if served is None else np.array([served.model_latency(m) for m in model_dims]),
        served_saw_models=validation.get("created") in fitted_on,
        sessions=_sessions(doc),
        answers_at_pct=100.0 * (table_level(doc) - 1.0),
        threshold_pct=drift_threshold_pct(wander_pct(doc)),
        validation_note=f"validation {validation.get('created', '?')}"
        + (f", seed {seed}" if seed is not None else "")
        + reading,
    )


def signed_error_pct(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return 100.0 * (predicted - measured) / measured


def _summary(predicted: np.ndarray, measured: np.ndarray) -> str:
    errors = np.abs(signed_error_pct(predicted, measured))
    return f"median {np.median(errors):.2f}%, p95 {np.percentile(errors, 95):.2f}%"


def holds_band_pct(answers_at_pct: float, threshold_pct: float) -> tuple[float, float]:
    """The levels within which `check` says `holds`: its drift is a ratio to the level the table answers at, and it
    is beyond the threshold when the ratio exceeds 1 + threshold either way."""
    at = 1.0 + answers_at_pct / 100.0
    ratio = 1.0 + threshold_pct / 100.0
    return 100.0 * (at / ratio - 1.0), 100.0 * (at * ratio - 1.0)


def _errors(ax: Any, measured: np.ndarray, series: list[tuple[str, np.ndarray, dict]], bands: list[float]) -> None:
    """Signed error against measured latency: a few percent is visible at every size, unlike on a log-log scatter."""
    ax.axhline(0.0, color="black", linewidth=0.8)
    for band, style in zip(bands, (":", "--"), strict=False):
        for sign in (1, -1):
            ax.axhline(
                sign * band, color="gray", linestyle=style, linewidth=0.8, label=f"±{band:.3g}%" if sign > 0 else None
            )
    for label, predicted, style in series:
        ax.scatter(measured, signed_error_pct(predicted, measured), s=14, label=label, **style)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted − measured (%)")
    ax.legend(fontsize=7, loc="best")


def draw(figures: TrustFigures, path: Path) -> None:
    """Three panels side by side (PNG, written atomically)."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ValueError(
            "drawing needs matplotlib (the profiler extra installs it): pip install 'matplotlib>=3.8'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (blocks_ax, models_ax, level_ax) = plt.subplots(1, 3, figsize=(16, 4.6))
    if len(figures.block_measured_ms):
        bar = figures.block_bar_pct
        _errors(blocks_ax, figures.block_measured_ms,
                 [(_summary(figures.block_predicted_ms, figures.block_measured_ms), figures.block_predicted_ms,
                   {"color": "tab:blue"})],
                 [b for b in (bar, figures.block_p95_bar_pct) if b is not None])  # fmt: skip
        p95 = f"p95 ≤ {figures.block_p95_bar_pct:.3g}%"
        limits = f" (bar: median ≤ {bar:.3g}%, {p95})" if bar is not None else f" (bar: {p95})"
        blocks_ax.set_title(f"{len(figures.block_measured_ms)} off-grid blocks{limits}", fontsize=9)
    else:
        blocks_ax.set_axis_off()
    if len(figures.model_measured_ms):
        series = [(f"raw: {_summary(figures.model_raw_ms, figures.model_measured_ms)}", figures.model_raw_ms,
                   {"facecolors": "none", "edgecolors": "tab:orange"})]  # fmt: skip
        if figures.model_served_ms is not None:
            note = " (fitted on these)" if figures.served_saw_models else ""
            series.append((f"as served{note}: {_summary(figures.model_served_ms, figures.model_measured_ms)}",
                           figures.model_served_ms, {"color": "tab:green"}))  # fmt: skip
        _errors(models_ax, figures.model_measured_ms, series, [MODEL_MEDIAN_MAX_PCT, MODEL_P95_MAX_PCT])
        models_ax.set_title(f"{len(figures.model_measured_ms)} whole models (bar: median ≤ {MODEL_MEDIAN_MAX_PCT:g}%, "
                            f"p95 ≤ {MODEL_P95_MAX_PCT:g}%)", fontsize=9)  # fmt: skip
    else:
        models_ax.set_axis_off()
    _draw_levels(level_ax, figures)
    fig.suptitle(f"{figures.title}\n{figures.validation_note}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    try:
        write_bytes_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None


def _draw_levels(ax: Any, figures: TrustFigures) -> None:
    import matplotlib.dates as mdates

    low, high = holds_band_pct(figures.answers_at_pct, figures.threshold_pct)
    ax.axhspan(low, high, color="tab:green", alpha=0.12, label=f"check holds now ({low:+.1f}% … {high:+.1f}%)")
    ax.axhline(figures.answers_at_pct, color="tab:green", linewidth=1,
               label=f"the table answers at {figures.answers_at_pct:+.2f}%")  # fmt: skip
    markers = {"sweep": ("*", "black"), "validate": ("s", "tab:blue"), "check": ("o", "tab:orange")}
    for source, (marker, color) in markers.items():
        chosen = [s for s in figures.sessions if s.source == source]
        if chosen:
            ax.scatter([s.at for s in chosen], [s.level_pct for s in chosen], marker=marker, color=color, s=22,
                       label=source, zorder=3)  # fmt: skip
    if not figures.sessions:
        ax.text(0.5, 0.5, "no sessions recorded", transform=ax.transAxes, ha="center", va="center", color="gray")
    ax.set_ylabel("latency against the sweep's (%)")
    ax.set_title(f"the machine's level over {len(figures.sessions)} sessions", fontsize=9)
    if figures.sessions:
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_xlabel("UTC")
    ax.legend(fontsize=7, loc="best")


def plot_table(path: str | Path, out: str | Path | None = None) -> Path:
    path = Path(path)
    doc = read_table(path)
    target = Path(out) if out is not None else Path(f"{path.stem}-trust.png")
    if target.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {target}")
    draw(trust_figures(doc, path.stem), target)
    return target


def register(sub: Any) -> None:
    p = sub.add_parser("plot", help="draw a table's validation and its machine's level over time (PNG)")
    p.add_argument("table", type=Path)
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default: TABLE's name + -trust.png, here)")
    p.set_defaults(handler=_cmd_plot)


def _cmd_plot(args: argparse.Namespace) -> int:
    print(plot_table(args.table, args.out))
    return 0
