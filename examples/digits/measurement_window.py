"""Which of the demo's measurement rounds judge the table: the latest window of rounds timed at the table's speed.

The demo profiles its table and, minutes later, times the pruned model to compare. A shared VM changes speed by
several percent over minutes and, in a burst of load from a neighbour, by 10-15% for a minute or more; a model timed
in such a minute and compared with a table profiled in a calm one mixes the table's error with the machine's.
The table's reference pair is timed in every round beside the models, so each window of rounds knows the machine's
level (its reference's median over the table's own cells for it). While the latest window's level lies more than
`LEVEL_TOLERANCE` off, the demo times more rounds, a few at a time, up to `MAX_ROUNDS`, and judges the table on the
window of consecutive rounds whose level lies nearest the table's: the minute in which the machine ran most nearly
at the speed the table was profiled at. The choice reads only the reference, never the models' own times, and the
report keeps every round, the judged window's place and level, and the first window's level and errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

WINDOW_ROUNDS = 21
"""Rounds in one window: about a minute on the demo model, so that a short burst hits a few rounds of it."""
LEVEL_TOLERANCE = 0.04
"""How far a window's level may lie from the table's (as a fraction): about the reference's own wander within a
sweep (its re-times stray by up to 5% from their median over a few minutes)."""
EXTRA_ROUNDS = 7
"""Rounds added at a time while the level is off (about 20 s on the demo model)."""
MAX_ROUNDS = 63
"""At most this many rounds in all (about two more minutes): a machine whose speed has moved for longer than that
has moved, and the report says so by its level."""


def window_level(reference_rounds_ms: Sequence[float], reference_ms: float, rounds: int = WINDOW_ROUNDS) -> float:
    """The machine's level over the latest `rounds` rounds: their reference's median over the table's (1.0: as
    fast as while the table was profiled; 1.09: 9% slower)."""
    if not reference_rounds_ms or reference_ms <= 0:
        raise ValueError("a level needs at least one timed round and a positive reference time")
    return median(reference_rounds_ms[-rounds:]) / reference_ms


def needs_more_rounds(
    reference_rounds_ms: Sequence[float],
    reference_ms: float,
    rounds: int = WINDOW_ROUNDS,
    tolerance: float = LEVEL_TOLERANCE,
    max_rounds: int = MAX_ROUNDS,
) -> bool:
    """True while fewer than `rounds` rounds are timed, or the latest window's level lies beyond `tolerance` and
    fewer than `max_rounds` are timed."""
    done = len(reference_rounds_ms)
    if done < rounds:
        return True
    if done >= max_rounds:
        return False
    return abs(window_level(reference_rounds_ms, reference_ms, rounds) - 1.0) > tolerance


def nearest_window_start(reference_rounds_ms: Sequence[float], reference_ms: float, rounds: int = WINDOW_ROUNDS) -> int:
    """Where the `rounds` consecutive rounds whose level lies nearest the table's begin: by the window's median
    level, then (windows with one median share most rounds) by the mean distance of its rounds' levels, then the
    latest; 0 when fewer rounds were timed."""

    def distance(start: int) -> tuple[float, float, int]:
        window = reference_rounds_ms[start : start + rounds]
        spread = sum(abs(ms / reference_ms - 1.0) for ms in window) / len(window)
        return abs(window_level(window, reference_ms, rounds) - 1.0), spread, -start

    return min(range(max(1, len(reference_rounds_ms) - rounds + 1)), key=distance)


def window_at(samples: dict[str, list[float]], start: int, rounds: int = WINDOW_ROUNDS) -> dict[str, list[float]]:
    """Each series' `rounds` rounds from `start` (the rounds are timed in alternation, so the windows line up)."""
    return {name: values[start : start + rounds] for name, values in samples.items()}
