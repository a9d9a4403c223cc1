"""No accepted table answers a number JSON cannot carry: huge cells are refused on the way in, and a calibration
that scales answers past the float range gets a 422 naming it, never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lut_server.app import create_app
from lut_server.config import ServerConfig
from lut_server.dims import BlockWidths, ModelDims
from lut_server.latency_table import LatencyTable, QueryError
from lut_server.table_format import TableFormatError
from tests.table_factory import calibration, make_table_v2

TOKEN = "write-token-123"
AUTH = {"authorization": f"Bearer {TOKEN}"}
WIDEST = {"heads": 4, "qk": 32, "v": 32, "mlp": 512}
PARTS = ("attn_qk", "attn_v", "mlp", "stem", "head")


@pytest.fixture
def client(tables_dir: Path) -> TestClient:
    return TestClient(create_app(ServerConfig(tables_dir, write_token=TOKEN)), raise_server_exceptions=False)


def _huge_cells(doc: dict) -> dict:
    for part in doc["parts"].values():
        part["median_ms"] = np.full(np.shape(part["median_ms"]), 1.7e308).tolist()
    return doc


def _scaled(factor: float) -> dict:
    doc = make_table_v2()
    doc["calibration"] = calibration(dict.fromkeys(PARTS, factor))
    return doc


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        (_huge_cells(make_table_v2()), "parts.attn_qk.median_ms", "at most 1e+07 ms"),
        (_scaled(1.5e308), "calibration", "beyond what a number can hold"),
    ],
)
def test_a_table_that_would_answer_beyond_the_float_range_is_refused(
    client: TestClient, tables_dir: Path, doc: dict, field: str, words: str
) -> None:
    answer = client.put("/v1/tables/huge", json=doc, headers=AUTH)
    assert (answer.status_code, answer.json()["field"]) == (422, field), answer.text
    assert words in answer.json()["detail"] and not (tables_dir / "huge.json").exists()

    (tables_dir / "huge.json").write_text(json.dumps(doc))  # copied in by hand: listed as not served, with why
    refused = client.post("/v1/tables/huge/latency", json={"blocks": [{"emb": 64, **WIDEST}]})
    assert refused.status_code == 404 and words in refused.json()["detail"]
    assert [t["id"] for t in client.get("/v1/tables").json()["tables"]] == ["small"]
    page = client.get("/")
    assert page.status_code == 200 and "huge.json" in page.text


def test_a_calibrated_sum_past_the_float_range_is_a_422_naming_the_calibration(client: TestClient) -> None:
    doc = _scaled(1e306)  # one block answers about 1.5e306 ms: a model of 200 of them is past 1.8e308
    assert client.put("/v1/tables/scaled", json=doc, headers=AUTH).status_code == 201
    one = client.post("/v1/tables/scaled/latency", json={"blocks": [{"emb": 256, **WIDEST}]})
    assert one.status_code == 200 and 1e306 < one.json()["latency_ms"][0] < 1e307
    deep = client.post("/v1/tables/scaled/deltas", json={"emb": 256, "blocks": [WIDEST] * 200})
    assert (deep.status_code, deep.json()["field"]) == (422, "calibration"), deep.text
    assert "overflows the float range" in deep.json()["detail"]

    table = LatencyTable(doc, "scaled")
    model = ModelDims(256, (BlockWidths(**WIDEST),) * 200)
    for query in (lambda: table.model_latency(model), lambda: table.deltas(model)):
        with pytest.raises(QueryError, match="calibration") as error:
            query()
        assert error.value.field == "calibration"


def test_a_table_that_overflows_only_at_its_narrowest_block_is_refused_too() -> None:
    """A negative per-block constant cancels the scaled parts of the widest block but not of the narrowest."""
    widest = float(LatencyTable(make_table_v2()).block_latency(np.array([[256, *WIDEST.values()]]))[0])
    doc = _scaled(1e308)
    doc["calibration"] |= {"block_ms": -1e308 * widest, "level": 2.0}
    assert np.isfinite(2.0 * (doc["calibration"]["block_ms"] + 1e308 * widest))  # the widest block is a number
    with pytest.raises(TableFormatError, match="calibration scales latencies beyond"):
        LatencyTable(doc)
