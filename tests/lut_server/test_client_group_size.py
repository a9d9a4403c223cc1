"""The client's group sizes travel under the request key `step`, so it works against servers that know no other."""

from __future__ import annotations

import json

import httpx
import pytest

from lut_server.client import LatencyClient
from lut_server.dims import BlockWidths, ModelDims
from lut_server.latency_table import LatencyTable
from tests.table_factory import make_table

MODEL = ModelDims(128, (BlockWidths(2, 16, 16, 256), BlockWidths(4, 32, 16, 512)))


class OlderServer:
    """A deltas endpoint that, like servers before `group_size`, refuses every key but emb, blocks and step."""

    def __init__(self) -> None:
        self.table = LatencyTable(make_table(), "small")
        self.bodies: list[dict] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        unknown = sorted(set(body) - {"emb", "blocks", "step"})
        if unknown:
            return httpx.Response(422, json={"detail": f"{unknown[0]}: is not an accepted field", "field": unknown[0]})
        model = ModelDims.from_dict({"emb": body["emb"], "blocks": body["blocks"]})
        return httpx.Response(200, json=self.table.deltas(model, body.get("step")).as_dict())

    def client(self) -> LatencyClient:
        return LatencyClient("http://older", "small", transport=httpx.MockTransport(self.handler))


def test_group_size_is_sent_as_step_and_applied() -> None:
    server = OlderServer()
    with server.client() as client:
        answer = client.deltas(MODEL, group_size={"qk": 4, "emb": 32})
        default = client.deltas(MODEL)
    assert server.bodies[0]["step"] == {"qk": 4, "emb": 32} and "group_size" not in server.bodies[0]
    assert "step" not in server.bodies[1]  # defaults: nothing sent
    assert answer == server.table.deltas(MODEL, {"qk": 4, "emb": 32}) != default


def test_step_keyword_still_works_with_a_deprecation_warning() -> None:
    server = OlderServer()
    with server.client() as client:
        with pytest.warns(DeprecationWarning, match="group_size"):
            old = client.deltas(MODEL, step={"mlp": 32})
        assert old == client.deltas(MODEL, {"mlp": 32})
        with pytest.raises(TypeError, match="both"):
            client.deltas(MODEL, {"mlp": 32}, step={"mlp": 32})
    assert server.bodies[0] == server.bodies[1] and len(server.bodies) == 2  # the refused call sent nothing
