"""The measured whole models a calibration is fitted on, gathered across validations.

Each validation draws new random models, and a table keeps only its latest validation. So that fits improve as
validations accumulate, whether or not `calibrate` ran between them, a validation that replaces another carries
forward the models no calibration has used yet (`validation.pending_models`), and `calibrate` fits on those, the
latest validation's and the ones its previous fit used (`calibration.fitted.points`). Where a validation tracked
the machine's level, a model's level-normalised latency is used, so the correction fits the table's structure
rather than whether the machine was fast or slow in the minutes of that validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_PENDING_MODELS = 2000
"""Models carried between validations without a `calibrate` (the newest kept): enough for dozens of validations."""


def _used(doc: Mapping[str, Any]) -> set[str]:
    return set(((doc.get("calibration") or {}).get("fitted") or {}).get("validations") or [])


def _latest_models(validation: Mapping[str, Any]) -> list[dict[str, Any]]:
    if validation.get("forced"):  # timed on another device: says nothing about this table
        return []
    return [
        {
            "dims": p["dims"],
            "measured_ms": p.get("level_normalised_ms", p["measured_ms"]),
            "validation": validation.get("created"),
        }
        for p in validation.get("model_points") or []
    ]


def uncalibrated_models(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every model the table's validations measured that its calibration has not been fitted on."""
    validation = doc.get("validation") or {}
    used = _used(doc)
    carried = [*(validation.get("pending_models") or []), *_latest_models(validation)]
    return [p for p in carried if p.get("validation") not in used][-MAX_PENDING_MODELS:]


def model_points(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The models a new fit uses: its previous fit's and every one measured since."""
    fitted = (doc.get("calibration") or {}).get("fitted") or {}
    points = [*(fitted.get("points") or []), *uncalibrated_models(doc)]
    if not points:
        raise ValueError(
            "the table has no measured whole models to calibrate on: run `python -m profiler validate TABLE` "
            "(with --models > 0) first"
        )
    return points


def validations_used(doc: Mapping[str, Any]) -> list[str]:
    """The validations whose models a new fit uses, oldest first."""
    fitted = (doc.get("calibration") or {}).get("fitted") or {}
    used = list(fitted.get("validations") or [])
    for point in uncalibrated_models(doc):
        if point.get("validation") not in used:  # None too (a validation without `created`): used once, not again
            used.append(point.get("validation"))
    return used
