"""The table model accepts exactly the backends, precisions and sweep layouts the profiler writes: lut_server cannot
import the profiler (it would pull in torch), so the two lists are kept equal here."""

from __future__ import annotations

from typing import get_args

from lut_server.table_model import BackendName, Precision, SweepLayout
from profiler.backends import backend_names
from profiler.backends.base import PRECISIONS
from profiler.sweep import FUSED_LAYOUT, LAYOUT
from profiler.transfer import TRANSFER_LAYOUT

EARLIER_LAYOUT = "in-context-parts/v1"
"""One block per pipeline run; no sweep writes it now, but tables swept so still read and resume."""


def test_every_backend_the_profiler_has_is_a_table_backend_and_no_other():
    assert sorted(get_args(BackendName)) == backend_names()


def test_every_precision_a_backend_times_in_is_a_table_precision_and_no_other():
    assert set(get_args(Precision)) == set(PRECISIONS)


def test_every_layout_a_sweep_or_transfer_writes_is_a_table_layout_and_no_other():
    assert set(get_args(SweepLayout)) == {LAYOUT, FUSED_LAYOUT, TRANSFER_LAYOUT, EARLIER_LAYOUT}
