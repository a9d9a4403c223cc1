"""When two table documents describe the same measurement: one key, used by resume, merge, check and the demo.

Two documents are compatible when everything that decides a latency is equal: the workload, the ViT around the
blocks, the grid, the part names, the timing protocol, the sweep layout, the device (name, kind and its `match`
fingerprint) and the software's `match` facts. What is only recorded (OS, clocks, python, numpy, ...) is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_ABSENT = object()


def compatibility_key(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a (version 2) document that must be equal for two tables to be one measurement."""
    device = doc.get("device") or {}
    software = doc.get("software") or {}
    sweep = doc.get("sweep") or {}
    return {
        "workload": doc.get("workload"),
        "model": doc.get("model"),
        "grid": doc.get("grid"),
        "parts": sorted(doc.get("parts") or {}),
        "protocol": doc.get("protocol"),
        "sweep": {"layout": sweep.get("layout")},
        "device": {"name": device.get("name"), "kind": device.get("kind"), "match": device.get("match") or {}},
        "software": {"match": software.get("match") or {}},
    }


def compatibility_mismatches(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    labels: tuple[str, str] = ("table", "here"),
    fields_of_a_only: bool = False,
) -> list[str]:
    """Every field in which the two documents' keys differ, as "dotted.path: <a> <value>, <b> <value>"
    (e.g. "device.match.cpu.isa.avx512_bf16: table True, here False"); empty when they are compatible.
    `fields_of_a_only`: fields that only `b` has are not differences (`b` is a partial view that may say more)."""
    out: list[str] = []
    _differences(compatibility_key(a), compatibility_key(b), "", labels, out, fields_of_a_only)
    return out


def _differences(a: Any, b: Any, where: str, labels: tuple[str, str], out: list[str], a_only: bool) -> None:
    if a is _ABSENT and a_only:
        return
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            here = f"{where}.{key}" if where else str(key)
            _differences(a.get(key, _ABSENT), b.get(key, _ABSENT), here, labels, out, a_only)
    elif a != b or isinstance(a, bool) != isinstance(b, bool):  # JSON tells true from 1
        out.append(f"{where}: {labels[0]} {_show(a)}, {labels[1]} {_show(b)}")


def _show(value: Any) -> str:
    return "absent" if value is _ABSENT else repr(value)
