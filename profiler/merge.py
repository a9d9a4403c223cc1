"""`python -m profiler merge SHARD.json... --out TABLE.json`: combine the shards of a sharded sweep into one table.

Shards are profiled with `profile --shard i/n` on several GPUs or machines. They merge only when everything that
decides a latency is the same (`lut_server.table_compat`: workload, model, grid, parts, protocol, sweep layout,
device name, kind and fingerprint, software that changes kernels); the refusal names every field that differs.
Shards are merged run by run (the raw records of each pipeline run and pass), and the part cells are derived
again from the union, exactly as a single sweep derives them. Overlapping runs are refused, never averaged: two
measurements of one run and pass mean the shards do not come from one split (or one was re-run), and silently
picking either would hide that. The merged table is complete when every run is covered; it carries no
validation (run `profiler validate` on it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lut_server.atomic_file import require_writable
from lut_server.table_compat import compatibility_mismatches
from lut_server.table_format import TableFormatError, read_table, write_table
from profiler.environment import utc_now
from profiler.sweep import Combo, combo_dims, derive_parts, plan_combos, spec_of


class ShardMismatch(ValueError):
    """Shards that cannot be one table; the message names the file and the field."""


def check_compatible(docs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
    for doc, name in zip(docs[1:], names[1:], strict=True):
        mismatches = compatibility_mismatches(docs[0], doc, labels=(names[0], name))
        if mismatches:
            raise ShardMismatch(
                f"{name} differs from {names[0]} in " + "; ".join(mismatches) + "; shards must share every setting "
                "to be merged"
            )
    seen: dict[str, str] = {}
    for doc, name in zip(docs, names, strict=True):
        shard = (doc.get("sweep") or {}).get("shard")
        if shard is None:
            continue
        label = f"{shard['index']}/{shard['count']}"
        for other_label, other_name in seen.items():
            if other_label.split("/")[1] != str(shard["count"]):
                raise ShardMismatch(
                    f"{name} is shard {label} but {other_name} is shard {other_label}: the shards of one split share "
                    "its count n (profile --shard i/n with one n)"
                )
        if label in seen:
            raise ShardMismatch(f"{name} and {seen[label]} are both shard {label}")
        seen[label] = name


def merge_tables(docs: Sequence[Mapping[str, Any]], names: Sequence[str], allow_incomplete: bool = False) -> dict:
    """One table from compatible shards; raises ShardMismatch on differing settings or overlapping runs."""
    if not docs:
        raise ValueError("merge needs at least one shard")
    for doc, name in zip(docs, names, strict=True):
        sweep = doc.get("sweep")
        runs = sweep.get("records") if isinstance(sweep, Mapping) else None
        if (
            not isinstance(sweep, Mapping)
            or "parts" not in sweep
            or not isinstance(runs, list)
            or any(not isinstance(r, Mapping) or "pass" not in r or "combo" not in r for r in runs)
        ):
            raise ShardMismatch(
                f"{name} records no sweep runs (made without a sweep, or by `profile --from`); merge joins the shards "
                "of one sweep"
            )
    check_compatible(docs, names)
    spec = spec_of(docs[0])
    passes = int(docs[0]["protocol"].get("passes", 1))
    merged = json.loads(json.dumps(docs[0]))  # deep copy; shard 0's metadata is the base
    owner: dict[tuple[int, Combo], str] = {}
    records = []
    for doc, name in zip(docs, names, strict=True):
        for record in doc["sweep"]["records"]:
            key = (record["pass"], tuple(record["combo"]))
            if key in owner:
                raise ShardMismatch(
                    f"run {combo_dims(spec, key[1]).as_dict()} (pass {key[0]}) is measured in both {owner[key]} and "
                    f"{name}; shards of one split never overlap (was a shard re-run or given twice?)"
                )
            owner[key] = name
            records.append(record)
    combos = plan_combos(spec)
    missing = [c for c in combos if any((p, c) not in owner for p in range(passes))]
    if missing and not allow_incomplete:
        example = ", ".join(str(combo_dims(spec, c).as_dict()) for c in missing[:2])
        raise ShardMismatch(
            f"the shards cover {len(combos) - len(missing)} of {len(combos)} runs; {len(missing)} are missing "
            f"(e.g. {example}). Merge all shards, or pass --allow-incomplete to write a partial table "
            "(`profile --resume` on it, with the same settings and no --shard, measures the missing runs)"
        )
    sweeps = [doc.get("sweep") or {} for doc in docs]
    merged["complete"] = not missing
    merged["created"] = utc_now()
    merged["validation"] = None
    merged.pop("levels", None)
    merged["sweep"] = {
        "layout": sweeps[0].get("layout"),
        "parts": sweeps[0].get("parts"),
        "records": records,
        "measurements": sum(int(s.get("measurements", 0)) for s in sweeps),
        "units_done": len(owner),
        "units_planned": len(combos) * passes,
        "wall_s": round(max(float(s.get("wall_s", 0.0)) for s in sweeps), 2),  # shards run side by side
        "shard": None,
        "seed": sweeps[0].get("seed"),
        "reference": {
            "dims": (sweeps[0].get("reference") or {}).get("dims"),
            "series": [],
            "drift_pct": max(float((s.get("reference") or {}).get("drift_pct", 0.0)) for s in sweeps),
        },
        "flagged": [f for s in sweeps for f in s.get("flagged", [])],
        "merged_from": [
            {
                "file": name,
                "shard": s.get("shard"),
                "created": doc.get("created"),
                "host": _host(doc),
                "units": sum(1 for c in owner.values() if c == name),
                "measurements": s.get("measurements"),
                "wall_s": s.get("wall_s"),
                "drift_pct": (s.get("reference") or {}).get("drift_pct"),
                "reference": (s.get("reference") or {}).get("series", []),
            }
            for doc, name, s in zip(docs, names, sweeps, strict=True)
        ],
    }
    derive_parts(merged)
    return merged


def _host(doc: Mapping[str, Any]) -> Any:
    device = doc.get("device") or {}
    return device.get("host") or {k: device.get(k) for k in ("cpu", "os") if k in device} or None


def merge_files(paths: Sequence[Path], out: Path, allow_incomplete: bool = False, force: bool = False) -> dict:
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    require_writable(out)
    names = [p.name for p in paths]
    if len(set(map(str, paths))) != len(paths):
        raise ShardMismatch("the same shard file is given twice")
    docs = [read_table(p) for p in paths]
    merged = merge_tables(docs, names, allow_incomplete=allow_incomplete)
    write_table(out, merged)
    return merged


def cmd_merge(args: argparse.Namespace) -> int:
    try:
        merged = merge_files(args.shards, args.out, allow_incomplete=args.allow_incomplete, force=args.force)
    except (ShardMismatch, TableFormatError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = merged["sweep"]
    summary = {
        "table": str(args.out),
        "complete": merged["complete"],
        "shards": len(args.shards),
        "blocks": s["units_done"],
        "blocks_planned": s["units_planned"],
        "measurements": s["measurements"],
    }
    print(json.dumps(summary))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("merge", help="combine the shards of a `profile --shard i/n` sweep into one table")
    p.add_argument("shards", nargs="+", type=Path, help="shard table files")
    p.add_argument("--out", required=True, type=Path, help="tables/ID.json")
    p.add_argument("--allow-incomplete", action="store_true", help="write even if some cells are not covered")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(handler=cmd_merge)
