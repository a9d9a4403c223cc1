"""The page shows what must match for a table to apply, and its calibration, from the summary's keys."""

from __future__ import annotations

from lut_server.latency_table import LatencyTable
from lut_server.status_page import render_page
from tests.table_factory import make_table


def _page(extra: dict) -> str:
    class Summarised(LatencyTable):
        def summary(self) -> dict:
            return super().summary() | extra

    return render_page([Summarised(make_table(), table_id="small")], None, {}, {})


def test_fingerprint_and_calibration_are_shown() -> None:
    page = _page(
        {
            "fingerprint": {
                "device": {"cpu": {"vendor": "AuthenticAMD", "isa": {"avx512_bf16": True}}, "threads": 1},
                "software": {"torch": "2.13.0+cpu"},
            },
            "interpolation": {"steps": ["emb", "mlp"]},
            "calibration": {
                "method": "least-squares/v1",
                "before": {"median_ape_pct": 8.5, "p95_ape_pct": 12.0},
                "after": {"median_ape_pct": 1.25, "p95_ape_pct": 3.5},
            },
        }
    )
    assert "cpu.vendor=&quot;AuthenticAMD&quot;" in page and "cpu.isa.avx512_bf16=true" in page and "threads=1" in page
    assert "torch=&quot;2.13.0+cpu&quot;" in page
    assert "least-squares/v1: median APE 8.5% → 1.25%, p95 12% → 3.5%" in page
    assert "steps along emb, mlp; linear along the rest" in page


def test_a_table_without_fingerprint_or_calibration_says_so() -> None:
    page = _page({"fingerprint": {"device": {}, "software": {}}, "calibration": None})
    assert "cannot say which machine it describes" in page and "not calibrated" in page
    assert "<th>interpolation</th><td>linear</td>" in page
