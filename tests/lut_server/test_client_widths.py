"""The client refuses what it cannot send faithfully (a fractional or non-finite width, a bad group size) with the
`QueryError` the local table would raise, naming the field, before any request; whole widths it sends as integers."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from lut_server.api_models import LatencyRequest
from lut_server.client import LatencyClient
from lut_server.dims import AXES, BlockWidths, ModelDims
from lut_server.latency_table import LatencyTable, QueryError
from tests.table_factory import make_table

MODEL = ModelDims(128, (BlockWidths(2, 16, 16, 256),))


class StrictServer:
    """/latency with the real server's strict request model (768.0 refused), answered by the local table."""

    def __init__(self) -> None:
        self.table = LatencyTable(make_table(), "small")
        self.bodies: list[dict] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        query = LatencyRequest.model_validate_json(request.content)
        rows = np.array([[getattr(b, a) for a in AXES] for b in query.blocks], dtype=float)
        return httpx.Response(200, json={"latency_ms": self.table.block_latency(rows).tolist()})

    def client(self) -> LatencyClient:
        return LatencyClient("http://strict", "small", transport=httpx.MockTransport(self.handler))


def test_whole_widths_in_a_float_array_are_sent_as_integers_and_answer_like_the_table() -> None:
    server = StrictServer()
    rows = np.array([[128, 2, 16, 16, 256], [64, 1, 8, 32, 512]]).astype(float)
    with server.client() as client:
        remote = client.block_latency(rows)
    np.testing.assert_array_equal(remote, server.table.block_latency(rows))
    assert server.bodies[0]["blocks"][1] == {"emb": 64, "heads": 1, "qk": 8, "v": 32, "mlp": 512}
    assert all(type(v) is int for block in server.bodies[0]["blocks"] for v in block.values())


@pytest.mark.parametrize(
    ("value", "field", "shown"),
    [(64.7, "blocks[1].emb", "64.7"), (np.nan, "blocks[1].emb", "nan"), (np.inf, "blocks[1].emb", "inf")],
)
def test_a_width_that_is_not_whole_is_refused_naming_it_not_truncated(value: float, field: str, shown: str) -> None:
    server = StrictServer()
    rows = np.array([[128, 2, 16, 16, 256], [value, 2, 16, 16, 256]])
    with server.client() as client, pytest.raises(QueryError) as error:
        client.block_latency(rows)
    assert error.value.field == field and f"{field} = {shown} is not a whole width" in str(error.value)
    assert server.bodies == []  # refused before any request


@pytest.mark.parametrize(("group_size", "field"), [({"qk": 0}, "group_size.qk"), ({"depth": 1}, "group_size.depth")])
def test_a_bad_group_size_is_named_as_the_caller_gave_it_not_as_the_key_it_travels_under(
    group_size: dict, field: str
) -> None:
    server = StrictServer()
    with server.client() as client:
        with pytest.raises(QueryError) as remote:
            client.deltas(MODEL, group_size)
        with pytest.warns(DeprecationWarning), pytest.raises(QueryError) as remote_step:
            client.deltas(MODEL, step=group_size)
    with pytest.raises(QueryError) as local:
        server.table.deltas(MODEL, group_size)
    assert remote.value.field == remote_step.value.field == local.value.field == field
    assert str(remote.value) == str(local.value)
    assert server.bodies == []
