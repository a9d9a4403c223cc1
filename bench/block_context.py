"""A block's latency depends on the model around it: the table against the block timed inside a random model and as
a loop of two.

`validate` and `measure --configs` time a block as a stack of two run in a loop, so between two calls of the block
only its twin runs; a narrow block's weights then stay in cache, as they do not inside a model of wider blocks. This
times each block both ways on the table's own settings: inside a random 12-block model of its EMB (drawn as
`validate` draws its models, the block at position 6; stages timed inside the running pipeline, as the sweep times
them, and the block's own stages summed) and as the loop of two (the whole graph, per block). The ratio loop / in
model is the figure; a table has one latency per block, so for blocks where the two differ, no table answers both.

    .venv/bin/python -m bench.block_context tables/T.json --points 12   # on an otherwise idle machine
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import Any

from lut_server.dims import BlockDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import read_table
from profiler.device_match import ensure_same_device
from profiler.sweep import spec_of
from profiler.timing import Protocol, measure
from profiler.validate import backend_here, block_stack, lattice_values, random_blocks, workload_for_table
from profiler.workload import block_stages_of, build_block, build_pipeline

DEPTH = 12
NARROW_MLP = 256
"""Below this MLP width a block is called narrow in the summary: the validations' largest block errors are there."""


def model_around(block: BlockDims, table: LatencyTable, rng: random.Random, depth: int = DEPTH) -> list[BlockDims]:
    """A random model of the block's EMB with the block at position depth // 2; the others drawn as validate's."""
    others = random_blocks(table, depth - 1, rng, emb=block.emb, off_grid=False)
    return [*others[: depth // 2], block, *others[depth // 2 :]]


def block_stage_indices(position: int, stages_per_block: int, with_model: bool) -> range:
    """Where the stages of block `position` sit among `build_pipeline`'s stages (after the stem, where there is one)."""
    first = (1 if with_model else 0) + stages_per_block * position
    return range(first, first + stages_per_block)


def block_contexts(
    doc: Mapping[str, Any], blocks: Sequence[BlockDims], seed: int = 0, force: bool = False
) -> list[dict[str, Any]]:
    """Each block: the table's raw and calibrated answer, its stages' sum inside a random model, and the loop."""
    backend = backend_here(doc, "time blocks")
    for line in ensure_same_device(doc, backend, force, action="time blocks"):
        print(f"warning (--force): {line}", file=sys.stderr)
    workload = workload_for_table(doc)
    protocol = Protocol.from_dict(doc["protocol"])
    spec = spec_of(doc)
    stages_per_block = len(block_stages_of(spec.parts))
    with_model = bool({"stem", "head"} & set(spec.parts))
    raw, calibrated = LatencyTable(doc, calibrated=False), LatencyTable(doc)
    stack = block_stack(doc)
    rng = random.Random(seed)
    rows = []
    for block in blocks:
        model = model_around(block, raw, rng)
        _, stages, inputs = build_pipeline(model, workload, with_model, block_stages=block_stages_of(spec.parts))
        timed = measure(backend.prepare_pipeline(stages, inputs), protocol)
        in_model = sum(timed.stage_median_ms[i] for i in block_stage_indices(DEPTH // 2, stages_per_block, with_model))
        loop = measure(backend.prepare(*build_block(block, workload, stack=stack)), protocol).median_ms / stack
        rows.append({
            "dims": block.as_dict(),
            "table_ms": round(float(raw.block_latency([block])[0]), 4),
            "calibrated_ms": round(float(calibrated.block_latency([block])[0]), 4),
            "in_model_ms": round(in_model, 4),
            f"loop_of_{stack}_ms": round(loop, 4),
            "loop_over_in_model": round(loop / in_model, 4),
        })  # fmt: skip
    return rows


def summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Median ratio loop / in model, and the table's median signed error against each, for narrow and other blocks."""
    out: dict[str, Any] = {}
    loop_key = next(k for k in rows[0] if k.startswith("loop_of_"))
    for name, group in (("narrow", [r for r in rows if r["dims"]["mlp"] < NARROW_MLP]),
                        ("other", [r for r in rows if r["dims"]["mlp"] >= NARROW_MLP])):  # fmt: skip
        if not group:
            continue
        out[name] = {
            "blocks": len(group),
            "loop_over_in_model": round(median(r["loop_over_in_model"] for r in group), 4),
            "table_vs_in_model_pct": round(median(100 * (r["table_ms"] / r["in_model_ms"] - 1) for r in group), 2),
            "table_vs_loop_pct": round(median(100 * (r["table_ms"] / r[loop_key] - 1) for r in group), 2),
        }
    return out


def drawn_blocks(doc: Mapping[str, Any], points: int, seed: int) -> list[BlockDims]:
    """Random lattice blocks as `validate` draws them (off the grid on every axis), half of them with an MLP narrower
    than NARROW_MLP where the table's MLP range holds both kinds."""
    table = LatencyTable(doc, calibrated=False)
    rng = random.Random(seed)
    off_grid_mlp = [v for v in lattice_values(table, "mlp") if v not in table.grid["mlp"]]
    if len({v < NARROW_MLP for v in off_grid_mlp}) < 2:  # a table with no narrow MLP, or only narrow ones
        return random_blocks(table, points, rng)
    blocks: list[BlockDims] = []
    while len(blocks) < points:
        block = random_blocks(table, 1, rng)[0]
        narrow_wanted = len(blocks) % 2 == 0
        if (block.mlp < NARROW_MLP) == narrow_wanted:
            blocks.append(block)
    return blocks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--points", type=int, default=12, help="random lattice blocks, half of them narrow")
    parser.add_argument("--seed", type=int, default=0, help="the blocks and the models around them")
    parser.add_argument("--force", action="store_true", help="time even where the device fingerprint differs")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows and summary as JSON here")
    args = parser.parse_args(argv)
    if args.points < 1:
        parser.error("--points must be at least 1")
    doc = read_table(args.table)
    rows = block_contexts(doc, drawn_blocks(doc, args.points, args.seed), args.seed, args.force)
    for row in rows:
        print(json.dumps(row))
    result = {"table": args.table.name, "seed": args.seed, "summary": summary(rows)}
    print(json.dumps(result["summary"]), file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(result | {"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
