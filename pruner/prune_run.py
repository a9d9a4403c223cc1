"""`python -m pruner prune`: latency-aware pruning of a real model on ImageFolder data, torchrun-ready, resumable.

The student trains on NViT's objective (Eq. 8–9: cross-entropy, KL to the unpruned model, optionally a CNN
teacher's hard labels on the distillation token) while a `Pruner` removes groups every `prune_every` iterations.
Each target in `targets` (fractions of the original predicted latency, descending) saves a compacted snapshot
when reached. At every pruning step the checkpoint (model, optimizer, scaler, pruner, data position) and
`report.json` are rewritten atomically, so `resume` continues exactly where a killed run stopped.

Under torchrun, `batch_size` is the global batch: each of N ranks takes 1/N of it, gradients are reduced by DDP,
rank 0 alone talks to the latency source and writes the checkpoint and report (on a filesystem every rank reads).
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lut_server.atomic_file import write_bytes_atomic, write_json_atomic
from lut_server.dims import ModelDims
from profiler.vit import VisionTransformer
from pruner.checkpoint import save_compact
from pruner.image_folder import ImageFolderSplit, epoch_batches, iterations_per_epoch
from pruner.latency_pruner import Pruner
from pruner.latency_source import source_summary
from pruner.model_source import build_model
from pruner.objectives import nvit_objective
from pruner.rank_agreement import decide_on_rank0, world

CHECKPOINT = "checkpoint.pt"
REPORT = "report.json"
DEVICES = ("cpu", "cuda", "mps", "xpu")
RUN_DEFINING = (
    "model", "targets", "table", "batch_size", "prune_every", "groups_per_step",
    "eta", "momentum", "criterion", "alpha", "tau", "cnn_teacher", "amp", "seed", "image_size", "patch_size",
    "deploy_batch", "deploy_precision", "lr", "weight_decay", "pretrained",
)  # fmt: skip
"""Options a resumed run must share with the checkpoint's. Paths (--data, --table-file) may move: the table is
compared by content hash (`Pruner.load_state_dict`); --epochs may grow, --eval-images and --device change."""


@dataclass
class PruneOptions:
    """The `prune` command's settings (see `python -m pruner prune --help`)."""

    model: str
    data: Path
    out: Path
    targets: list[float]
    pretrained: bool | None = None  # None: a timm model's trained weights
    table_file: Path | None = None
    server: str | None = None
    table: str | None = None
    token: str | None = None
    retry_minutes: float = 30.0
    epochs: int = 1
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    prune_every: int = 20
    groups_per_step: int = 2
    eta: float | None = None  # None: the criterion's own
    momentum: float | None = None
    criterion: str = "default"
    alpha: float = 1.0
    tau: float = 1.0
    cnn_teacher: str | None = None
    amp: str = "none"
    seed: int = 0
    image_size: int = 224
    patch_size: int = 16
    device: str | None = None
    deploy_batch: int | None = None
    deploy_precision: str | None = None
    eval_images: int = 256
    resume: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("--targets needs at least one fraction, e.g. 0.7,0.5")
        if any(not 0.0 < t <= 1.0 for t in self.targets):
            raise ValueError(f"targets must be fractions in (0, 1], got {self.targets}")
        self.targets = sorted(self.targets, reverse=True)
        if (self.table_file is None) == (self.server is None):
            raise ValueError("give either --table-file or --server with --table")
        if self.server is not None and not self.table:
            raise ValueError("--server needs --table")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"--amp must be none, bf16 or fp16, got {self.amp!r}")
        for name in ("epochs", "batch_size", "prune_every", "groups_per_step", "image_size", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.retry_minutes >= 0:
            raise ValueError(f"--retry-minutes must be >= 0, got {self.retry_minutes}")
        if self.eval_images < 0:
            raise ValueError(f"--eval-images must be >= 0, got {self.eval_images}")
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file, not a directory")
        if self.device is not None:
            try:
                kind = torch.device(self.device).type
            except (RuntimeError, ValueError):
                kind = None
            if kind not in DEVICES:
                raise ValueError(f"--device {self.device!r} cannot train; use one of {', '.join(DEVICES)}")

    def run_defining(self) -> dict[str, Any]:
        """The options a checkpoint records, JSON-able, so a resume with other ones is refused by name."""
        values = {name: getattr(self, name) for name in RUN_DEFINING}
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


class SummaryOnlySource:
    """What ranks other than 0 hold instead of a latency source: the table's summary, never a query."""

    def __init__(self, summary: dict[str, Any]):
        self._summary = summary

    def summary(self) -> dict[str, Any]:
        return dict(self._summary)

    @property
    def ranges(self) -> dict[str, tuple[int, int]]:
        return {axis: (int(lo), int(hi)) for axis, (lo, hi) in self._summary["ranges"].items()}

    def deltas(self, model: ModelDims, group_size: Any = None) -> Any:
        raise RuntimeError("only rank 0 queries the latency source")

    def model_latency(self, model: ModelDims) -> float:
        raise RuntimeError("only rank 0 queries the latency source")


class BothLogits(nn.Module):
    """`forward` = the model's `forward_both`, so DDP's gradient hooks see the path the objective trains."""

    def __init__(self, model: VisionTransformer):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.forward_both(images)


def _latency_source(opts: PruneOptions) -> Any:
    if opts.table_file is not None:
        from lut_server.latency_table import LatencyTable

        return LatencyTable.load(opts.table_file)
    from lut_server.client import LatencyClient
    from pruner.latency_source import PinnedLatency

    client = LatencyClient(opts.server, opts.table, token=opts.token, retry_horizon_s=60.0 * opts.retry_minutes)
    return PinnedLatency(client)


def _init_distributed(device: torch.device) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def rank_device(opts: PruneOptions) -> torch.device:
    """--device, else this rank's GPU, else the CPU. A GPU without an index (`--device cuda`, or none given where
    CUDA is available) is the rank's local one, so torchrun's ranks never share a GPU; more ranks on a node than it
    has GPUs is an error named here, not a CUDA 'invalid device ordinal' deep inside the first allocation."""
    device = torch.device(opts.device) if opts.device else None
    if device is None and not torch.cuda.is_available():
        return torch.device("cpu")
    if device is not None and (device.type != "cuda" or device.index is not None):
        return device
    local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local_rank >= gpus:
        raise ValueError(
            f"local rank {local_rank} has no GPU: this node has {gpus}; start at most {gpus} rank(s) per node "
            "(torchrun --nproc_per_node), or pass --device cpu"
        )
    return torch.device("cuda", local_rank)


def _cnn_teacher(name: str | None, num_classes: int, device: torch.device) -> nn.Module | None:
    if name is None:
        return None
    try:
        import timm
    except Exception as exc:
        raise ValueError(f"--cnn-teacher needs timm, which cannot be imported here: {exc}") from None
    return timm.create_model(name, pretrained=True, num_classes=num_classes).to(device).eval()


def eval_indices(size: int, count: int) -> list[int]:
    """`count` indices spread evenly over a split of `size` samples: samples are sorted by class, so the first
    `count` would score only the first few classes. Fixed, so every step (and a resumed run) scores the same."""
    count = min(count, size)
    return [i * size // count for i in range(count)]


@torch.no_grad()
def _accuracy(model: nn.Module, split: ImageFolderSplit, count: int, device: torch.device, amp) -> float | None:
    """Top-1 accuracy (%) on a class-spread subset of `count` held-out images; None when `count` is 0."""
    indices = eval_indices(len(split), count)
    if not indices:
        return None
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(indices), 64):
        x, y = split.batch(indices[start : start + 64])
        with amp():
            correct += int((model(x.to(device)).argmax(-1).cpu() == y).sum())
    model.train(was_training)
    return 100.0 * correct / len(indices)


def _source_root() -> str | None:
    """Where `profiler` was imported from, for a child that may not find it on its own (a checkout run by path);
    None where it is installed (site-packages is on every child's path, after the standard library, where a
    PYTHONPATH entry would put it ahead)."""
    import site

    import profiler

    root = Path(profiler.__file__).resolve().parents[1]
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    return None if root in installed else str(root)


def _measured_ms(summary: dict[str, Any], small: VisionTransformer, table: Path | None) -> float | None:
    """The snapshot's latency measured here with exactly the table's settings, when this is the table's device
    (torch-cpu tables only: GPU measurement belongs to `python -m profiler measure`). It runs in a child process:
    the backend sets process-wide state (threads, malloc thresholds, matmul precision) that training must not
    inherit, and malloc's cannot be undone."""
    if summary.get("backend") != "torch-cpu" or table is None:
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_source_root(), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models.json"
        models.write_text(json.dumps([small.model_dims.as_dict()]))
        command = [sys.executable, "-m", "profiler", "measure", "--table", str(table), "--models", str(models)]
        result = subprocess.run([*command, "--no-progress"], env=env, capture_output=True, text=True)
    if result.returncode == 4:  # another device than the table's: nothing to measure here
        return None
    try:
        return float(json.loads(result.stdout.strip().splitlines()[-1])["latency_ms"][0])
    except (IndexError, KeyError, TypeError, ValueError):
        problem = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        print(f"warning: the snapshot's latency could not be measured: {problem}", file=sys.stderr)
        return None


def _table_path(opts: PruneOptions, source: Any, directory: Path) -> Path | None:
    """The table file a measurement child reads: --table-file, or the pinned copy of a served table."""
    if opts.table_file is not None:
        return opts.table_file
    fallback = getattr(source, "fallback", None)
    if fallback is None:
        return None
    path = directory / "table.json"
    path.write_text(json.dumps(fallback.data))
    return path


def _remove_stale_temporaries(out: Path) -> None:
    """Temp files an atomic write left when the process was killed mid-write (checkpoint-sized)."""
    for name in (CHECKPOINT, REPORT):
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    for stale in out.glob(".decisions-rank*.json.*.tmp"):
        stale.unlink(missing_ok=True)


def _check_resume_options(recorded: dict[str, Any] | None, now: dict[str, Any], out: Path) -> None:
    """Refuse to resume with run-defining options other than the checkpoint's, naming each."""
    if recorded is None:  # a checkpoint from before options were recorded
        return
    differing = [name for name in now if name in recorded and recorded[name] != now[name]]
    if differing:
        detail = "; ".join(f"--{n.replace('_', '-')} {recorded[n]!r} there, {now[n]!r} now" for n in differing)
        raise ValueError(
            f"--resume: {out / CHECKPOINT} was started with other options ({detail}); resume with the same ones "
            "or use another --out"
        )


def run_prune(opts: PruneOptions) -> dict[str, Any]:
    """Run (or resume) the pruning; returns the report (also written to OUT/report.json by rank 0)."""
    from tqdm import tqdm

    device = rank_device(opts)
    _init_distributed(device)
    rank, size = world()
    out = opts.out
    checkpoint_state: dict[str, Any] | None = None
    if (out / CHECKPOINT).is_file():
        if not opts.resume:
            raise ValueError(f"{out} already holds a run's checkpoint; use --resume to continue it, or another --out")
        checkpoint_state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
        _check_resume_options(checkpoint_state.get("options"), opts.run_defining(), out)
    torch.manual_seed(opts.seed)
    train = ImageFolderSplit(opts.data / "train", opts.image_size)
    val = ImageFolderSplit(opts.data / "val", opts.image_size, classes=train.classes)
    per_epoch = iterations_per_epoch(len(train), opts.batch_size)
    model = build_model(
        opts.model, len(train.classes), opts.image_size, opts.patch_size, seed=opts.seed, pretrained=opts.pretrained
    )
    if model.config.image_size != opts.image_size:
        raise ValueError(f"the model takes {model.config.image_size}px images, --image-size is {opts.image_size}")
    model = model.to(device)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    cnn = _cnn_teacher(opts.cnn_teacher, len(train.classes), device)
    original_dims = model.model_dims

    if size == 1:
        source = _latency_source(opts)
    else:  # rank 0 alone talks to the latency source; the others learn its summary (or its error) from rank 0
        local = _latency_source(opts) if rank == 0 else None
        served = decide_on_rank0(lambda: source_summary(local))
        source = local if rank == 0 else SummaryOnlySource(served)
    out.mkdir(parents=True, exist_ok=True)  # only once the data, the model and the latency source are sound
    if rank == 0:
        _remove_stale_temporaries(out)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=opts.amp == "fp16")

    def amp():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    p = Pruner(
        model,
        latency=source,
        target_ratio=opts.targets[0],
        eta=opts.eta,
        groups_per_step=opts.groups_per_step,
        momentum=opts.momentum,
        criterion=opts.criterion,
        grad_scaler=scaler,
        deploy_precision=opts.deploy_precision,
        deploy_batch=opts.deploy_batch,
    )
    for warning in p.warnings:
        if rank == 0:
            print(f"warning: {warning}", file=sys.stderr)
    trained: nn.Module = BothLogits(model)
    if size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(trained, device_ids=device_ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)

    position = {"epoch": 0, "iteration": 0, "global_iteration": 0, "target_index": 0}
    snapshots: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    resumed_at: int | None = None
    if checkpoint_state is not None:
        state = checkpoint_state
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:  # a checkpoint from before options were recorded, of another model
            reason = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            message = f"--resume: {out / CHECKPOINT} holds another model than --model {opts.model}: {reason}"
            raise ValueError(message) from None
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        p.load_state_dict(state["pruner"])
        position, snapshots, timeline = state["position"], state["snapshots"], state["timeline"]
        decisions = state["decisions"]
        resumed_at = len(p.history)
    summary = source_summary(source) or {}

    def report(complete: bool) -> dict[str, Any]:
        return {
            "complete": complete,
            "original_predicted_ms": p.original_ms,
            "predicted_ms": p.predicted_ms,
            "targets": opts.targets,
            "steps": len(p.history),
            "original_dims": original_dims.as_dict(),
            "final_dims": p.dims.as_dict(),
            "snapshots": snapshots,
            "table": p.table_identity,
            "world_size": size,
            "device": str(device),  # rank 0's: where the run trained, which the table's device need not be
            "global_batch": opts.batch_size,
            "amp": opts.amp,
            "loader": train.loader,
            "skipped_batches": p.skipped_batches,
            "iterations": position["global_iteration"],
            "resumed_at_step": resumed_at,
            "timeline": timeline,
            "history": [r.as_dict() for r in p.history],
        }

    def save_state() -> None:
        buffer = io.BytesIO()
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "pruner": p.state_dict(),
                "position": position,
                "snapshots": snapshots,
                "timeline": timeline,
                "decisions": decisions,
                "options": opts.run_defining(),
            },
            buffer,
        )
        write_bytes_atomic(out / CHECKPOINT, buffer.getvalue())
        write_json_atomic(out / REPORT, report(False))

    def snapshot(target: float) -> None:
        small = p.compact().eval()
        predicted = decide_on_rank0(lambda: source.model_latency(small.model_dims))
        entry = {"target": target, "predicted_ms": predicted, "ratio": predicted / p.original_ms}
        entry |= {"dims": small.model_dims.as_dict(), "step": len(p.history)}
        path = out / f"snapshot-{target:.3g}"
        if rank == 0:
            save_compact(small, path)
            with tempfile.TemporaryDirectory() as tmp:
                measured = _measured_ms(summary, small, _table_path(opts, source, Path(tmp)))
            if measured is not None:
                entry["measured_ms"] = measured
        entry["path"] = str(path)
        snapshots.append(entry)

    total = opts.epochs * per_epoch
    bar = tqdm(total=total, initial=position["global_iteration"], disable=not opts.progress or rank != 0, unit="it")
    deferred = False  # a pruning step is due but no batch since the last one was folded in (all skipped by fp16)
    while position["epoch"] < opts.epochs and position["target_index"] < len(opts.targets):
        batches = epoch_batches(len(train), opts.batch_size, opts.seed, position["epoch"], rank, size,
                                start=position["iteration"])  # fmt: skip
        for it, indices in batches:
            x, y = train.batch(indices)
            x, y = x.to(device), y.to(device)
            with torch.no_grad(), amp():
                teacher_logits = teacher.forward_both(x)
                cnn_labels = cnn(x).argmax(-1) if cnn is not None else None
            with amp():
                loss = nvit_objective(trained(x), y, teacher_logits, cnn_labels, opts.alpha, opts.tau)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            p.accumulate()
            scaler.step(optimizer)
            scaler.update()
            position["iteration"] = it + 1
            position["global_iteration"] += 1
            bar.update(1)
            if position["global_iteration"] % opts.prune_every and not deferred:
                continue
            if not p.ready:
                if not deferred and rank == 0:
                    print(
                        f"warning: pruning step deferred at iteration {position['global_iteration']}: every batch "
                        "since the last step was skipped (non-finite fp16 gradients); it runs after the next batch "
                        "that counts",
                        file=sys.stderr,
                    )
                deferred = True
                continue
            deferred = False
            record = p.step()
            removed = [{"group": c.name, "units": c.units} for c in record.removed]
            decisions.append({"index": record.index, "removed": removed, "checksum": record.gates_checksum})
            if rank == 0:
                acc = _accuracy(model, val, opts.eval_images, device, amp)
                timeline.append({"step": record.index + 1, "predicted_ms": record.latency_after_ms,
                                 "accuracy": acc, "dims": record.dims.as_dict()})  # fmt: skip
                bar.set_postfix(ms=f"{p.predicted_ms:.3g}", acc="-" if acc is None else f"{acc:.1f}")
            while p.done and position["target_index"] < len(opts.targets):
                target = opts.targets[position["target_index"]]
                if p.predicted_ms <= target * p.original_ms:
                    snapshot(target)
                position["target_index"] += 1
                if position["target_index"] < len(opts.targets) and not p.exhausted:
                    p.target_ratio = opts.targets[position["target_index"]]
            write_json_atomic(out / f"decisions-rank{rank}.json", decisions)
            if rank == 0:
                save_state()
            if position["target_index"] >= len(opts.targets):
                break
        else:
            position["epoch"] += 1
            position["iteration"] = 0
    bar.close()
    final = report(True)
    final["targets_reached"] = [s["target"] for s in snapshots]
    if rank == 0:
        save_state()
        write_json_atomic(out / REPORT, final)
        from pruner.plots import plot_dims, plot_prune_run

        if timeline:
            plot_prune_run(timeline, [t * p.original_ms for t in opts.targets], out / "latency_accuracy_dims.png")
        plot_dims(original_dims, p.dims, out / "pruned_dims.png")
    if size > 1:  # no rank exits (and has torchrun stop the others) before rank 0's files are complete
        dist.barrier()
    return final
