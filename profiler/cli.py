"""`python -m profiler profile|validate|measure ...` — the command line of the profiler."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lut_server.atomic_file import require_writable
from lut_server.table_format import BLOCK_PARTS, PART_AXES, TABLE_ID_PATTERN, TableFormatError
from profiler.backends import BackendUnavailable, backend_names, create_backend
from profiler.backends.glibc_malloc import ALLOCATORS, default_allocator
from profiler.device_match import DeviceMismatch
from profiler.grids import PRESETS, load_grid
from profiler.sweep import Shard, Sweep, SweepMismatch, grid_step_monotonicity, plan_combos
from profiler.timing import Protocol
from profiler.transfer import transfer_table
from profiler.validate import measure_configs, measure_models, validate_table_file
from profiler.vit import VitConfig
from profiler.workload import Workload, model_config_for_tokens

SWEEP_ONLY_DEFAULTS: dict[str, object] = {
    "patch_size": 16,
    "in_chans": 3,
    "num_classes": 1000,
    "no_model_parts": False,
    "cuda_graphs": False,
    "sparsity": None,
    "tf32": False,
    "quick": False,
}
"""`profile` flags a sweep uses and `profile --from` does not (it takes them from the source table, or times with
the source's protocol): refused there when given a value other than these defaults, rather than ignored."""


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="time a grid of block parts and write a table")
    p.add_argument("--backend", default=None, help=f"one of {', '.join(backend_names())} (default torch-cpu)")
    p.add_argument("--batch", type=int, default=None, help="deployment batch (default 1)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per image (default 197)")
    p.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"], help="default fp32")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch-cpu, onnxruntime; default 1)")
    p.add_argument("--grid", default=None, help=f"preset ({', '.join(PRESETS)}) or a JSON grid file (default: default)")
    p.add_argument(
        "--from",
        dest="from_table",
        type=Path,
        default=None,
        help="build this machine's table from an existing one (its backend, workload and grid) plus --budget runs",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="with --from: configurations timed here, runs and whole models (default 100, or a full sweep's runs on "
        "a grid so small that it times fewer)",
    )
    p.add_argument("--out", required=True, type=Path, help="tables/ID.json")
    p.add_argument("--resume", action="store_true", help="continue a killed sweep of the same settings")
    p.add_argument(
        "--shard", default=None, help="i/n, 0-based: profile only a disjoint slice of the grid (0/2 and 1/2 cover it)"
    )
    p.add_argument("--patch-size", type=int, default=SWEEP_ONLY_DEFAULTS["patch_size"], help="for the stem/head parts")
    p.add_argument("--in-chans", type=int, default=SWEEP_ONLY_DEFAULTS["in_chans"])
    p.add_argument("--num-classes", type=int, default=SWEEP_ONLY_DEFAULTS["num_classes"])
    p.add_argument("--no-model-parts", action="store_true", help="profile blocks only (no stem/head)")
    p.add_argument("--cuda-graphs", action="store_true", help="torch-cuda: replay each point as a CUDA graph")
    p.add_argument("--sparsity", choices=["none", "2:4"], default=None, help="tensorrt: 2:4 structured weights")
    p.add_argument("--tf32", action="store_true", help="GPU backends: let fp32 use TF32 (off unless given; recorded)")
    p.add_argument(
        "--provider",
        choices=["cpu", "cuda"],
        default=None,
        help="onnxruntime: execution provider (default: cuda where an NVIDIA GPU is here, else cpu)",
    )
    p.add_argument(
        "--allocator",
        choices=list(ALLOCATORS),
        default=None,
        help=f"torch-cpu: 'steady' fixes glibc's malloc thresholds (default here: {default_allocator()})",
    )
    p.add_argument("--quick", action="store_true", help="a cheap timing protocol (tests, smoke runs)")
    p.add_argument(
        "--passes",
        type=int,
        default=None,
        help=f"separately shuffled passes over the grid (default {Protocol().passes}, {Protocol.quick().passes} with "
        "--quick); recorded in the table's protocol, so its validate and measure time in as many. With one, a run "
        "wider than the protocol allows is flagged, not re-measured: for a device whose retest noise is far below "
        "that, such as a GPU",
    )
    p.add_argument("--seed", type=int, default=0, help="visiting order; with --from, which configurations are drawn")
    p.add_argument("--no-progress", action="store_true")


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="measure a table's accuracy on random off-grid configs and models")
    p.add_argument("table", type=Path)
    p.add_argument("--points", type=int, default=100, help="random off-grid blocks timed (default %(default)s)")
    p.add_argument("--models", type=int, default=20, help="random whole models (0 to skip; default %(default)s)")
    p.add_argument("--depth", type=int, default=12, help="blocks per whole model (default %(default)s)")
    p.add_argument("--retest", type=int, default=None, help="configs timed twice (default max(20, points/4))")
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="the draws: blocks, models, retested configs and timing order (default %(default)s)",
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--force", action="store_true", help="validate even where the device fingerprint differs")
    p.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        default=None,
        help="other tables of the same workload, judged on the same runs",
    )


def _add_measure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="time blocks or models with exactly a table's settings; prints {latency_ms}")
    p.add_argument("--table", required=True, type=Path)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--configs", type=Path, metavar="FILE", help='blocks: a JSON file, a list of {"emb","heads","qk","v","mlp"}'
    )
    what.add_argument(
        "--models", type=Path, metavar="FILE",
        help='whole models: a JSON file holding a list of {"emb", "blocks": [{"heads","qk","v","mlp"}, ...]}',
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="measure even where the device fingerprint differs")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_profile(sub)
    _add_validate(sub)
    _add_measure(sub)
    for module in _extension_modules():
        module.register(sub)
    return parser


EXTENSION_MODULES = (
    "profiler.upload",
    "profiler.merge",
    "profiler.check",
    "profiler.calibrate",
    "profiler.doctor",
    "profiler.trust_plot",
)
"""Modules that add a subcommand: each has register(subparsers) setting `handler` as a parser default."""


PROFILE_DEFAULTS = {"backend": "torch-cpu", "batch": 1, "tokens": 197, "precision": "fp32", "grid": "default"}


def warn_about_table_name(out: Path) -> None:
    """The server serves `ID.json` as table ID; a name it cannot serve is better renamed before hours of sweep."""
    if not TABLE_ID_PATTERN.fullmatch(out.stem) or out.suffix != ".json":
        print(
            f"warning: the server serves tables/ID.json as table ID, and {out.name!r} is not such a name (ID: "
            "lower-case letters, digits, '.', '_', '-', up to 64): rename it before serving it",
            file=sys.stderr,
        )


def cmd_profile_from(args: argparse.Namespace) -> int:
    given = [f"--{k}" for k in (*PROFILE_DEFAULTS, "threads", "shard", "provider") if getattr(args, k) is not None]
    given += ["--resume"] if args.resume else []
    given += [f"--{k.replace('_', '-')}" for k, default in SWEEP_ONLY_DEFAULTS.items() if getattr(args, k) != default]
    if given:
        raise ValueError(
            "--from takes the backend and its options, the workload, model, grid and timing protocol from the source "
            f"table; drop {', '.join(given)}"
        )
    options = {"allocator": args.allocator} if args.allocator else {}
    doc = transfer_table(args.from_table, args.out, args.budget, options, progress=not args.no_progress, seed=args.seed)
    s = doc["sweep"]
    fits = s["derived_from"]["fits"]
    print(
        json.dumps(
            {
                "table": str(args.out),
                "from": s["derived_from"]["table_id"],
                "runs": len(s["records"]),
                "blocks": s["units_done"],
                "models": s["derived_from"]["models"],
                "measurements": s["measurements"],
                "wall_s": s["wall_s"],
                "drift_pct": s["reference"]["drift_pct"],
                "median_ratio": {part: fit["median_ratio"] for part, fit in fits.items()},
                "fit_loo_mae_pct": {part: fit["loo_mae_pct"] for part, fit in fits.items()},
                "fit_ridge": {part: fit["ridge"] for part, fit in fits.items()},
                "reference_error_pct": s["derived_from"]["reference_error_pct"],
                "calibration": (doc.get("calibration") or {}).get("form"),
                "next": f"python -m profiler validate {args.out}",
            },
            indent=1,
        )
    )
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    warn_about_table_name(args.out)
    require_writable(args.out)
    if args.passes is not None and (args.passes < 1 or args.from_table is not None):
        raise ValueError(
            f"--passes must be >= 1, got {args.passes}"
            if args.passes < 1
            else "--passes counts a sweep's passes; `profile --from` times its own drawn runs"
        )
    if args.from_table is not None:
        return cmd_profile_from(args)
    if args.budget is not None:
        raise ValueError("--budget counts the runs of `profile --from TABLE`; a sweep times its whole grid")
    for key, value in PROFILE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for name in ("batch", "tokens", "threads", "patch_size", "in_chans", "num_classes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    spec = load_grid(args.grid)
    used = {axis for part in spec.parts for axis in PART_AXES[part]}
    single = [axis for axis, values in spec.grid.items() if len(values) == 1 and axis in used]
    if single:
        print(
            f"warning: {', '.join(single)} take one value: the table answers only at it, and removing units along "
            f"{'that axis' if len(single) == 1 else 'those axes'} saves nothing by its count (deltas of 0)",
            file=sys.stderr,
        )
    model: VitConfig | None = None
    if not args.no_model_parts:
        model = model_config_for_tokens(args.tokens, args.patch_size, args.in_chans, args.num_classes)
        if model is None and set(spec.parts) & {"stem", "head"}:
            print(
                f"warning: {args.tokens} tokens are not a square grid of patches plus a class token (or class and "
                "distillation tokens), so there is no image for a stem and head: the table holds blocks only",
                file=sys.stderr,
            )
    if model is None:
        spec = spec.without_model_parts()
    options: dict = {"cuda_graphs": True} if args.cuda_graphs else {}
    if args.sparsity:
        options["sparsity"] = args.sparsity
    if args.tf32:
        options["tf32"] = True
    if args.provider:
        options["provider"] = args.provider
    if args.backend == "torch-cpu":
        options["allocator"] = args.allocator or default_allocator()
    elif args.allocator:
        raise ValueError(f"--allocator is a torch-cpu option; {args.backend} manages its own memory")
    backend = create_backend(args.backend, args.precision, args.threads, **options)
    given = [p for p in spec.parts if p in BLOCK_PARTS] if spec.parts_given else []
    spec = spec.with_block_split(backend.block_stages)  # attn | mlp where the runtime fuses attention
    if given and sorted(given) != sorted(backend.block_stages):
        print(
            f"warning: a sweep times a block as {args.backend} splits it ({', '.join(backend.block_stages)}); the "
            f"grid's block parts {given} are replaced by those",
            file=sys.stderr,
        )
    workload = Workload(args.batch, args.tokens, model)
    protocol = Protocol.quick() if args.quick else Protocol()
    if args.passes is not None:
        protocol = dataclasses.replace(protocol, passes=args.passes)
    shard = Shard.parse(args.shard) if args.shard else None
    if shard is not None and shard.index >= len(plan_combos(spec)):
        print(
            f"warning: the grid has {len(plan_combos(spec))} runs, so shard {args.shard} holds none of them; use "
            "fewer shards",
            file=sys.stderr,
        )
    sweep = Sweep(args.out, backend, workload, spec, protocol, resume=args.resume, shard=shard, seed=args.seed)
    doc = sweep.run(progress=not args.no_progress)
    s = doc["sweep"]
    backwards = grid_step_monotonicity(doc)
    print(
        json.dumps(
            {
                "table": str(args.out),
                "complete": doc["complete"],
                "blocks": s["units_done"],
                "measurements": s["measurements"],
                "wall_s": s["wall_s"],
                "flagged": len(s["flagged"]),
                "drift_pct": round(s["reference"].get("drift_pct", 0.0), 2),
                "backwards_steps_pct": None if backwards is None else round(backwards, 2),
            }
        )
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    result = validate_table_file(
        args.table,
        points=args.points,
        models=args.models,
        depth=args.depth,
        retest=args.retest,
        seed=args.seed,
        protocol=Protocol.quick() if args.quick else None,
        progress=not args.no_progress,
        force=args.force,
        compare=args.compare,
    )
    shown = {k: v for k, v in result.items() if k not in ("blocks", "model_points")}
    print(json.dumps(shown, indent=1))
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    source = args.configs or args.models
    try:
        items = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {source}: {exc}") from None
    if not isinstance(items, list) or not items or not all(isinstance(c, dict) for c in items):
        kind = "models with emb and blocks" if args.models else "objects with emb, heads, qk, v, mlp"
        raise ValueError(f"{source} must hold a non-empty JSON list of {kind}")
    measure = measure_models if args.models else measure_configs
    latencies = measure(args.table, items, progress=not args.no_progress, force=args.force)
    print(json.dumps({"latency_ms": latencies}))
    return 0


COMMANDS = {"profile": cmd_profile, "validate": cmd_validate, "measure": cmd_measure}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS.get(args.command) or args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"interrupted{interrupted_hint(args)}", file=sys.stderr)
        return 130
    except DeviceMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except (ValueError, FileExistsError, TableFormatError, SweepMismatch, BackendUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written (permissions, a full disk): not a bug to trace
        print(f"error: {exc}", file=sys.stderr)
        return 2


def interrupted_hint(args: argparse.Namespace) -> str:
    """A sweep writes every finished run to its table, so an interrupted one is continued, not restarted."""
    out = getattr(args, "out", None)
    if args.command == "profile" and args.from_table is None and out is not None and Path(out).exists():
        return f": {out} keeps every finished run; the same command with --resume continues it"
    return ""


def _extension_modules() -> list:
    import importlib

    found = []
    for name in EXTENSION_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found
