"""`python -m profiler check TABLE`: does this table hold on the machine in front of the user?

Two questions, in a minute. Is this the table's device and software (the fingerprint's `match` fields, every
differing field named)? And has the machine drifted since the table was measured? For the second, the table's
reference configuration and K grid combinations are re-timed exactly as the sweep timed them (two blocks of a
combination inside the stem-to-head pipeline, stage by stage, with the table's protocol) and compared with the
table's raw cells, which hold no interpolation error. All points are timed in two shuffled passes, and each pass
gives its own drift (the median over points of measured / table, so one burst of load on one point does not move
it).

The table's cells are at the speed the machine had during its sweep; a calibrated table moves them to the
machine's typical speed (`calibration.level`, the median over the sessions it recorded, see
`profiler/level_history.py`), and drift is measured against that. `--record` adds this check to those sessions
(the level measured over the raw cells), so a later `calibrate` learns from it.

The table is `stale` only when every pass drifted beyond the threshold on the same side: a burst of load during
one pass cannot call a table stale, and a noisy machine cannot hide a table that is off in every pass (the
passes' disagreement is reported as noise, not added to the threshold). The threshold is the larger of 3% and
the machine's own wander as the table recorded it: the 90th percentile of how far its speed strayed from the
middle of each record, over the sweep's reference re-times and the latest validation's levels (each validated
point's measured over level-normalised time), each against its own median; or, if larger, the spread of the
sessions that `calibrate` kept beside the level (five sessions or more). A sweep lasts minutes and a shared machine
also wanders over hours; validations and recorded checks, taken later, sample that. Sessions recorded since the
last `calibrate` widen nothing: after a lasting change of the machine they are that change, and an offset a
validation found is drift, not wander. A drift within the range the table's own records show is no evidence that
the table went stale.
Drift is compared as a ratio, so a table three times too slow is as stale as one three times too fast.

Exit codes: 0 `holds`, 3 `stale` (same device, drifted beyond the threshold in every pass), 4 `different` (device
or software differs).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from lut_server.atomic_file import require_writable
from lut_server.calibration import correction_of
from lut_server.dims import BlockDims
from lut_server.table_format import incomplete_reason, read_table, write_table
from profiler.backends import Backend, BackendUnavailable
from profiler.fingerprint import cpu_device, fingerprint_mismatches, flatten, software, torch_software
from profiler.level_history import calibrated_level_range_pct, hourly_levels, record_level, typical_level
from profiler.machine_level import predicted_pair_ms
from profiler.sweep import combo_dims, plan_combos, spec_of
from profiler.timing import Protocol, measure
from profiler.transfer import default_budget
from profiler.validate import backend_for_table, workload_for_table
from profiler.workload import block_stages_of, build_pipeline

EXIT_CODES: dict[str, int] = {"holds": 0, "stale": 3, "different": 4}
DRIFT_FLOOR_PCT = 3.0
"""Drift below this never makes a table stale: it is within the accuracy bar a table is validated against."""


@dataclass(frozen=True)
class CheckPoint:
    dims: BlockDims
    predicted_ms: float
    passes_ms: tuple[float, ...]

    @property
    def measured_ms(self) -> float:
        return float(np.mean(self.passes_ms))

    @property
    def drift_pct(self) -> float:
        return 100.0 * (self.measured_ms - self.predicted_ms) / self.predicted_ms

    @property
    def noise_pct(self) -> float:
        return 100.0 * (max(self.passes_ms) - min(self.passes_ms)) / self.measured_ms


def pass_drifts_pct(timed: list[CheckPoint]) -> list[float]:
    """Each pass's drift: the median over points of its measured / table ratio, in percent."""
    passes = len(timed[0].passes_ms)
    return [
        100.0 * (float(np.exp(median(np.log(p.passes_ms[k] / p.predicted_ms) for p in timed))) - 1.0)
        for k in range(passes)
    ]


def check_points(doc: Mapping[str, Any], count: int, seed: int) -> list[BlockDims]:
    """The reference configuration, then `count` grid combinations as the sweep ran them."""
    spec = spec_of(doc)
    reference = BlockDims(**doc["sweep"]["reference"]["dims"])
    combos = plan_combos(spec)
    picked = random.Random(seed).sample(combos, min(count, len(combos)))
    return [reference, *(combo_dims(spec, c) for c in picked)]


def table_level(doc: Mapping[str, Any]) -> float:
    """The speed the table answers at, relative to its raw cells: its calibration's level (1 uncalibrated)."""
    return correction_of(doc.get("calibration")).level


def time_points(
    doc: Mapping[str, Any], backend: Backend, points: list[BlockDims], passes: int, seed: int
) -> list[CheckPoint]:
    workload = workload_for_table(doc)
    protocol = Protocol.from_dict(doc["protocol"])
    with_model = bool({"stem", "head"} & set(doc["parts"]))
    split = block_stages_of(doc["parts"])
    timed: list[list[float]] = [[] for _ in points]
    order = list(range(len(points)))
    rng = random.Random(seed)
    for _ in range(passes):
        rng.shuffle(order)
        for i in order:
            _, stages, inputs = build_pipeline([points[i], points[i]], workload, with_model, block_stages=split)
            timed[i].append(measure(backend.prepare_pipeline(stages, inputs), protocol).median_ms)
    level = table_level(doc)
    return [CheckPoint(p, level * predicted_pair_ms(doc, p), tuple(t)) for p, t in zip(points, timed, strict=True)]


WANDER_MIN_LEVELS = 5
"""Fewer levels than this say nothing about how the machine wandered (a quick sweep re-times its reference twice)."""


def _departures_pct(levels: list[float]) -> list[float]:
    if len(levels) < WANDER_MIN_LEVELS:
        return []
    middle = float(median(levels))
    return [100.0 * abs(v / middle - 1.0) for v in levels]


def recorded_departures_pct(doc: Mapping[str, Any]) -> list[float]:
    """How far the machine's speed strayed, at each moment the table recorded it, from the middle of that record:
    the sweep's reference re-times against their median, and the latest validation's levels (each validated point's
    measured over level-normalised time) against theirs. Each against its own middle, because a validation taken
    while the table was already off measures that offset, which is drift, not wander: counting it would let a stale
    table excuse itself by being validated again. A validation from another device (`--force`) is left out."""
    series = [float(s["median_ms"]) for s in ((doc.get("sweep") or {}).get("reference") or {}).get("series") or []]
    departures = _departures_pct(series)
    validation = doc.get("validation") or {}
    device = (doc.get("device") or {}).get("name")
    if validation.get("device", device) == device and not validation.get("forced"):
        points = [*(validation.get("blocks") or []), *(validation.get("model_points") or [])]
        levels = [
            float(p["measured_ms"]) / float(p["level_normalised_ms"]) for p in points if p.get("level_normalised_ms")
        ]
        departures += _departures_pct(levels)
    return departures


def _p90(values: list[float]) -> float:
    return float(np.percentile(values, 90)) if values else 0.0


def wander_pct(doc: Mapping[str, Any]) -> float:
    """The machine's wander as the table recorded it: the 90th percentile of the departures within its records, or
    the spread of its sessions that `calibrate` kept with its level if larger, in percent (0 with none). Percentiles
    rather than maxima, so one burst of load while profiling, validating or checking does not excuse any drift."""
    spread = (doc.get("calibration") or {}).get("level_spread_pct")
    return max(_p90(recorded_departures_pct(doc)), float(spread or 0.0))


def drift_threshold_pct(wander: float) -> float:
    return max(DRIFT_FLOOR_PCT, wander)


def beyond_threshold(drift_pct: float, threshold_pct: float) -> bool:
    """Whether a drift lies beyond the threshold, compared as a ratio (three times slower as far as three faster)."""
    return abs(float(np.log1p(drift_pct / 100.0))) > float(np.log1p(threshold_pct / 100.0))


def verdict_of(mismatches: list[str], pass_drifts: list[float], threshold_pct: float) -> str:
    """`different` on any mismatch; `stale` when every pass's drift ratio lies beyond the threshold on one side."""
    if mismatches:
        return "different"
    beyond = [d for d in pass_drifts if beyond_threshold(d, threshold_pct)]
    one_side = all(d > 0 for d in beyond) or all(d < 0 for d in beyond)
    return "stale" if pass_drifts and len(beyond) == len(pass_drifts) and one_side else "holds"


def stand_in_here(doc: Mapping[str, Any]) -> dict[str, Any]:
    """This machine as far as it can be told without the table's backend: its CPU (also as a GPU table's host CPU),
    torch and whichever of the table's other packages are installed, so each of the table's fields is compared
    with what is really here."""
    from profiler.environment import package_version

    device = cpu_device(None)
    if "host_cpu" in (doc["device"].get("match") or {}):
        device["match"]["host_cpu"] = device["match"]["cpu"]["model_name"]
    found = torch_software(matmul_precision=False)
    for name in (doc.get("software") or {}).get("match") or {}:
        if name not in found and (version := package_version(name)):
            found[name] = version
    return {"device": device, "software": software(found)}


def machine_here(doc: Mapping[str, Any]) -> tuple[Backend | None, dict[str, Any], list[str]]:
    """The table's backend on this machine (None where it cannot run here), this machine's fingerprint and every
    field in which it differs from the table's. A backend that cannot run here with the table's settings (a GPU
    table on a machine without that GPU, a TensorRT release that cannot build as the table did, an environment
    variable overruling its math mode) is an answer, `different`, not an error: the reason leads the differences,
    then every field the table records that differs from what stands in for this machine (fields only this machine
    has are left out: they say nothing more)."""
    try:
        backend = backend_for_table(doc)
    except (BackendUnavailable, ValueError) as exc:
        here = stand_in_here(doc)
        reason = f"workload.backend: {doc['workload']['backend']} cannot run here with the table's settings ({exc})"
        return None, here, [reason, *fingerprint_mismatches(doc, here, recorded_only=True)]
    here = backend.environment()
    return backend, here, fingerprint_mismatches(doc, here)


def check_table(
    path: str | Path, points: int = 6, seed: int = 0, passes: int = 2, record: bool = False
) -> dict[str, Any]:
    """The fingerprint comparison, and (on the table's device) the drift of re-timed points; see the module doc.
    `record`: add the level measured here to the table's sessions (only on the table's device)."""
    doc = read_table(path)
    if not doc.get("complete"):
        raise ValueError(f"{incomplete_reason(Path(path).name)}; its missing cells cannot be checked")
    backend, here, mismatches = machine_here(doc)
    if backend is not None and not mismatches:  # on the table's device: re-timing follows
        if not ((doc.get("sweep") or {}).get("reference") or {}).get("dims"):
            raise ValueError(
                f"{Path(path).name} records no sweep reference; `check` re-times the reference and cells a sweep "
                "measured"
            )
        if record:
            require_writable(path)  # before the timing, so the level measured is not lost
    result: dict[str, Any] = {
        "table": Path(path).name,
        "device_match": not mismatches,
        "mismatches": mismatches,
        "device": {"table": doc["device"].get("name"), "here": here["device"]["name"]},
        "fingerprint": {"device": here["device"].get("match"), "software": here["software"].get("match")},
        "drift_pct": None,
        "noise_pct": None,
        "points": [],
    }
    pass_drifts: list[float] = []
    wander = wander_pct(doc)
    threshold = drift_threshold_pct(wander)
    if backend is not None and not mismatches:
        timed = time_points(doc, backend, check_points(doc, points, seed), passes, seed)
        result["drift_pct"] = round(float(median(p.drift_pct for p in timed)), 3)
        result["noise_pct"] = round(float(median(p.noise_pct for p in timed)), 3)
        pass_drifts = pass_drifts_pct(timed)
        level = table_level(doc)
        typical, sessions = typical_level(doc)
        raw_level_pct = 100.0 * (level * float(median(p.measured_ms / p.predicted_ms for p in timed)) - 1.0)
        result["level_pct"] = round(raw_level_pct, 3)
        result["table_level_pct"] = round(100.0 * (level - 1.0), 3)
        seen = calibrated_level_range_pct(doc)
        result["sessions"] = {
            "count": sessions,
            "hours": len(hourly_levels(doc)),
            "typical_level_pct": round(100.0 * (typical - 1.0), 3),
            "range_pct": None if seen is None else [round(seen[0], 3), round(seen[1], 3)],
            "range_count": None if seen is None else seen[2],
        }
        result["pass_drift_pct"] = [round(d, 3) for d in pass_drifts]
        result["wander_pct"] = round(wander, 3)
        result["threshold_pct"] = round(threshold, 3)
        result["points"] = [
            {
                **p.dims.as_dict(),
                "stack": 2,
                "predicted_ms": round(p.predicted_ms, 5),
                "measured_ms": round(p.measured_ms, 5),
                "drift_pct": round(p.drift_pct, 3),
                "noise_pct": round(p.noise_pct, 3),
            }
            for p in timed
        ]
        series = doc["sweep"]["reference"].get("series") or []
        if series:
            then = float(series[-1]["median_ms"])
            result["reference_drift_pct"] = round(100.0 * (timed[0].measured_ms - then) / then, 3)
    result["verdict"] = verdict_of(mismatches, pass_drifts, threshold)  # unrounded: the display rounds, not the verdict
    result["recorded"] = False
    if record and not mismatches:
        latest = read_table(path)  # as it is now, so a session recorded meanwhile is kept
        record_level(latest, "check", result["level_pct"], len(result["points"]) * passes, here["device"]["name"])
        write_table(path, latest)
        result["recorded"] = True
    result["exit_code"] = EXIT_CODES[result["verdict"]]
    result["backend_runs_here"] = backend is not None  # a table re-derived here needs its backend to run here
    result["next"] = None if result["verdict"] == "holds" or backend is None else refresh_command(Path(path), doc)
    return result


def refresh_command(path: Path, doc: Mapping[str, Any]) -> str:
    """What fixes a table that does not hold here: the same table re-derived for this machine from a few runs."""
    out = path.with_name(path.stem + "-here.json")
    return f"python -m profiler profile --from {path} --budget {default_budget(doc)} --out {out}"


def hours_of(sessions: Mapping[str, Any]) -> str:
    """' in N hours' where the result says (the typical level is the median hour's, not the median session's)."""
    hours = sessions.get("hours")
    return "" if hours is None else f" in {hours} hour{'s' if hours != 1 else ''}"


def format_report(result: Mapping[str, Any]) -> str:
    lines = [f"table   {result['table']}: {result['device']['table']}", f"here    {result['device']['here']}"]
    for section, match in result["fingerprint"].items():
        flat = flatten(match or {})
        shown = {k: v for k, v in flat.items() if v not in (False, None, {})}
        lines.append(f"{section:7s} " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    for line in result["mismatches"]:
        lines.append(f"DIFFERS {line}")
    for p in result["points"]:
        dims = "/".join(str(p[a]) for a in ("emb", "heads", "qk", "v", "mlp"))
        lines.append(
            f"point   {dims:>22s}  table {p['predicted_ms']:9.4f} ms  here {p['measured_ms']:9.4f} ms  "
            f"drift {p['drift_pct']:+6.2f}%  noise {p['noise_pct']:5.2f}%"
        )
    if result["drift_pct"] is not None:
        passes = ", ".join(f"{d:+.2f}%" for d in result["pass_drift_pct"])
        faster = 100.0 * (1.0 - 1.0 / (1.0 + result["threshold_pct"] / 100.0))
        lines.append(
            f"drift   {result['drift_pct']:+.2f}% (median of {len(result['points'])} points; passes {passes}), "
            f"noise {result['noise_pct']:.2f}%, recorded wander {result['wander_pct']:.2f}%, "
            f"threshold -{faster:.2f}% / +{result['threshold_pct']:.2f}%"
        )
        sessions = result["sessions"]
        lines.append(
            f"level   latencies here {result['level_pct']:+.2f}% against the sweep's; the table answers at "
            f"{result['table_level_pct']:+.2f}% (sessions: {sessions['count']}{hours_of(sessions)}, median "
            f"{sessions['typical_level_pct']:+.2f}%)" + ("; this check recorded" if result.get("recorded") else "")
        )
    lines.append(f"verdict {result['verdict']} (exit {result['exit_code']})")
    if result["verdict"] == "stale":
        lines.append(stale_reason(result))
    elif median_beyond_but_holds(result):
        lines.append(holds_reason(result))
    if result.get("next"):
        lines.append(f"next    {result['next']}")
    elif result.get("backend_runs_here") is False:
        lines.append(
            "next    check it on the table's device; for this machine, profile a table of a backend that runs here "
            "(python -m profiler doctor lists them)"
        )
    return "\n".join(lines)


def median_beyond_but_holds(result: Mapping[str, Any]) -> bool:
    """A table holds while its median drift lies beyond the threshold when some pass lay within it."""
    timed = result["verdict"] == "holds" and result.get("drift_pct") is not None
    return timed and beyond_threshold(result["drift_pct"], result["threshold_pct"])


def holds_reason(result: Mapping[str, Any]) -> str:
    """Why `holds` although the median drift lies beyond the threshold: the verdict asks every pass to agree."""
    within = [f"{d:+.2f}%" for d in result["pass_drift_pct"] if not beyond_threshold(d, result["threshold_pct"])]
    which = (
        f"{'pass' if len(within) == 1 else 'passes'} {', '.join(within)} lay within it"
        if within
        else "the passes drifted to both sides of it"
    )
    return (
        f"why     the median drift lies beyond the threshold, but {which}: a burst of load during a pass does not "
        "make a table stale; check again in a while to be sure"
    )


def stale_reason(result: Mapping[str, Any]) -> str:
    """Why `stale`, with the evidence for a slow hour or a lasting change: whether the level measured here lies within
    the levels the table's recorded sessions reached."""
    why = "why     this machine runs at another speed than the table answers at, in every pass, beyond the wander "
    span = (result.get("sessions") or {}).get("range_pct")
    level = result.get("level_pct")
    if span is None or level is None or len(span) != 2:
        return why + (
            "the table recorded; on a shared machine that can pass: check again in a while, and if it stays stale, "
            "re-derive the table here"
        )
    lo, hi = span
    count = result["sessions"]["range_count"]
    if lo <= level <= hi:
        return why + (
            f"the table recorded; its {count} sessions (the sweep included) reached {lo:+.2f}% … {hi:+.2f}% against "
            f"the sweep and this check {level:+.2f}%, so this can be a slow hour: check again in a while, and if it "
            "stays stale, re-derive the table here"
        )
    return why + (
        f"the table recorded; this check ({level:+.2f}% against the sweep) lies outside all {count} sessions "
        f"(the sweep included) its calibration saw ({lo:+.2f}% … {hi:+.2f}%), which points to a changed machine "
        "rather than a slow hour: re-derive the table here, or check again later"
    )


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="does this table hold on this machine? (exit 0 holds, 3 stale, 4 different)")
    p.add_argument("table", type=Path)
    p.add_argument(
        "--points", type=int, default=6, help="grid combinations re-timed besides the reference (default %(default)s)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="the draws: grid combinations and timing order (default %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--record", action="store_true", help="add the level measured here to the table's sessions (for calibrate)"
    )
    p.set_defaults(handler=_cmd_check)


def _cmd_check(args: Any) -> int:
    import json

    if args.points < 0:
        raise ValueError(f"--points must be >= 0, got {args.points}")
    result = check_table(args.table, points=args.points, seed=args.seed, record=args.record)
    print(json.dumps(result, indent=1) if args.json else format_report(result), file=sys.stdout)
    return result["exit_code"]
