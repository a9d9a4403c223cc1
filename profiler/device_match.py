"""Refusing to time a table's workload on a machine the table does not describe."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from profiler.backends import Backend
from profiler.fingerprint import fingerprint_mismatches


class DeviceMismatch(ValueError):
    """This machine differs from the table's fingerprint; the message names every differing field."""


def ensure_same_device(
    doc: Mapping[str, Any], backend: Backend, force: bool = False, action: str = "time"
) -> list[str]:
    """The fields in which this machine differs from the table; raises unless `force` (then the caller warns).

    Timing a table's workload elsewhere and comparing with the table answers nothing about the table, so it is an
    error unless asked for.
    """
    mismatches = fingerprint_mismatches(doc, backend.environment())
    if mismatches and not force:
        raise DeviceMismatch(
            f"this machine is not the table's device ({len(mismatches)} field(s) differ), so measurements here "
            f"say nothing about the table; refusing to {action} without --force:\n  " + "\n  ".join(mismatches)
        )
    return mismatches
