"""`python -m pruner prune|finetune|demo`: prune a model on ImageFolder data (torchrun-ready), finetune a snapshot,
or run the end-to-end digits demo (examples/digits/, from a checkout) against a latency server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pruner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train on digits, prune against the latency server, compact, measure")
    demo.add_argument("--server", required=True, help="latency server base URL, e.g. http://127.0.0.1:8000")
    demo.add_argument("--table", required=True, help="table id on the server (profiled and uploaded if missing)")
    demo.add_argument("--target", type=float, default=0.5, help="target latency as a fraction of the original")
    demo.add_argument("--out", type=Path, required=True, help="directory for report.json, plots and the model")
    add_criterion_arguments(demo)
    demo.add_argument("--cache", type=Path, default=None, help="where the trained original is cached (OUT/cache)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--prune-every", type=int, default=6, help="training iterations between pruning steps")
    demo.add_argument("--groups-per-step", type=int, default=2)
    demo.add_argument("--finetune-epochs", type=int, default=30)
    demo.add_argument("--no-progress", action="store_true")
    add_prune_parser(sub)
    add_finetune_parser(sub)
    return parser


def add_criterion_arguments(parser: argparse.ArgumentParser) -> None:
    from pruner.criterion_preset import PRESETS

    parser.add_argument(
        "--criterion",
        choices=sorted(PRESETS),
        default="default",
        help="default, or nvit: the NViT authors' choices (docs/pruning.md, 'Reproducing NViT's own choices')",
    )
    etas = ", ".join(f"{name} {preset.eta:g}" for name, preset in PRESETS.items())
    parser.add_argument(
        "--eta", type=float, default=None, help=f"weight of the latency term (default: the criterion's: {etas})"
    )


def _fractions(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def add_prune_parser(sub) -> None:
    prune = sub.add_parser("prune", help="prune a model on ImageFolder data to latency targets (torchrun-ready)")
    prune.add_argument("--model", required=True, help="timm name, save_compact dir, deit-tiny|small|base, custom:...")
    prune.add_argument(
        "--pretrained", action=argparse.BooleanOptionalAction, default=None,
        help="a timm model's trained weights (the default for timm names); --no-pretrained: random weights",
    )  # fmt: skip
    prune.add_argument("--data", type=Path, required=True, help="ImageFolder root with train/<class>/ and val/<class>/")
    prune.add_argument("--out", type=Path, required=True, help="checkpoint, report.json, snapshots and plots")
    targets = prune.add_mutually_exclusive_group(required=True)
    targets.add_argument("--target", type=float, help="target latency as a fraction of the original")
    targets.add_argument("--targets", type=_fractions, help="several targets, e.g. 0.7,0.5: a snapshot at each")
    prune.add_argument("--table-file", type=Path, help="a local table file")
    prune.add_argument("--server", help="latency server base URL (with --table)")
    prune.add_argument("--table", help="table id on the server")
    prune.add_argument("--retry-minutes", type=float, default=30.0, help="how long to retry an unreachable server")
    prune.add_argument("--epochs", type=int, default=1, help="most epochs of training while pruning")
    prune.add_argument("--batch-size", type=int, default=64, help="global batch (split over torchrun ranks)")
    prune.add_argument("--lr", type=float, default=5e-4)
    prune.add_argument("--weight-decay", type=float, default=0.05)
    prune.add_argument("--prune-every", type=int, default=20, help="training iterations between pruning steps")
    prune.add_argument("--groups-per-step", type=int, default=2)
    add_criterion_arguments(prune)
    prune.add_argument("--momentum", type=float, default=None, help="importance momentum across pruning steps")
    prune.add_argument("--alpha", type=float, default=1.0, help="weight of the full-model distillation (Eq. 9)")
    prune.add_argument("--tau", type=float, default=1.0, help="distillation temperature")
    prune.add_argument("--cnn-teacher", help="timm CNN whose hard labels supervise the distillation token (Eq. 8)")
    prune.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    prune.add_argument("--seed", type=int, default=0)
    prune.add_argument("--image-size", type=int, default=224)
    prune.add_argument("--patch-size", type=int, default=16)
    prune.add_argument("--device", help="torch device (default: this rank's GPU, else cpu)")
    prune.add_argument("--deploy-batch", type=int, help="the batch the pruned model is deployed at (checked)")
    prune.add_argument("--deploy-precision", help="the precision it is deployed in (checked against the table)")
    prune.add_argument("--eval-images", type=int, default=256, help="held-out images scored at each pruning step")
    prune.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    prune.add_argument("--no-progress", action="store_true")


def add_finetune_parser(sub) -> None:
    ft = sub.add_parser("finetune", help="continue training a compacted snapshot")
    ft.add_argument("--model", type=Path, required=True, help="a save_compact directory (a snapshot)")
    ft.add_argument("--data", type=Path, required=True)
    ft.add_argument("--out", type=Path, required=True)
    ft.add_argument(
        "--teacher", help="the unpruned model to distil from: a save_compact directory or a timm name (trained weights)"
    )
    ft.add_argument("--epochs", type=int, default=1)
    ft.add_argument("--batch-size", type=int, default=64)
    ft.add_argument("--lr", type=float, default=1e-4)
    ft.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--no-progress", action="store_true")


def prune_main(args: argparse.Namespace) -> int:
    from lut_server.client import LatencyServiceError
    from pruner.latency_source import TableChangedError
    from pruner.prune_run import PruneOptions, run_prune

    try:
        opts = PruneOptions(
            model=args.model,
            pretrained=args.pretrained,
            data=args.data,
            out=args.out,
            targets=args.targets if args.targets is not None else [args.target],
            table_file=args.table_file,
            server=args.server,
            table=args.table,
            token=os.environ.get("LUT_SERVER_TOKEN"),
            retry_minutes=args.retry_minutes,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            prune_every=args.prune_every,
            groups_per_step=args.groups_per_step,
            eta=args.eta,
            momentum=args.momentum,
            criterion=args.criterion,
            alpha=args.alpha,
            tau=args.tau,
            cnn_teacher=args.cnn_teacher,
            amp=args.amp,
            seed=args.seed,
            image_size=args.image_size,
            patch_size=args.patch_size,
            device=args.device,
            deploy_batch=args.deploy_batch,
            deploy_precision=args.deploy_precision,
            eval_images=args.eval_images,
            resume=args.resume,
            progress=not args.no_progress,
        )
        report = run_prune(opts)
    except (LatencyServiceError, TableChangedError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: report[k] for k in ("original_predicted_ms", "steps", "final_dims", "targets_reached")}))
    return 0 if len(report["targets_reached"]) == len(opts.targets) else 3


def finetune_main(args: argparse.Namespace) -> int:
    from pruner.finetune_run import run_finetune

    try:
        report = run_finetune(
            args.model, args.data, args.out, args.epochs, args.batch_size, args.lr, args.teacher, args.amp,
            args.seed, progress=not args.no_progress,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "prune":
        return prune_main(args)
    if args.command == "finetune":
        return finetune_main(args)
    from lut_server.client import LatencyServiceError

    try:
        from examples.digits.demo import run_demo, summary_lines
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("examples"):
            raise
        print(
            "error: the digits demo lives in the repository's examples/digits/; run `python -m pruner demo` (or "
            "`make demo`) from the root of a checkout",
            file=sys.stderr,
        )
        return 2

    try:
        report = run_demo(
            args.server,
            args.table,
            args.target,
            args.out,
            token=os.environ.get("LUT_SERVER_TOKEN"),
            eta=args.eta,
            cache=args.cache,
            seed=args.seed,
            prune_every=args.prune_every,
            groups_per_step=args.groups_per_step,
            finetune_epochs=args.finetune_epochs,
            progress=not args.no_progress,
            criterion=args.criterion,
        )
    except (LatencyServiceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    print(json.dumps({"report": str(args.out / "report.json"), **report["checks"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
