"""The page for people at `GET /`: served tables with their provenance, and latency curves drawn as inline SVG.

Each table gets one plot per dimension: the predicted latency of one block as that dimension sweeps its range,
the others held at values the reader picks in a form (default: the largest block the table covers). The curves
come from the same `LatencyTable` the API answers from; the page needs no JavaScript and fetches nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any

import numpy as np

from lut_server import __version__
from lut_server.dims import AXES
from lut_server.latency_table import LatencyTable

AXIS_COLOURS: dict[str, str] = {
    "emb": "#d62728",
    "heads": "#1f77b4",
    "qk": "#2ca02c",
    "v": "#9467bd",
    "mlp": "#ff7f0e",
}
"""Curve colour per dimension (the browser test looks for these pixels)."""

AXIS_LABELS: dict[str, str] = {
    "emb": "EMB (embedding width)",
    "heads": "H (heads)",
    "qk": "QK (query/key width per head)",
    "v": "V (value width per head)",
    "mlp": "MLP (hidden width)",
}

CURVE_POINTS = 64
_W, _H = 300, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 10, 12, 34

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.15rem;margin:0 0 .5rem}
section.table{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}
table.meta{border-collapse:collapse;margin-bottom:.6rem}
table.meta td,table.meta th{padding:2px 10px 2px 0;text-align:left}
table.meta th{color:#555;font-weight:600}
form.held{margin:.4rem 0 .8rem} form.held label{margin-right:.8rem} form.held input{width:5.5em}
div.plots{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:300px} figcaption{font-size:.85rem;color:#444;text-align:center}
svg text{font-size:10px;fill:#444} .note{color:#a33}
"""


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.3g}{unit}"


def held_values(table: LatencyTable, requested: Mapping[str, str] | None) -> tuple[dict[str, int], list[str]]:
    """The values the non-swept dimensions are held at: requested ones clamped into range, else the range's top."""
    held: dict[str, int] = {}
    notes: list[str] = []
    for axis in AXES:
        lo, hi = table.ranges.get(axis, (1, 1))
        value = hi
        raw = (requested or {}).get(axis)
        if raw not in (None, ""):
            try:
                value = int(raw)
            except ValueError:
                notes.append(f"{axis} = {raw[:16]!r} is not an integer; using {hi}")
                value = hi
            if not lo <= value <= hi:
                clamped = min(max(value, lo), hi)
                notes.append(f"{axis} = {value} is outside [{lo}, {hi}]; using {clamped}")
                value = clamped
        held[axis] = value
    return held, notes


def curves(table: LatencyTable, held: Mapping[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per dimension in the table's ranges: x values across its range and one block's predicted latency (ms)."""
    out = {}
    for axis, (lo, hi) in table.ranges.items():
        xs = np.linspace(lo, hi, CURVE_POINTS) if hi > lo else np.array([float(lo)])
        rows = np.tile(np.array([float(held[a]) for a in AXES]), (len(xs), 1))
        rows[:, AXES.index(axis)] = xs
        out[axis] = (xs, table.block_latency(rows))
    return out


def _svg_plot(axis: str, xs: np.ndarray, ys: np.ndarray, grid: list[int], y_max: float, held: str) -> str:
    lo, hi = float(xs[0]), float(xs[-1])
    span = hi - lo or 1.0
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(x: float) -> float:
        return _LEFT + (x - lo) / span * plot_w if hi > lo else _LEFT + plot_w / 2

    def py(y: float) -> float:
        return _TOP + plot_h * (1 - y / y_max)

    colour = AXIS_COLOURS[axis]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" data-axis="{axis}" '
        f'aria-label="block latency against {axis}">',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#bbb"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - frac)
        parts.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{_LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{y_max * frac:.3g}</text>')
    parts.append(f'<text x="{_LEFT + plot_w / 2}" y="{_H - 4}" text-anchor="middle">{escape(axis)}</text>')
    parts.append(f'<text x="{_LEFT}" y="{_TOP + plot_h + 13}" text-anchor="start">{lo:g}</text>')
    parts.append(f'<text x="{_LEFT + plot_w}" y="{_TOP + plot_h + 13}" text-anchor="end">{hi:g}</text>')
    if len(xs) > 1:
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="3"/>')
    grid_ys = np.interp(grid, xs, ys) if len(xs) > 1 else ys
    for gx, gy in zip(grid, grid_ys, strict=True):
        parts.append(
            f'<circle cx="{px(gx):.1f}" cy="{py(gy):.1f}" r="3.5" fill="{colour}"><title>{axis}={gx}: '
            f"{gy:.4g} ms (grid point)</title></circle>"
        )
    parts.append("</svg>")
    caption = f"{escape(AXIS_LABELS[axis])}; others held at {escape(held)}"
    return f"<figure>{''.join(parts)}<figcaption>{caption}</figcaption></figure>"


def flat_facts(facts: Mapping[str, Any], prefix: str = "") -> list[str]:
    """{"cpu": {"isa": {"avx2": true}}} -> ["cpu.isa.avx2=true"], in key order."""
    out: list[str] = []
    for key, value in facts.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += flat_facts(value, f"{name}.")
        else:
            out.append(f"{name}={json.dumps(value)}")
    return out


def fingerprint_rows(fingerprint: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """What must match for the table to apply, device and software; says so when the table cannot tell."""
    device = (fingerprint or {}).get("device") or {}
    software = (fingerprint or {}).get("software") or {}
    if not device:
        return [("fingerprint", "none: this table cannot say which machine it describes")]
    return [
        ("device must match", ", ".join(flat_facts(device))),
        ("software must match", ", ".join(flat_facts(software)) or "nothing recorded"),
    ]


def describe_calibration(calibration: Mapping[str, Any] | None) -> str:
    if not calibration:
        return "not calibrated (raw medians)"
    before, after = calibration.get("before") or {}, calibration.get("after") or {}
    return (
        f"{calibration.get('method', 'unknown method')}: median APE {_fmt(before.get('median_ape_pct'), '%')} → "
        f"{_fmt(after.get('median_ape_pct'), '%')}, p95 {_fmt(before.get('p95_ape_pct'), '%')} → "
        f"{_fmt(after.get('p95_ape_pct'), '%')} (after: cross-validated); latencies "
        f"{100.0 * (float(calibration.get('level') or 1.0) - 1.0):+.1f}% against the sweep's (the machine's typical "
        "level)"
    )


def _table_section(table: LatencyTable, requested: Mapping[str, str] | None) -> str:
    summary = table.summary()
    held, notes = held_values(table, requested)
    data = curves(table, held)
    y_max = max(float(np.max(ys)) for _, ys in data.values()) * 1.08 or 1.0
    acc = summary["accuracy"]
    rows = [
        ("device", summary["device"]),
        ("backend", summary["backend"]),
        ("precision", summary["precision"]),
        ("batch", summary["batch"]),
        ("tokens", summary["tokens"]),
        ("threads", summary["threads"] if summary["threads"] is not None else "n/a"),
        (
            "accuracy",
            f"median APE {_fmt(acc.get('median_ape_pct'), '%')}, p95 {_fmt(acc.get('p95_ape_pct'), '%')}, "
            f"retest noise {_fmt(acc.get('retest_noise_pct'), '%')}"
            if acc
            else "not validated",
        ),
        ("date", summary["created"] or "unknown"),
        ("ranges", ", ".join(f"{a} {lo}–{hi}" for a, (lo, hi) in summary["ranges"].items())),
    ]
    if "fingerprint" in summary:
        rows += fingerprint_rows(summary["fingerprint"])
    if "calibration" in summary:
        rows.append(("calibration", describe_calibration(summary["calibration"])))
    steps = (summary.get("interpolation") or {}).get("steps")
    rows.append(("interpolation", f"steps along {', '.join(steps)}; linear along the rest" if steps else "linear"))
    meta = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    inputs = "".join(
        f'<label>{axis} <input type="number" name="{axis}" value="{held[axis]}" min="{lo}" max="{hi}"></label>'
        for axis, (lo, hi) in table.ranges.items()
    )
    tid = escape(table.table_id or "")
    form = (
        f'<form class="held" method="get" action="/#t-{tid}"><input type="hidden" name="table" value="{tid}">'
        f'Hold the other dimensions at: {inputs}<button type="submit">Plot</button></form>'
    )
    note = "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
    plots = "".join(
        _svg_plot(
            axis,
            xs,
            ys,
            table.grid[axis],
            y_max,
            ", ".join(f"{a}={held[a]}" for a in table.ranges if a != axis),
        )
        for axis, (xs, ys) in data.items()
    )
    return (
        f'<section class="table" id="t-{tid}"><h2>{tid}</h2><table class="meta">{meta}</table>{form}{note}'
        f"<p>Predicted latency of one block (ms) along each dimension; dots are measured grid points.</p>"
        f'<div class="plots">{plots}</div></section>'
    )


def render_page(
    tables: list[LatencyTable], focus: str | None, requested: Mapping[str, str], problems: Mapping[str, str]
) -> str:
    """The whole page; `requested` held values apply to the table named by `focus`."""
    sections = [_table_section(t, requested if t.table_id == focus else None) for t in tables]
    listing = "".join(
        f'<li><a href="#t-{escape(t.table_id or "")}">{escape(t.table_id or "")}</a> — '
        f"{escape(str(t.summary()['device']))}, {escape(t.workload['backend'])}, {escape(t.workload['precision'])}"
        f", batch {t.workload['batch']}, {t.workload['tokens']} tokens</li>"
        for t in tables
    )
    skipped = "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in sorted(problems.items()))
    body = (
        f"<h1>vitlut latency tables</h1><p>{len(tables)} table(s) served. API: <a href='/docs'>/docs</a>, "
        f"<a href='/v1/tables'>/v1/tables</a>.</p><ul>{listing}</ul>"
        + ("".join(sections) if sections else "<p>No tables yet: put ID.json files in the tables directory.</p>")
        + (f"<h2>Files not served</h2><ul>{skipped}</ul>" if skipped else "")
        + f"<p><small>lut_server {__version__}</small></p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>vitlut latency tables</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
