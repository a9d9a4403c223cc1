"""The end-to-end demo: train a small ViT on digits, prune it against the latency service, compact, measure.

Every latency number the pruning uses comes over HTTP from the server (one `deltas` request per pruning step); the
compacted model's latency is then measured on this machine with the table's own backend, batch and threads, so
the report shows both the prediction and the truth.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.digits.demo_table import (
    DEMO_BACKEND,
    DEMO_BATCH,
    DEMO_OPTIONS,
    DEMO_PROTOCOL,
    DEMO_THREADS,
    demo_backend,
    ensure_demo_table,
)
from examples.digits.digits import (
    DEMO_DIMS,
    DIGITS_CONFIG,
    DigitsSplit,
    accuracy,
    batches,
    load_digits_split,
    new_demo_model,
)
from examples.digits.digits import train as train_model
from examples.digits.measurement_window import (
    EXTRA_ROUNDS,
    WINDOW_ROUNDS,
    nearest_window_start,
    needs_more_rounds,
    window_at,
    window_level,
)
from lut_server.atomic_file import write_json_atomic
from lut_server.client import LatencyClient
from lut_server.dims import BlockDims
from profiler.machine_level import has_reference, predicted_pair_ms, reference_runner
from profiler.timing import measure
from profiler.vit import VisionTransformer
from profiler.workload import Workload
from pruner.checkpoint import load_compact, save_compact
from pruner.latency_pruner import LatencySource, Pruner
from pruner.objectives import nvit_objective
from pruner.onnx_model import export_model_onnx, onnx_logits
from pruner.plots import plot_dims, plot_prune_run

TRAIN_EPOCHS = 30
TRAIN_LR = 3e-3


def _log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def original_model(split: DigitsSplit, cache: Path, seed: int) -> tuple[VisionTransformer, bool]:
    """The trained original, from the cache when an earlier run left one; (model, reused)."""
    path = cache / f"digits-vit-seed{seed}-e{TRAIN_EPOCHS}"
    try:
        return load_compact(path), True
    except (FileNotFoundError, ValueError):
        pass
    model = new_demo_model(seed)
    train_model(model, split, TRAIN_EPOCHS, lr=TRAIN_LR, seed=seed)
    save_compact(model.eval(), path)
    return model.eval(), False


def measure_rounds(
    models: dict[str, VisionTransformer], rounds: int = WINDOW_ROUNDS, table: dict[str, Any] | None = None
) -> dict[str, list[float]]:
    """`rounds` alternating measurements per model (medians of the protocol's samples, ms), with the table's
    backend, batch, threads and allocator, spread over about a minute so that a burst of load hits a few rounds.
    With the table document, its reference pair is timed in every round too (under "reference"): the machine's
    level against the minutes the table was profiled in; while the latest `rounds` rounds' level lies off the
    table's, more rounds follow (`measurement_window.needs_more_rounds`), up to a cap."""
    backend = demo_backend()
    cfg = DIGITS_CONFIG
    images = torch.randn(DEMO_BATCH, cfg.in_chans, cfg.image_size, cfg.image_size, generator=torch.Generator())
    runners = {name: backend.prepare(copy.deepcopy(m), (images,)) for name, m in models.items()}
    reference_ms = None
    if table is not None and has_reference(table):
        runners["reference"] = reference_runner(table, backend, Workload(DEMO_BATCH, cfg.tokens, cfg))()
        reference_ms = predicted_pair_ms(table, BlockDims(**table["sweep"]["reference"]["dims"]))
    samples: dict[str, list[float]] = {name: [] for name in runners}

    def time_rounds(count: int) -> None:
        for _ in range(count):
            for name, run in runners.items():
                samples[name].append(measure(run, DEMO_PROTOCOL).median_ms)

    time_rounds(rounds)
    while reference_ms is not None and needs_more_rounds(samples["reference"], reference_ms, rounds):
        time_rounds(EXTRA_ROUNDS)
    return samples


def machine_level(table: dict[str, Any], rounds: dict[str, list[float]]) -> float | None:
    """Median of the reference's rounds over the table's own cells for it (1.0: as fast as while profiling)."""
    if "reference" not in rounds:
        return None
    reference = BlockDims(**table["sweep"]["reference"]["dims"])
    return window_level(rounds["reference"], predicted_pair_ms(table, reference), len(rounds["reference"]))


def prediction_errors(
    predicted_original: float, predicted_pruned: float, measured: dict[str, float], level: float | None
) -> dict[str, float]:
    """Predicted against measured (%, the pruned model's absolute, the original's signed so drift shows), and the
    same with the machine's level divided out of the measurements when the level is known."""
    out = {
        "original_predicted_vs_measured_pct": 100 * (predicted_original - measured["original"]) / measured["original"],
        "predicted_vs_measured_pct": 100 * abs(predicted_pruned - measured["pruned"]) / measured["pruned"],
    }
    if level is not None:
        pruned, original = measured["pruned"] / level, measured["original"] / level
        out |= {
            "machine_level_pct": 100 * (level - 1),
            "level_normalised_predicted_vs_measured_pct": 100 * abs(predicted_pruned - pruned) / pruned,
            "level_normalised_original_pct": 100 * (predicted_original - original) / original,
        }
    return out


def measure_latency(models: dict[str, VisionTransformer], rounds: int = WINDOW_ROUNDS) -> dict[str, float]:
    """Median of `measure_rounds` per model."""
    return {name: statistics.median(values) for name, values in measure_rounds(models, rounds).items()}


def prune(
    model: VisionTransformer,
    teacher: VisionTransformer,
    split: DigitsSplit,
    client: LatencySource,
    target: float,
    eta: float | None,
    prune_every: int,
    groups_per_step: int,
    seed: int,
    lr: float = 5e-4,
    criterion: str = "default",
) -> tuple[Pruner, list[dict[str, Any]]]:
    """Finetune with α·KL(teacher) + CE while removing groups every `prune_every` iterations until the target."""
    p = Pruner(
        model, latency=client, target_ratio=target, eta=eta, groups_per_step=groups_per_step, criterion=criterion
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed + 1)
    timeline: list[dict[str, Any]] = []
    iteration = 0
    teacher.eval()
    model.train()
    while not p.done:
        for x, y in batches(split.train_x, split.train_y, 64, generator):
            with torch.no_grad():
                teacher_logits = teacher.forward_both(x)
            loss = nvit_objective(model.forward_both(x), y, teacher=teacher_logits, alpha=1.0, tau=1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            p.accumulate()
            optimizer.step()
            iteration += 1
            if iteration % prune_every == 0:
                record = p.step()
                if record.index == 0:
                    timeline.append(
                        {"step": 0, "predicted_ms": p.original_ms, "accuracy": None, "dims": DEMO_DIMS.as_dict()}
                    )
                timeline.append(
                    {
                        "step": record.index + 1,
                        "predicted_ms": record.latency_after_ms,
                        "accuracy": accuracy(model, split.test_x, split.test_y),
                        "removed": [c.name for c in record.removed],
                        "dims": record.dims.as_dict(),
                    }
                )
                if p.done:
                    break
    return p, timeline


def run_demo(
    server: str,
    table_id: str,
    target: float,
    out: Path,
    token: str | None = None,
    eta: float | None = None,
    cache: Path | None = None,
    seed: int = 0,
    prune_every: int = 6,
    groups_per_step: int = 2,
    finetune_epochs: int = 30,
    train_threads: int | None = None,
    progress: bool = True,
    criterion: str = "default",
) -> dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or out / "cache"
    train_threads = train_threads or min(2, os.cpu_count() or 1)
    torch.set_num_threads(train_threads)
    split = load_digits_split(seed=seed)
    client = LatencyClient(server, table_id, token=token, timeout=60.0)
    summary, profiled = ensure_demo_table(client, DEMO_DIMS, DIGITS_CONFIG, out / "tables", progress)
    _log(f"table {table_id}: {summary.get('device')} {summary.get('backend')} batch {summary.get('batch')}"
         + (" (profiled now)" if profiled else " (already served)"))  # fmt: skip
    torch.set_num_threads(train_threads)  # the timing backend pins 1 thread
    t0 = time.perf_counter()
    original, reused = original_model(split, cache, seed)
    original_acc = accuracy(original, split.test_x, split.test_y)
    _log(f"original model {'reused from cache' if reused else 'trained'}: held-out accuracy {original_acc:.2f}%")
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    student = copy.deepcopy(original)
    pruner, timeline = prune(
        student, original, split, client, target, eta, prune_every, groups_per_step, seed, criterion=criterion
    )
    timeline[0]["accuracy"] = original_acc
    pruned_before_ft = accuracy(student, split.test_x, split.test_y)
    _log(f"pruned in {len(pruner.history)} steps: predicted {pruner.original_ms:.2f} -> {pruner.predicted_ms:.2f} ms")

    def loss_fn(model, x, y):
        with torch.no_grad():
            teacher_logits = original.forward_both(x)
        return nvit_objective(model.forward_both(x), y, teacher=teacher_logits, alpha=1.0, tau=1.0)

    train_model(student, split, finetune_epochs, lr=1e-3, seed=seed + 2, loss_fn=loss_fn)
    prune_s = time.perf_counter() - t0
    small = pruner.compact().eval()
    pruned_acc = accuracy(small, split.test_x, split.test_y)
    gated_acc = accuracy(student, split.test_x, split.test_y)
    _log(f"finetuned and compacted: held-out accuracy {pruned_acc:.2f}% (gated model {gated_acc:.2f}%)")

    predicted_pruned = client.model_latency(small.model_dims)
    t0 = time.perf_counter()
    table_doc = client.download()
    rounds = measure_rounds({"original": original, "pruned": small}, table=table_doc)
    start = 0
    if "reference" in rounds:
        reference_ms = predicted_pair_ms(table_doc, BlockDims(**table_doc["sweep"]["reference"]["dims"]))
        start = nearest_window_start(rounds["reference"], reference_ms)
    window = window_at(rounds, start)
    measured = {name: statistics.median(values) for name, values in window.items()}
    level = machine_level(table_doc, window)
    torch.set_num_threads(train_threads)
    measure_s = time.perf_counter() - t0
    _log(f"measured: original {measured['original']:.2f} ms, pruned {measured['pruned']:.2f} ms")

    model_dir = save_compact(small, out / "pruned-model").parent
    onnx_path = export_model_onnx(small, out / "pruned-model" / "model.onnx", batch=8)
    sample = split.test_x[:8]
    onnx_diff = float(np.abs(onnx_logits(onnx_path, sample.numpy()) - small(sample).detach().numpy()).max())

    ratio = measured["pruned"] / measured["original"]
    predicted_ratio = predicted_pruned / pruner.original_ms
    errors = prediction_errors(pruner.original_ms, predicted_pruned, measured, level)
    first_window = {}
    if len(rounds["pruned"]) > WINDOW_ROUNDS:
        first = {name: values[:WINDOW_ROUNDS] for name, values in rounds.items()}
        first_measured = {name: statistics.median(values) for name, values in first.items()}
        first_errors = prediction_errors(
            pruner.original_ms, predicted_pruned, first_measured, machine_level(table_doc, first)
        )
        first_window = {"first_window": {"measured_ms": first_measured, **first_errors}}
    steps = len(pruner.history)
    report = {
        "table": {"id": table_id, "server": server, "profiled_now": profiled, "summary": summary},
        "workload": {
            "backend": DEMO_BACKEND,
            "batch": DEMO_BATCH,
            "threads": DEMO_THREADS,
            "options": DEMO_OPTIONS,
            "tokens": DIGITS_CONFIG.tokens,
        },
        "target_ratio": target,
        "criterion": criterion,
        "eta": pruner.eta,
        "original": {
            "accuracy": original_acc,
            "measured_ms": measured["original"],
            "measured_rounds_ms": rounds["original"],
            "predicted_ms": pruner.original_ms,
            "dims": DEMO_DIMS.as_dict(),
            "parameters": sum(t.numel() for t in original.parameters()),
        },
        "pruned": {
            "accuracy": pruned_acc,
            "accuracy_before_finetune": pruned_before_ft,
            "measured_ms": measured["pruned"],
            "measured_rounds_ms": rounds["pruned"],
            "predicted_ms": predicted_pruned,
            "dims": small.model_dims.as_dict(),
            "parameters": sum(t.numel() for t in small.parameters()),
            "saved_to": str(model_dir),
            "onnx_max_abs_logit_diff": onnx_diff,
        },
        "reference_rounds_ms": rounds.get("reference"),
        "steps": steps,
        "http_requests": client.request_count,
        "checks": {
            "measured_ratio": ratio,
            "measured_ratio_ok": ratio <= target + 0.1,
            "predicted_ratio": predicted_ratio,
            **errors,
            "predicted_vs_measured_ok": errors["predicted_vs_measured_pct"] <= 10.0,
            "accuracy_drop_points": original_acc - pruned_acc,
            "accuracy_drop_ok": original_acc - pruned_acc <= 2.0,
            # at most two per step (the deltas, and the model's own latency on a step whose deltas reach the target)
            # and five more: the summary before and after the upload, the upload, the prediction, the copy
            "http_requests_ok": client.request_count <= 2 * steps + 5,
            "rounds_timed": len(rounds["pruned"]),
            "rounds_judged": len(window["pruned"]),
            "judged_from_round": start,
            **first_window,
        },
        "timeline": timeline,
        "history": [r.as_dict() for r in pruner.history],
        "wall_s": {
            "train": train_s,
            "prune_and_finetune": prune_s,
            "measure": measure_s,
            "total": time.perf_counter() - started,
        },
    }
    write_json_atomic(out / "report.json", report)
    plot_prune_run(
        timeline,
        [pruner.target_ms],
        out / "latency_accuracy.png",
        measured_ms=(measured["original"], measured["pruned"]),
        title="Latency-aware pruning on digits (during pruning; before the final finetune)",
    )
    plot_dims(DEMO_DIMS, small.model_dims, out / "pruned_dims.png")
    client.close()
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    o, p, c = report["original"], report["pruned"], report["checks"]
    mark = {True: "ok", False: "MISSED"}

    def model_line(name: str, m: dict[str, Any]) -> str:
        return (
            f"{name:9s} {m['accuracy']:.2f}% held-out, measured {m['measured_ms']:.2f} ms, "
            f"predicted {m['predicted_ms']:.2f} ms"
        )

    return [
        model_line("original:", o),
        model_line("pruned:", p),
        f"measured latency ratio {c['measured_ratio']:.3f} (predicted {c['predicted_ratio']:.3f}, target "
        f"{report['target_ratio']}) [{mark[c['measured_ratio_ok']]}]",
        f"predicted vs measured {c['predicted_vs_measured_pct']:.1f}% [{mark[c['predicted_vs_measured_ok']]}] "
        f"(original model: {c['original_predicted_vs_measured_pct']:+.1f}%)",
        *(
            [
                f"machine level {c['machine_level_pct']:+.1f}% against the table's reference; level-normalised: "
                f"pruned {c['level_normalised_predicted_vs_measured_pct']:.1f}%, original "
                f"{c['level_normalised_original_pct']:+.1f}%"
            ]
            if "machine_level_pct" in c
            else []
        ),
        *(
            [
                f"the first {c['rounds_judged']} rounds ran at machine level {f['machine_level_pct']:+.1f}% "
                f"(pruned {f['predicted_vs_measured_pct']:.1f}% off): timed {c['rounds_timed']} rounds, judged on "
                f"rounds {c['judged_from_round'] + 1}-{c['judged_from_round'] + c['rounds_judged']}, the nearest the "
                "table's level"
            ]
            if (f := c.get("first_window"))
            else []
        ),
        f"accuracy drop {c['accuracy_drop_points']:.2f} points [{mark[c['accuracy_drop_ok']]}]",
        f"{report['steps']} pruning steps, {report['http_requests']} HTTP requests [{mark[c['http_requests_ok']]}]",
        f"pruned dims: EMB {p['dims']['emb']}, blocks "
        + ", ".join(f"{b['heads']}h/{b['qk']}qk/{b['v']}v/{b['mlp']}mlp" for b in p["dims"]["blocks"]),
    ]
