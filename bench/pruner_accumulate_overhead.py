"""What importance accumulation adds to a training step, measured in the same run (acceptance: <= 10%).

Times the demo model's training step (batch 64, forward + backward + AdamW) four ways, interleaved round by round so
machine drift hits all alike: plain; plain + accumulate (gate gradients and their squares, NViT Eq. 4/6); and a
model half-pruned through gates (weights re-zeroed before each forward, active-channel LayerNorms) without and
with accumulate; and the accumulate call alone. Prints the medians and the ratios.

    .venv/bin/python -m bench.pruner_accumulate_overhead   # on an otherwise idle machine
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from examples.digits.digits import new_demo_model
from pruner.gates import Gates, gate_gradients
from pruner.importance import ImportanceAccumulator
from pruner.masking import apply_weight_masks, install_active_channel_norms, set_active_channels, weight_masks


def half_pruned_gates(model) -> Gates:
    gates = Gates.ones_like(model)
    gates.emb[96:] = 0
    for b in gates.blocks:
        b.heads[3:] = 0
        b.qk[16:] = 0
        b.v[24:] = 0
        b.mlp[256:] = 0
    return gates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=15, help="training steps per timed sample")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)

    plain = new_demo_model(0)
    pruned = new_demo_model(0)
    gates = half_pruned_gates(pruned)
    norms = install_active_channel_norms(pruned)
    set_active_channels(norms, gates)
    masks = weight_masks(pruned, gates)
    pruned.register_forward_pre_hook(lambda module, inputs: apply_weight_masks(masks))

    setups = {}
    for name, model, accumulate in (
        ("plain", plain, False),
        ("plain+accumulate", plain, True),
        ("gated", pruned, False),
        ("gated+accumulate", pruned, True),
    ):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        acc = ImportanceAccumulator(Gates.ones_like(model)) if accumulate else None
        setups[name] = (model, optimizer, acc)

    def run(name: str) -> float:
        model, optimizer, acc = setups[name]
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if acc is not None:
                acc.add(gate_gradients(model))
            optimizer.step()
        return (time.perf_counter() - start) * 1000 / args.steps

    def accumulate_only(name: str) -> float:
        """The accumulate call alone, on gradients left by a real backward pass."""
        model, _, acc = setups[name]
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        start = time.perf_counter()
        for _ in range(args.steps):
            acc.add(gate_gradients(model))
        return (time.perf_counter() - start) * 1000 / args.steps

    for name in setups:  # warm-up
        run(name)
    samples: dict[str, list[float]] = {name: [] for name in setups}
    samples |= {"accumulate_only_plain": [], "accumulate_only_gated": []}
    for r in range(args.rounds):
        order = list(setups) if r % 2 == 0 else list(reversed(setups))  # no name always runs first
        for name in order:
            samples[name].append(run(name))
        samples["accumulate_only_plain"].append(accumulate_only("plain+accumulate"))
        samples["accumulate_only_gated"].append(accumulate_only("gated+accumulate"))
    med = {name: statistics.median(v) for name, v in samples.items()}
    result = {
        "step_ms_median": {k: round(v, 2) for k, v in med.items()},
        "accumulate_overhead_plain": round(med["plain+accumulate"] / med["plain"] - 1, 4),
        "accumulate_overhead_gated": round(med["gated+accumulate"] / med["gated"] - 1, 4),
        "accumulate_only_share_plain": round(med["accumulate_only_plain"] / med["plain"], 4),
        "accumulate_only_share_gated": round(med["accumulate_only_gated"] / med["gated"], 4),
        "rounds": args.rounds,
        "steps_per_sample": args.steps,
        "threads": args.threads,
        "batch": 64,
    }
    # The isolated call is the cost accumulation adds; the paired step difference shows it end to end (noisier).
    result["passes"] = max(result["accumulate_only_share_plain"], result["accumulate_only_share_gated"]) <= 0.10
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
