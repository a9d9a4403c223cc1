"""`python -m profiler doctor [--json]`: what works on this machine, in numbers, within two minutes.

The first thing a user runs on a new machine (a GPU one above all, where nothing in this project has been run
before). It prints the device fingerprint; for each backend whether it can run here and, if not, why (a missing
package, no NVIDIA GPU, an architecture or precision the installed TensorRT cannot build for); and for each one
that can, a mid-size block timed as its parts inside the running block and as a whole block, and a 4-block model
against the sum of its blocks timed alone. Those give the two errors a table built from parts carries here (the
split and the stacking), next to the timer noise (the same block timed twice), so the user sees whether the part
split holds on this device before spending hours on a sweep. Exit 0 when at least one backend works.

A backend that refuses to pick the CPU by itself on a GPU machine whose package lacks the GPU's provider
(onnxruntime) is timed on the CPU here, with the reason the GPU is not used beside its figures: doctor takes no
`--provider` to ask for the CPU, and a backend listed as unusable would hide that it runs.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from lut_server.dims import BlockDims
from profiler.backends import Backend, BackendUnavailable, GpuProviderMissing, backend_names, create_backend
from profiler.backends.glibc_malloc import default_allocator
from profiler.fingerprint import cpu_device
from profiler.timing import Measurement, Protocol, Runner, measure
from profiler.workload import Workload, build_block, build_pipeline

MID_BLOCK = BlockDims(emb=384, heads=6, qk=64, v=64, mlp=1536)
"""DeiT-Small's block: mid-size on every device this project targets."""
MODEL_BLOCKS = (
    BlockDims(384, 6, 64, 64, 1536),
    BlockDims(384, 4, 48, 64, 1152),
    BlockDims(384, 6, 32, 48, 768),
    BlockDims(384, 3, 64, 32, 1536),
)
"""A 4-block model of pruned-looking blocks (one EMB, different widths), as a pruned DeiT-S's would be."""
PROTOCOL = Protocol(warmup_s=0.1, min_repeats=10, min_duration_s=0.25, max_duration_s=1.5, passes=1)
DEADLINE_S = 100.0
"""The doctor's time budget: measurements are not started after it (a backend not reached is listed as usable but
not timed; one reached is stopped between measurements), so the doctor ends within two minutes. What can overrun
it is the one measurement under way, a TensorRT engine build included: the slowest measurement so far, of any
backend, is kept free at the end (TimeBudget), so TensorRT's first one does not start with seconds left."""
STOPPED = "stopped at the time limit"
TIMING_ORDER = ("torch-cpu", "onnxruntime", "torch-cuda", "tensorrt")
"""Backends are timed fastest-to-prepare first: TensorRT builds an engine for every runner it prepares."""
CPU_WORKLOAD = Workload(batch=1, tokens=197)
GPU_WORKLOAD = Workload(batch=64, tokens=197)
CHOICES: dict[str, dict[str, Any]] = {
    "torch-cpu": {"precision": "fp32", "threads": 1, "allocator": default_allocator()},
    "onnxruntime": {"precision": "fp32", "threads": 1},
    "torch-cuda": {"precision": "fp16"},
    "tensorrt": {"precision": "fp16", "optimization_level": 2},
}
"""How doctor creates each backend (torch-cpu with the allocator `profile` uses by default). TensorRT builds at a
lower optimization level so its eight engines (two parts, the block, four blocks alone, the model) build in time;
a table's sweep uses the level it records."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("doctor", help="which backends work here, and how well a table of parts holds")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(handler=cmd_doctor)


def _package_state(name: str) -> str:
    if importlib.util.find_spec(name) is None:
        return "not installed"
    try:
        module = __import__(name)
    except Exception as exc:  # a package whose native libraries are missing fails in many ways
        return f"installed but not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return f"{getattr(module, '__version__', '?')}"


def fingerprint() -> dict[str, Any]:
    """This machine's CPU fingerprint, and the GPU's where torch sees one."""
    import torch

    facts: dict[str, Any] = {"cpu": cpu_device(None)}
    if torch.cuda.is_available():
        from profiler.backends.cuda_device import cuda_device

        facts["gpu"] = cuda_device()
    else:
        facts["gpu"] = None
    facts["packages"] = {name: _package_state(name) for name in ("torch", "onnxruntime", "tensorrt")}
    facts["torch_cuda_build"] = torch.version.cuda
    return facts


def _create(name: str) -> tuple[Backend | None, str | None, str | None]:
    """The backend as doctor times it, or the reason it cannot run; and, for one that runs on the CPU because the
    GPU's package is missing (onnxruntime without its CUDA provider), why the GPU is not used."""
    choice = dict(CHOICES.get(name, {"precision": "fp32"}))
    precision, threads = choice.pop("precision"), choice.pop("threads", None)
    try:
        return create_backend(name, precision, threads, **choice), None, None
    except GpuProviderMissing as exc:
        gpu_reason = str(exc)
        choice.update(exc.cpu_options)
    except (BackendUnavailable, ValueError) as exc:
        return None, str(exc), None
    try:
        return create_backend(name, precision, threads, **choice), None, gpu_reason
    except (BackendUnavailable, ValueError) as exc:
        return None, f"{gpu_reason}; on the CPU: {exc}", None


def _pct(value: float, reference: float) -> float:
    return round(100.0 * (value - reference) / reference, 2)


@dataclass
class TimeBudget:
    """The doctor's deadline (a perf_counter time; None: none) and the slowest measurement seen so far, shared by
    every backend it times: a backend's first measurement starts only if the slowest one of those before it fits."""

    deadline: float | None = None
    slowest_s: float = 0.0

    def fits(self, now: float) -> bool:
        """Whether another measurement may start at `now`: the time left until the deadline is at least the slowest
        measurement (runner preparation included) seen so far, so the budget is overrun by less than one of them."""
        return self.deadline is None or self.deadline - now >= self.slowest_s

    def took(self, seconds: float) -> None:
        self.slowest_s = max(self.slowest_s, seconds)


def time_backend(backend: Backend, budget: TimeBudget | None = None) -> dict[str, Any]:
    """The mid-size block as parts inside the block and as a whole; the 4-block model against its blocks. No
    measurement (runner preparation included) is started after the budget's deadline, nor when the time left is
    less than the slowest one so far (this backend's or an earlier one's): what was not timed is None and
    `stopped` says so. The budget's slowest measurement is updated with this backend's."""
    budget = TimeBudget() if budget is None else budget
    workload = GPU_WORKLOAD if backend.environment()["device"]["kind"] == "gpu" else CPU_WORKLOAD
    names, stages, inputs = build_pipeline(
        MID_BLOCK, workload, with_model_parts=False, block_stages=backend.block_stages
    )
    skipped: list[str] = []

    def timed(what: str, runner: Callable[[], Runner]) -> Measurement | None:
        started = time.perf_counter()
        if skipped or not budget.fits(started):
            skipped.append(what)
            return None
        measurement = measure(runner(), PROTOCOL)
        budget.took(time.perf_counter() - started)
        return measurement

    parts = timed("parts", lambda: backend.prepare_pipeline(stages, inputs))

    @functools.cache
    def block() -> Runner:
        return backend.prepare(*build_block(MID_BLOCK, workload))

    whole = timed("block", block)
    again = timed("block again", block)  # the same runner: its second measurement is the timer noise
    alone = [timed(f"model block {i}", lambda d=d: backend.prepare(*build_block(d, workload)))
             for i, d in enumerate(MODEL_BLOCKS)]  # fmt: skip

    def model() -> Runner:
        stack: nn.Module = nn.Sequential(*(build_block(dims, workload)[0] for dims in MODEL_BLOCKS))
        return backend.prepare(stack, build_block(MODEL_BLOCKS[0], workload)[1])

    stacked = timed("model", model)
    ms = _median_ms
    blocks_sum = sum(m.median_ms for m in alone if m) if all(alone) else None
    return {
        "workload": {"batch": workload.batch, "tokens": workload.tokens, "precision": backend.precision},
        "stage_timing": backend.stage_timing,
        "block_split": list(backend.block_stages),
        "block": MID_BLOCK.as_dict(),
        "parts_ms": {n: round(v, 4) for n, v in zip(names, parts.stage_median_ms, strict=True)} if parts else None,
        "parts_sum_ms": ms(parts),
        "block_ms": ms(whole),
        "parts_vs_block_pct": _pct(parts.median_ms, whole.median_ms) if parts and whole else None,
        "model_blocks": [b.as_dict() for b in MODEL_BLOCKS],
        "blocks_sum_ms": round(blocks_sum, 4) if blocks_sum is not None else None,
        "model_ms": ms(stacked),
        "blocks_vs_model_pct": _pct(blocks_sum, stacked.median_ms) if blocks_sum is not None and stacked else None,
        "timer_noise_pct": abs(_pct(again.median_ms, whole.median_ms)) if again and whole else None,
        "block_rel_iqr_pct": round(100.0 * whole.rel_iqr, 2) if whole else None,
        "stopped": f"{STOPPED}: not timed: {', '.join(skipped)}" if skipped else None,
    }


def _median_ms(m: Measurement | None) -> float | None:
    return round(m.median_ms, 4) if m else None


def diagnose(deadline_s: float = DEADLINE_S) -> dict[str, Any]:
    started = time.perf_counter()
    budget = TimeBudget(started + deadline_s)
    report: dict[str, Any] = {"fingerprint": fingerprint(), "backends": {}}
    names = backend_names()
    for name in [n for n in TIMING_ORDER if n in names] + [n for n in names if n not in TIMING_ORDER]:
        backend, reason, gpu_reason = _create(name)
        if backend is None:
            report["backends"][name] = {"usable": False, "reason": reason}
            continue
        entry: dict[str, Any] = {"usable": True, "settings": backend.settings()}
        if gpu_reason is not None:
            entry["gpu_unusable"] = gpu_reason  # timed on the CPU instead
        if not budget.fits(time.perf_counter()):
            entry["timing"] = None
            entry["note"] = (f"not timed: less of the doctor's {deadline_s:.0f} s budget is left than its slowest "
                             f"measurement so far took ({budget.slowest_s:.1f} s)")  # fmt: skip
        else:
            try:
                entry["timing"] = time_backend(backend, budget)
            except Exception as exc:
                entry.update(usable=False, timing=None, reason=f"failed while timing: {type(exc).__name__}: {exc}")
        backend.close()
        report["backends"][name] = entry
    report["usable"] = [n for n, e in report["backends"].items() if e["usable"]]
    report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


def render(report: dict[str, Any]) -> str:
    fp = report["fingerprint"]
    gpu = fp["gpu"]
    lines = [
        f"CPU: {fp['cpu']['name']}",
        f"GPU: {gpu['name'] if gpu else 'none visible to torch'} (torch CUDA build: {fp['torch_cuda_build']})",
        "packages: " + ", ".join(f"{k} {v}" for k, v in fp["packages"].items()),
        "",
    ]
    for name, entry in report["backends"].items():
        if not entry["usable"]:
            lines.append(f"{name}: not usable here: {entry['reason']}")
            continue
        if entry.get("gpu_unusable"):
            lines.append(f"{name}: not usable on the GPU: {entry['gpu_unusable']}; timed on the CPU")
        t = entry.get("timing")
        if t is None:
            lines.append(f"{name}: usable; {entry.get('note', '')}")
            continue
        w = t["workload"]
        lines.append(
            f"{name}: usable ({w['precision']}, batch {w['batch']}, {w['tokens']} tokens, stages {t['stage_timing']})"
        )
        if t["parts_ms"] is not None and t["block_ms"] is not None:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in t["parts_ms"].items())
            lines.append(f"  block {MID_BLOCK.as_dict()}: parts {parts} ms; sum {t['parts_sum_ms']:.3f} ms vs whole "
                         f"block {t['block_ms']:.3f} ms: {t['parts_vs_block_pct']:+.1f}%")  # fmt: skip
        if t["blocks_vs_model_pct"] is not None:
            lines.append(f"  4-block model: sum of blocks timed alone {t['blocks_sum_ms']:.3f} ms vs model "
                         f"{t['model_ms']:.3f} ms: {t['blocks_vs_model_pct']:+.1f}%")  # fmt: skip
        if t["timer_noise_pct"] is not None:
            lines.append(f"  timer noise: same block twice {t['timer_noise_pct']:.1f}%, IQR/median "
                         f"{t['block_rel_iqr_pct']:.1f}%")  # fmt: skip
        if t.get("stopped"):
            lines.append(f"  {t['stopped']}")
    usable = report["usable"]
    lines += ["", f"usable backends: {', '.join(usable) if usable else 'none'} ({report['wall_s']} s)"]
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    report = diagnose()
    print(json.dumps(report, indent=1) if args.json else render(report))
    if not report["usable"]:
        print("error: no backend can run here", file=sys.stderr)
        return 1
    return 0
