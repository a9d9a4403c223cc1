"""The demo's measurement window: more rounds only while the machine runs off the table's level, within a cap,
and the window judged is the one timed nearest that level."""

from __future__ import annotations

import pytest

from examples.digits.measurement_window import (
    EXTRA_ROUNDS,
    MAX_ROUNDS,
    WINDOW_ROUNDS,
    nearest_window_start,
    needs_more_rounds,
    window_at,
    window_level,
)


def rounds_until_judged(reference_at: list[float], reference_ms: float = 10.0) -> int:
    """How many rounds the demo's loop times when round k's reference takes reference_at[k] ms."""
    timed = reference_at[:WINDOW_ROUNDS]
    while needs_more_rounds(timed, reference_ms):
        timed = reference_at[: len(timed) + EXTRA_ROUNDS]
    return len(timed)


def test_a_window_at_the_tables_level_is_judged_at_once():
    assert rounds_until_judged([10.2, 9.9] * 40) == WINDOW_ROUNDS


def test_a_burst_is_waited_out_and_the_latest_window_judged():
    # the first 25 rounds 12% slow, then the machine is back: timing stops once the latest 21 are mostly calm
    reference = [11.2] * 25 + [10.1] * 60
    timed = rounds_until_judged(reference)
    assert WINDOW_ROUNDS < timed < MAX_ROUNDS
    level = window_level(reference[:timed], 10.0)
    assert abs(level - 1.0) <= 0.04
    assert window_level(reference[:WINDOW_ROUNDS], 10.0) == pytest.approx(1.12)


def test_a_machine_that_stays_off_stops_at_the_cap():
    assert rounds_until_judged([11.5] * 200) == MAX_ROUNDS


def test_a_fast_machine_counts_as_off_too():
    assert needs_more_rounds([8.9] * WINDOW_ROUNDS, 10.0)
    assert not needs_more_rounds([9.7] * WINDOW_ROUNDS, 10.0)


def test_the_judged_window_is_the_one_nearest_the_tables_level():
    # calm (level 1.00) only in rounds 10-30 of 63; slow before and after
    reference = [10.9] * 10 + [10.0] * 21 + [11.3] * 32
    assert nearest_window_start(reference, 10.0) == 10
    assert window_level(reference[10:31], 10.0) == pytest.approx(1.0)
    # a machine that stays off all along: the least-off window, the latest on a tie
    assert nearest_window_start([11.5] * 63, 10.0) == 63 - WINDOW_ROUNDS
    assert nearest_window_start([10.2] * 5, 10.0) == 0


def test_the_windows_line_up_across_series():
    samples = {"original": list(range(30)), "pruned": list(range(100, 130))}
    window = window_at(samples, 9)
    assert window["original"] == list(range(9, 30))
    assert window["pruned"] == list(range(109, 130))


def test_a_level_needs_rounds():
    with pytest.raises(ValueError):
        window_level([], 10.0)
