"""η = 0 (pure Hessian importance) against η > 0 (latency-aware) at the same latency target, on the digits demo.

Same trained original, same seed, same table (this machine's demo table, profiled if missing), same schedule:
prune while finetuning until the table predicts target x original, finetune, compact. Reports held-out accuracy,
pruning steps, final dims and the predicted and measured latency of each compacted model, whichever way it falls.

    .venv/bin/python -m bench.pruner_eta --etas 0 1   # on an otherwise idle machine: it times models
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import torch

from examples.digits.demo import measure_latency, original_model, prune
from examples.digits.demo_table import profile_demo_table
from examples.digits.digits import DIGITS_CONFIG, accuracy, load_digits_split
from examples.digits.digits import train as train_model
from lut_server.latency_table import LatencyTable
from pruner.objectives import nvit_objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=Path("demo-out/tables/digits-vit-cpu-b64.json"))
    parser.add_argument("--cache", type=Path, default=Path("demo-out/prune/cache"))
    parser.add_argument("--etas", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the result JSON here")
    args = parser.parse_args()
    threads = min(2, os.cpu_count() or 1)
    if not args.table.exists():
        profile_demo_table(args.table, DIGITS_CONFIG)
    table = LatencyTable.load(args.table)
    torch.set_num_threads(threads)
    split = load_digits_split(seed=args.seed)
    original, _ = original_model(split, args.cache, args.seed)
    base_acc = accuracy(original, split.test_x, split.test_y)

    def loss_fn(model, x, y):
        with torch.no_grad():
            teacher = original.forward_both(x)
        return nvit_objective(model.forward_both(x), y, teacher=teacher, alpha=1.0, tau=1.0)

    runs = {}
    compacted = {"original": original}
    for eta in args.etas:
        torch.manual_seed(args.seed)
        student = copy.deepcopy(original)
        p, _ = prune(student, original, split, table, args.target, eta, 6, 2, args.seed)
        before_ft = accuracy(student, split.test_x, split.test_y)
        train_model(student, split, args.finetune_epochs, lr=1e-3, seed=args.seed + 2, loss_fn=loss_fn)
        small = p.compact().eval()
        compacted[f"eta={eta:g}"] = small
        runs[f"eta={eta:g}"] = {
            "eta": eta,
            "steps": len(p.history),
            "groups_removed": sum(len(r.removed) for r in p.history),
            "accuracy_before_finetune": before_ft,
            "accuracy": accuracy(small, split.test_x, split.test_y),
            "predicted_ms": table.model_latency(small.model_dims),
            "dims": small.model_dims.as_dict(),
            "parameters": sum(t.numel() for t in small.parameters()),
        }
        torch.set_num_threads(threads)
    measured = measure_latency(compacted)
    for name, run in runs.items():
        run["measured_ms"] = measured[name]
    result = {
        "target_ratio": args.target,
        "original": {"accuracy": base_acc, "predicted_ms": table.model_latency(original.model_dims),
                     "measured_ms": measured["original"]},
        "runs": runs,
    }  # fmt: skip
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
