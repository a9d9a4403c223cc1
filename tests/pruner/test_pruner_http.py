"""Pruning against a real latency server over HTTP: one request per step (two on a step that reaches the target),
same decisions as the local table."""

from __future__ import annotations

import torch.nn.functional as F

from lut_server.client import LatencyClient
from lut_server.table_format import write_table
from pruner import Pruner
from tests.lut_server.server_process import ServerProcess
from tests.pruner.small_models import CountingLatency, batch, small_model, small_table, small_table_doc


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
    counting = CountingLatency(small_table())
    local, local_removed = prune_with(counting)
    steps = len(remote.history)
    assert steps >= 3
    reaching = counting.calls["model_latency"]  # the model's own latency, on a step whose deltas reach the target
    assert 1 <= reaching <= 3 and counting.calls["deltas"] == steps
    assert requests == steps + 1 + reaching  # one summary (the table's ranges) + one deltas per step
    assert remote_removed == local_removed
    assert remote.dims == local.dims
    assert abs(remote.predicted_ms - local.predicted_ms) < 1e-9
