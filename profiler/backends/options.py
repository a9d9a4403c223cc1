"""Each backend's options, declared with their allowed values and checked in one place.

A table records the options it was profiled with, so an option a backend would ignore (CUDA graphs on onnxruntime,
2:4 sparsity on torch) must be refused rather than recorded: a table that says "cuda_graphs" must have been timed
with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OptionSpec:
    """One option: its type, the values it may take, its default, and when it applies.

    `allowed` lists the accepted values (None: any value of `kind` within `bounds`). `applies` says, from the other
    resolved options, whether the option means anything (onnxruntime's `tf32` only with the CUDA provider); an option
    that does not apply may not be given a non-default value and is left out of the resolved options. `recorded`
    False keeps a local setting (a cache directory) out of the table.
    """

    name: str
    kind: type
    default: Any
    help: str
    allowed: tuple[Any, ...] | None = None
    bounds: tuple[float | None, float | None] = (None, None)
    applies: Callable[[Mapping[str, Any]], bool] | None = None
    applies_help: str = ""
    recorded: bool = True

    def coerce(self, backend: str, value: Any) -> Any:
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"backend {backend} option {self.name} must be true or false, not {value!r}")
            return value
        if self.kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"backend {backend} option {self.name} must be a number, not {value!r}")
            if self.kind is int and value != int(value):
                raise ValueError(f"backend {backend} option {self.name} must be an integer, not {value!r}")
            value = self.kind(value)
            low, high = self.bounds
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"backend {backend} option {self.name} must be in [{low}, {high}], not {value!r}")
        elif not isinstance(value, self.kind):
            raise ValueError(f"backend {backend} option {self.name} must be a {self.kind.__name__}, not {value!r}")
        if self.allowed is not None and value not in self.allowed:
            raise ValueError(f"backend {backend} option {self.name} must be one of {list(self.allowed)}, not {value!r}")
        return value


def resolve_options(backend: str, specs: Sequence[OptionSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every applicable declared option with its value (given or default); refuses unknown, malformed or
    inapplicable options with a message that names the option and what it accepts. A given None means unset."""
    given = {k: v for k, v in given.items() if v is not None}
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        takes = ", ".join(sorted(by_name)) or "no options"
        raise ValueError(f"backend {backend} has no option(s) {unknown}; it takes: {takes}")
    resolved = {
        spec.name: spec.coerce(backend, given[spec.name]) if spec.name in given else spec.default for spec in specs
    }
    for spec in specs:
        if spec.applies is None or spec.applies(resolved):
            continue
        if spec.name in given and resolved[spec.name] != spec.default:
            raise ValueError(f"backend {backend} option {spec.name} applies only {spec.applies_help}")
        del resolved[spec.name]
    return resolved


def recorded_options(specs: Sequence[OptionSpec], resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The options a table records (all resolved ones except local settings such as a cache directory)."""
    local = {spec.name for spec in specs if not spec.recorded}
    return {k: v for k, v in resolved.items() if k not in local}
