"""The latency source of a long run: pinned by content, local fallback, retry horizon, workload checks, resume."""

from __future__ import annotations

import copy
import json
import time

import httpx
import pytest
import torch.nn.functional as F

from lut_server.client import LatencyClient, LatencyServiceError
from lut_server.latency_table import LatencyTable
from lut_server.table_identity import content_hash
from pruner import Pruner
from pruner.latency_source import PinnedLatency, TableChangedError, check_workload
from tests.pruner.small_models import CONFIG, batch, small_model, small_table, small_table_doc


class FakeServer:
    """An in-process stand-in for the latency service (httpx MockTransport) serving one replaceable table."""

    def __init__(self, doc: dict):
        self.table = LatencyTable(doc, "small")
        self.down = False
        self.requests = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path.endswith("/summary"):
            return httpx.Response(200, json=self.table.summary())
        if path.endswith("/deltas"):
            from lut_server.dims import ModelDims

            body = json.loads(request.content)
            group_size = body.pop("step", None)  # the client sends the group sizes under `step`
            return httpx.Response(200, json=self.table.deltas(ModelDims.from_dict(body), group_size).as_dict())
        return httpx.Response(200, json=self.table.data)

    def client(self, **kwargs) -> LatencyClient:
        kwargs.setdefault("backoff_s", 0.001)
        return LatencyClient("http://fake", "small", transport=httpx.MockTransport(self.handler), **kwargs)


def test_content_hash_covers_the_timings_not_the_metadata():
    doc = small_table_doc()
    same = {**copy.deepcopy(doc), "created": "2030-01-01T00:00:00Z"}
    assert content_hash(same) == content_hash(doc)
    assert small_table().summary()["content_hash"] == content_hash(doc)
    doc["parts"]["mlp"]["median_ms"][0][0] *= 1.01
    assert content_hash(doc) != content_hash(same)


def test_a_table_replaced_mid_run_is_an_error_and_a_repin_accepts_it():
    server = FakeServer(small_table_doc())
    pinned = PinnedLatency(server.client(), recheck_s=0.0)
    dims = small_model().model_dims
    first = pinned.model_latency(dims)
    changed = small_table_doc()
    changed["parts"]["mlp"]["median_ms"] = [[v * 2 for v in row] for row in changed["parts"]["mlp"]["median_ms"]]
    server.table = LatencyTable(changed, "small")
    with pytest.raises(TableChangedError, match="changed mid-run"):
        pinned.model_latency(dims)
    pinned.repin()
    assert pinned.model_latency(dims) > first


def test_server_gone_answers_from_the_pinned_local_copy():
    server = FakeServer(small_table_doc())
    pinned = PinnedLatency(server.client(retries=1), recheck_s=3600.0)
    dims = small_model().model_dims
    online = pinned.deltas(dims)
    server.down = True
    offline = pinned.deltas(dims)
    assert pinned.fallback_queries == 1
    assert offline.total_ms == pytest.approx(online.total_ms)
    assert offline.blocks == online.blocks


def test_retry_horizon_keeps_trying_for_its_duration():
    server = FakeServer(small_table_doc())
    server.down = True
    client = server.client(retries=0, retry_horizon_s=0.3, backoff_s=0.02, max_backoff_s=0.05)
    started = time.monotonic()
    with pytest.raises(LatencyServiceError, match="attempts"):
        client.summary()
    assert time.monotonic() - started >= 0.25
    assert server.requests >= 5


def test_workload_mismatches_are_refused_or_warned():
    summary = {"id": "t", "tokens": CONFIG.tokens, "precision": "fp16", "batch": 64}
    assert check_workload(summary, CONFIG) == []
    with pytest.raises(ValueError, match="tokens"):
        check_workload({**summary, "tokens": 197}, CONFIG)
    with pytest.raises(ValueError, match="fp16"):
        check_workload(summary, CONFIG, precision="fp32")
    (warning,) = check_workload(summary, CONFIG, batch=1)
    assert "deployment batch 1" in warning
    calibrated = {**summary, "calibration": {"form": "parts+constants", "depths": [12]}}
    assert check_workload(calibrated, CONFIG, depth=12) == []
    (warning,) = check_workload(calibrated, CONFIG, depth=4)
    assert "calibrated on models of 12 blocks; this model has 4" in warning and "extrapolation" in warning


def run(p: Pruner, model, seeds) -> None:
    for s in seeds:
        x, y = batch(s)
        model.zero_grad()
        F.cross_entropy(model.forward_both(x)[0], y).backward()
        p.accumulate()
        if s % 2:
            p.step()


def test_state_dict_resumes_exactly_and_keeps_the_original_latency():
    model = small_model()
    straight = Pruner(model, latency=small_table(), target_ratio=0.5, momentum=0.9)
    run(straight, model, range(12))

    first_model = small_model()
    first = Pruner(first_model, latency=small_table(), target_ratio=0.5, momentum=0.9)
    run(first, first_model, range(6))
    state = json.loads(json.dumps({**first.state_dict(), "importance": None}))  # JSON-able apart from tensors
    state["importance"] = first.importance.state_dict()
    resumed_model = small_model()
    resumed = Pruner(resumed_model, latency=small_table(), target_ratio=0.5, momentum=0.9)
    resumed.load_state_dict(state)
    assert resumed.original_ms == first.original_ms and resumed.dims == first.dims
    run(resumed, resumed_model, range(6, 12))
    assert [[c.name for c in r.removed] for r in resumed.history] == [
        [c.name for c in r.removed] for r in straight.history
    ]
    assert resumed.dims == straight.dims
    assert resumed.original_ms == straight.original_ms


def test_state_from_another_table_or_other_settings_is_refused():
    model = small_model()
    p = Pruner(model, latency=small_table(), momentum=0.9)
    run(p, model, range(2))
    state = p.state_dict()
    other = small_table_doc()
    other["parts"]["stem"]["median_ms"] = [v * 3 for v in other["parts"]["stem"]["median_ms"]]
    with pytest.raises(ValueError, match="re-pin"):
        Pruner(small_model(), latency=LatencyTable(other, "small"), momentum=0.9).load_state_dict(state)
    Pruner(small_model(), latency=LatencyTable(other, "small"), momentum=0.9).load_state_dict(state, repin=True)
    with pytest.raises(ValueError, match="settings"):
        Pruner(small_model(), latency=small_table(), momentum=0.5).load_state_dict(state)


def test_after_the_fallback_queries_answer_at_once_and_the_server_is_tried_again_rarely(capsys):
    server = FakeServer(small_table_doc())
    client = server.client(retries=0, retry_horizon_s=0.5, backoff_s=0.05, max_backoff_s=0.05)
    pinned = PinnedLatency(client, recheck_s=3600.0, probe_every_s=3600.0)
    dims = small_model().model_dims
    online = pinned.model_latency(dims)
    server.down = True
    started = time.monotonic()
    assert pinned.model_latency(dims) == pytest.approx(online)
    assert time.monotonic() - started >= 0.45  # the first failure waits the client's retry horizon
    requests = server.requests
    started = time.monotonic()
    assert pinned.deltas(dims).total_ms == pytest.approx(online)
    assert pinned.model_latency(dims) == pytest.approx(online)
    assert time.monotonic() - started < 0.1 and server.requests == requests  # no wait, no request
    pinned.probe_every_s = 0.0  # a probe is due: one short attempt, then the local copy again
    started = time.monotonic()
    assert pinned.model_latency(dims) == pytest.approx(online)
    assert time.monotonic() - started < 0.3 and server.requests == requests + 1
    server.down = False
    assert pinned.model_latency(dims) == pytest.approx(online)
    assert pinned.offline_since is None and client.retry_horizon_s == 0.5 and client.retries == 0
    assert pinned.fallback_queries == 4
    err = capsys.readouterr().err
    assert err.count("unreachable") == 1 and err.count("answers again") == 1
