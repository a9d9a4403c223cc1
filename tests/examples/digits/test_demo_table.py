"""The demo reuses a served table only when it fits this machine and the demo model, and says what does not."""

from __future__ import annotations

import copy

from examples.digits.demo_table import DEMO_OPTIONS, demo_backend, table_matches
from examples.digits.digits import DEMO_DIMS, DIGITS_CONFIG


def test_demo_table_check_names_what_does_not_fit():
    summary = {
        "backend": "torch-cpu",
        "batch": 64,
        "options": DEMO_OPTIONS,
        "tokens": DIGITS_CONFIG.tokens,
        "ranges": {"emb": [32, 128], "heads": [1, 4], "qk": [8, 32], "v": [8, 32], "mlp": [16, 512]},
        "parts": ["attn_qk", "attn_v", "mlp", "stem", "head"],
    }
    here = demo_backend().environment()
    summary["device"] = here["device"]["name"]
    summary["fingerprint"] = {"device": here["device"]["match"], "software": here["software"]["match"]}
    assert table_matches(summary, DEMO_DIMS, DIGITS_CONFIG) is None
    other_cpu = copy.deepcopy(summary)
    other_cpu["fingerprint"]["device"]["cpu"]["family"] = -1
    assert "device.match.cpu.family" in table_matches(other_cpu, DEMO_DIMS, DIGITS_CONFIG)
    assert "no fingerprint" in table_matches({**summary, "fingerprint": {}}, DEMO_DIMS, DIGITS_CONFIG)
    assert "batch" in table_matches({**summary, "batch": 1}, DEMO_DIMS, DIGITS_CONFIG)
    assert "options" in table_matches({**summary, "options": {}}, DEMO_DIMS, DIGITS_CONFIG)  # timed before the option
    assert "tokens" in table_matches({**summary, "tokens": 197}, DEMO_DIMS, DIGITS_CONFIG)
    narrow = {**summary, "ranges": {**summary["ranges"], "mlp": [16, 256]}}
    assert "mlp" in table_matches(narrow, DEMO_DIMS, DIGITS_CONFIG)
    assert "stem" in table_matches({**summary, "parts": ["attn_qk", "attn_v", "mlp"]}, DEMO_DIMS, DIGITS_CONFIG)
