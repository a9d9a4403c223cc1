"""Pruning against a real latency server over HTTP: one request per step, same decisions as the local table."""

from __future__ import annotations

import copy

import torch.nn.functional as F

from lut_server.client import LatencyClient
from lut_server.table_format import write_table
from pruner import Pruner
from pruner.demo_table import DEMO_OPTIONS, demo_backend, table_matches
from pruner.digits import DEMO_DIMS, DIGITS_CONFIG
from tests.lut_server.server_process import ServerProcess
from tests.pruner.small_models import batch, small_model, small_table, small_table_doc


def prune_with(latency) -> tuple[Pruner, list]:
    model = small_model()
    p = Pruner(model, latency=latency, target_ratio=0.6, groups_per_step=2)
    seed = 0
    while not p.done:
        x, y = batch(seed)
        seed += 1
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        p.accumulate()
        p.step()
    return p, [[c.name for c in r.removed] for r in p.history]


def test_pruning_over_http_makes_one_request_per_step_and_matches_the_local_table(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    write_table(tables / "small.json", small_table_doc())
    with ServerProcess(tables) as server, LatencyClient(server.url, "small") as client:
        remote, remote_removed = prune_with(client)
        requests = client.request_count
    local, local_removed = prune_with(small_table())
    steps = len(remote.history)
    assert steps >= 3
    assert requests == steps + 1  # one summary (the table's ranges) + one deltas per step
    assert remote_removed == local_removed
    assert remote.dims == local.dims
    assert abs(remote.predicted_ms - local.predicted_ms) < 1e-9


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
