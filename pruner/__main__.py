"""`python -m pruner demo --server URL --table ID --target 0.5 --out DIR`: the end-to-end pruning demo."""

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
    demo.add_argument("--eta", type=float, default=1.0, help="weight of the normalised latency term")
    demo.add_argument("--cache", type=Path, default=None, help="where the trained original is cached (OUT/cache)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--prune-every", type=int, default=6, help="training iterations between pruning steps")
    demo.add_argument("--groups-per-step", type=int, default=2)
    demo.add_argument("--finetune-epochs", type=int, default=30)
    demo.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lut_server.client import LatencyServiceError
    from pruner.demo import run_demo, summary_lines

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
        )
    except (LatencyServiceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    print(json.dumps({"report": str(args.out / "report.json"), **report["checks"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
