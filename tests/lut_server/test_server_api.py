"""HTTP API v1 in-process: answers match the local table, and every kind of bad input gets a 4xx naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lut_server.app import create_app
from lut_server.config import ServerConfig
from lut_server.dims import BlockDims, ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import validate_table
from tests.table_factory import SMALL_GRID, make_table

TOKEN = "write-token-123"
AUTH = {"authorization": f"Bearer {TOKEN}"}
BLOCK = {"emb": 128, "heads": 2, "qk": 16, "v": 16, "mlp": 256}


@pytest.fixture
def client(tables_dir: Path) -> TestClient:
    return TestClient(create_app(ServerConfig(tables_dir, write_token=TOKEN, max_body_bytes=256 * 1024)))


def test_health_and_listing_carry_provenance_and_ranges(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "version": "0.1.0", "tables": 1}
    (summary,) = client.get("/v1/tables").json()["tables"]
    assert summary["id"] == "small"
    assert (summary["device"], summary["backend"], summary["precision"]) == ("test-cpu", "torch-cpu", "fp32")
    assert (summary["batch"], summary["tokens"]) == (1, 197)
    assert summary["accuracy"]["median_ape_pct"] == 1.5
    assert summary["ranges"] == {a: [min(v), max(v)] for a, v in SMALL_GRID.items()}
    assert client.get("/v1/tables/small/summary").json() == summary
    served = client.get("/v1/tables/small").json()  # a version 1 file is served upgraded, as version 2
    assert served == validate_table(make_table()) and served["version"] == 2


def test_latency_and_deltas_equal_the_local_table(client: TestClient) -> None:
    local = LatencyTable(make_table(), "small")
    rng = np.random.default_rng(0)
    blocks = [
        BlockDims(*(int(rng.integers(min(SMALL_GRID[a]), max(SMALL_GRID[a]) + 1)) for a in SMALL_GRID))
        for _ in range(50)
    ]
    answer = client.post("/v1/tables/small/latency", json={"blocks": [b.as_dict() for b in blocks]})
    assert answer.status_code == 200
    np.testing.assert_allclose(answer.json()["latency_ms"], local.block_latency(blocks), rtol=1e-12)

    model = ModelDims.from_blocks([BlockDims(128, b.heads, b.qk, b.v, b.mlp) for b in blocks[:12]])
    answer = client.post("/v1/tables/small/deltas", json=model.as_dict() | {"step": {"qk": 4}})
    assert answer.status_code == 200
    expected = local.deltas(model, {"qk": 4}).as_dict()
    assert answer.json()["total_ms"] == pytest.approx(expected["total_ms"], rel=1e-12)
    assert answer.json()["emb"] == pytest.approx(expected["emb"], rel=1e-12)
    for got, want in zip(answer.json()["blocks"], expected["blocks"], strict=True):
        assert got.keys() == want.keys()
        for axis in got:
            assert (got[axis] is None) == (want[axis] is None)
            if got[axis] is not None:
                assert got[axis] == pytest.approx(want[axis], rel=1e-12)
    # heads=1 cannot lose a head: its delta is null, not a number
    one_head = client.post("/v1/tables/small/deltas", json={"emb": 64, "blocks": [{**BLOCK, "heads": 1} | {}][:1]})
    assert one_head.status_code == 422  # emb inside a block is an unknown key for /deltas
    one_head = client.post(
        "/v1/tables/small/deltas", json={"emb": 64, "blocks": [{"heads": 1, "qk": 8, "v": 8, "mlp": 64}]}
    )
    assert one_head.json()["blocks"][0]["heads"] is None
    assert one_head.json()["blocks"][0]["mlp"] > 0


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"blocks": [BLOCK | {"emb": 4096}]}, "blocks[0].emb", "[64, 256]"),
        ({"blocks": [BLOCK, BLOCK | {"mlp": 0}]}, "blocks[1].mlp", "greater than or equal to 1"),
        ({"blocks": [BLOCK | {"qk": "16"}]}, "blocks[0].qk", "integer"),
        ({"blocks": [BLOCK | {"v": 16.5}]}, "blocks[0].v", "integer"),
        ({"blocks": [BLOCK | {"heads": True}]}, "blocks[0].heads", "integer"),
        ({"blocks": [{k: v for k, v in BLOCK.items() if k != "qk"}]}, "blocks[0].qk", "required"),
        ({"blocks": [BLOCK | {"head": 2}]}, "blocks[0].head", "not an accepted field"),
        ({"blocks": "all"}, "blocks", "list"),
        ([], "body", "object"),
    ],
)
def test_bad_latency_queries_name_the_field(client: TestClient, body: object, field: str, words: str) -> None:
    answer = client.post("/v1/tables/small/latency", json=body)
    assert answer.status_code == 422
    assert answer.json()["field"] == field
    assert words in answer.json()["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"blocks":[{"emb":NaN,"heads":2,"qk":16,"v":16,"mlp":256}]}',
        b'{"blocks":[{"emb":Infinity,"heads":2,"qk":16,"v":16,"mlp":256}]}',
        b'{"blocks":[{"emb":-Infinity,"heads":2,"qk":16,"v":16,"mlp":256}]}',
        b'{"blocks":[{"emb":1e400,"heads":2,"qk":16,"v":16,"mlp":256}]}',
        b'{"blocks":[{"emb":',
        b"\xff\xfe not utf-8",
    ],
)
def test_non_finite_and_malformed_json_get_422_not_500(client: TestClient, raw: bytes) -> None:
    answer = client.post("/v1/tables/small/latency", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["field"] == "body"
    assert "JSON" in answer.json()["detail"]


@pytest.mark.parametrize("key", ["group_size", "step"])
def test_deltas_group_size_and_block_count_checks(client: TestClient, key: str) -> None:
    model = {"emb": 128, "blocks": [{"heads": 2, "qk": 16, "v": 16, "mlp": 256}]}
    bad_size = client.post("/v1/tables/small/deltas", json=model | {key: {"qk": 0}})
    assert (bad_size.status_code, bad_size.json()["field"]) == (422, f"{key}.qk")
    unknown_axis = client.post("/v1/tables/small/deltas", json=model | {key: {"depth": 1}})
    assert (unknown_axis.status_code, unknown_axis.json()["field"]) == (422, f"{key}.depth")
    empty = client.post("/v1/tables/small/deltas", json={"emb": 128, "blocks": []})
    assert (empty.status_code, empty.json()["field"]) == (422, "blocks")


def test_deltas_take_group_size_under_either_name_but_not_both(client: TestClient) -> None:
    model = {"emb": 128, "blocks": [{"heads": 2, "qk": 16, "v": 16, "mlp": 256}]}
    default = client.post("/v1/tables/small/deltas", json=model).json()
    by_name = client.post("/v1/tables/small/deltas", json=model | {"group_size": {"qk": 4, "emb": 32}}).json()
    by_old_name = client.post("/v1/tables/small/deltas", json=model | {"step": {"qk": 4, "emb": 32}}).json()
    local = LatencyTable(make_table(), "small").deltas(ModelDims.from_dict(model), {"qk": 4, "emb": 32}).as_dict()
    assert by_name == by_old_name == json.loads(json.dumps(local))
    assert by_name["blocks"][0]["qk"] != default["blocks"][0]["qk"] and by_name["emb"] != default["emb"]
    both = client.post("/v1/tables/small/deltas", json=model | {"group_size": {"qk": 4}, "step": {"qk": 4}})
    assert (both.status_code, both.json()["field"]) == (422, "group_size")
    assert "not both" in both.json()["detail"] and "step" in both.json()["detail"]
    properties = client.get("/openapi.json").json()["components"]["schemas"]["DeltasRequest"]["properties"]
    assert "group_size" in properties and "step" not in properties


def test_a_model_emb_outside_the_range_is_named_emb_not_as_a_blocks(client: TestClient) -> None:
    widths = {"heads": 2, "qk": 16, "v": 16, "mlp": 256}
    answer = client.post("/v1/tables/small/deltas", json={"emb": 4096, "blocks": [widths] * 3})
    assert (answer.status_code, answer.json()["field"]) == (422, "emb")
    assert answer.json()["detail"] == "emb = 4096 is outside the table's range for emb: [64, 256]"
    block = client.post("/v1/tables/small/deltas", json={"emb": 128, "blocks": [widths, widths | {"mlp": 4096}]})
    assert (block.status_code, block.json()["field"]) == (422, "blocks[1].mlp")


def test_more_than_the_block_limit_gets_413(tables_dir: Path) -> None:
    app = create_app(ServerConfig(tables_dir, max_blocks=100_000, max_body_bytes=64 * 1024 * 1024))
    client = TestClient(app)
    body = {"blocks": [BLOCK] * 100_001}
    answer = client.post("/v1/tables/small/latency", json=body)
    assert (answer.status_code, answer.json()["field"]) == (413, "blocks")
    assert "100000" in answer.json()["detail"]
    ok = client.post("/v1/tables/small/latency", json={"blocks": [BLOCK] * 100_000})
    assert ok.status_code == 200 and len(ok.json()["latency_ms"]) == 100_000


def test_oversized_bodies_get_413_before_parsing(client: TestClient) -> None:
    big = b'{"blocks":[' + b",".join([json.dumps(BLOCK).encode()] * 5000) + b"]}"
    assert len(big) > 256 * 1024
    answer = client.post("/v1/tables/small/latency", content=big, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["field"] == "body"

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = client.post("/v1/tables/small/latency", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["field"] == "body"
    upload = client.put("/v1/tables/big", content=big, headers=AUTH | {"content-type": "application/json"})
    assert upload.status_code == 413


def test_unknown_table_and_out_of_range_errors(client: TestClient) -> None:
    missing = client.post("/v1/tables/nope/latency", json={"blocks": [BLOCK]})
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert client.get("/v1/tables/nope").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1/tables/..%2F..%2Fetc%2Fpasswd",
        "/v1/tables/%2E%2E",
        "/v1/tables/.hidden",
        "/v1/tables/UPPER",
        "/v1/tables/a%00b",
        "/v1/tables/" + "a" * 65,
        "/v1/tables/a%20b",
        "/v1/tables/-dash",
    ],
)
def test_traversal_and_malformed_ids_are_refused(client: TestClient, tables_dir: Path, path: str) -> None:
    for method, body in (("GET", None), ("PUT", make_table()), ("DELETE", None)):
        answer = client.request(method, path, json=body, headers=AUTH)
        assert 400 <= answer.status_code < 500, (method, path, answer.status_code)
    assert sorted(p.name for p in tables_dir.iterdir()) == ["small.json"]
    assert sorted(p.name for p in tables_dir.parent.iterdir()) == ["tables"]


def test_writes_need_the_token(tables_dir: Path) -> None:
    refused = TestClient(create_app(ServerConfig(tables_dir)))  # no token configured: writes are off
    answer = refused.put("/v1/tables/new", json=make_table(), headers=AUTH)
    assert answer.status_code == 403 and "LUT_SERVER_TOKEN" in answer.json()["detail"]
    assert refused.delete("/v1/tables/small", headers=AUTH).status_code == 403

    client = TestClient(create_app(ServerConfig(tables_dir, write_token=TOKEN)))
    for headers in (
        {},
        {"authorization": "Bearer wrong-token-123"},
        {"authorization": TOKEN},
        {"authorization": "Basic x"},
    ):
        assert client.put("/v1/tables/new", json=make_table(), headers=headers).status_code == 401
        assert client.delete("/v1/tables/small", headers=headers).status_code == 401
    assert not (tables_dir / "new.json").exists() and (tables_dir / "small.json").exists()

    created = client.put("/v1/tables/new", json=make_table(scale=2.0), headers=AUTH)
    assert created.status_code == 201 and created.json()["id"] == "new"
    replaced = client.put("/v1/tables/new", json=make_table(scale=3.0), headers=AUTH)
    assert replaced.status_code == 200
    on_disk = LatencyTable.load(tables_dir / "new.json")
    assert on_disk.block_latency([BlockDims(**BLOCK)])[0] == pytest.approx(
        3.0 * LatencyTable(make_table()).block_latency([BlockDims(**BLOCK)])[0]
    )
    assert client.delete("/v1/tables/new", headers=AUTH).status_code == 204
    assert client.get("/v1/tables/new").status_code == 404
    assert client.delete("/v1/tables/new", headers=AUTH).status_code == 404


def test_read_token_guards_reads_but_not_health(tables_dir: Path) -> None:
    client = TestClient(create_app(ServerConfig(tables_dir, write_token=TOKEN, read_token="read-token-1")))
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/tables").status_code == 401
    assert client.post("/v1/tables/small/latency", json={"blocks": [BLOCK]}).status_code == 401
    for token in ("read-token-1", TOKEN):
        headers = {"authorization": f"Bearer {token}"}
        assert client.get("/v1/tables", headers=headers).status_code == 200


def _corrupt(mutate) -> dict:
    table = make_table()
    mutate(table)
    return table


@pytest.mark.parametrize(
    ("table", "field"),
    [
        (_corrupt(lambda t: t["parts"]["mlp"]["median_ms"][0].__setitem__(0, -1.0)), "parts.mlp.median_ms"),
        (_corrupt(lambda t: t["parts"]["mlp"]["median_ms"][1].__setitem__(2, 0.0)), "parts.mlp.median_ms"),
        (_corrupt(lambda t: t["parts"]["mlp"]["median_ms"][1].__setitem__(2, None)), "parts.mlp.median_ms"),
        (_corrupt(lambda t: t["grid"].__setitem__("qk", [8, 32, 16])), "grid.qk"),
        (_corrupt(lambda t: t["grid"].__setitem__("qk", [8, 8, 16])), "grid.qk"),
        (_corrupt(lambda t: t["parts"]["mlp"]["median_ms"].pop()), "parts.mlp.median_ms"),
        (_corrupt(lambda t: t["parts"]["attn_qk"].__setitem__("axes", ["emb", "qk"])), "parts.attn_qk.axes"),
        (_corrupt(lambda t: t["workload"].__setitem__("batch", 0)), "workload.batch"),
        (_corrupt(lambda t: t.__setitem__("version", 99)), "version"),
        (_corrupt(lambda t: t.__setitem__("complete", False)), "complete"),
    ],
)
def test_invalid_uploads_get_422_naming_the_field(client: TestClient, table: dict, field: str) -> None:
    answer = client.put("/v1/tables/bad", json=table, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field, answer.json()
    assert client.get("/v1/tables/bad").status_code == 404


def test_nan_latency_in_an_upload_is_refused(client: TestClient) -> None:
    table = make_table()
    table["parts"]["mlp"]["median_ms"][1][1] = float("nan")
    raw = json.dumps(table).encode()  # Python writes the bare NaN token that strict JSON has no place for
    assert raw.count(b"NaN") == 1
    answer = client.put("/v1/tables/bad", content=raw, headers=AUTH | {"content-type": "application/json"})
    assert answer.status_code == 422 and "NaN" in answer.json()["detail"]


def test_tables_added_by_hand_show_up_and_incomplete_ones_are_not_served(client: TestClient, tables_dir: Path):
    assert [t["id"] for t in client.get("/v1/tables").json()["tables"]] == ["small"]
    (tables_dir / "later.json").write_text(json.dumps(make_table(scale=2.0)))
    partial = make_table()
    partial["complete"] = False
    (tables_dir / "partial.json").write_text(json.dumps(partial))
    (tables_dir / "broken.json").write_text("{not json")
    assert [t["id"] for t in client.get("/v1/tables").json()["tables"]] == ["later", "small"]
    answer = client.post("/v1/tables/partial/latency", json={"blocks": [BLOCK]})
    assert answer.status_code == 404 and "incomplete" in answer.json()["detail"]
    assert client.post("/v1/tables/broken/latency", json={"blocks": [BLOCK]}).status_code == 404
    # replaced by hand (new file renamed over the old one): the next request sees the new numbers
    before = client.post("/v1/tables/later/latency", json={"blocks": [BLOCK]}).json()["latency_ms"][0]
    tmp = tables_dir / ".later.tmp"
    tmp.write_text(json.dumps(make_table(scale=4.0)))
    os.replace(tmp, tables_dir / "later.json")
    after = client.post("/v1/tables/later/latency", json={"blocks": [BLOCK]}).json()["latency_ms"][0]
    assert after == pytest.approx(2.0 * before)
    (tables_dir / "later.json").unlink()
    assert client.post("/v1/tables/later/latency", json={"blocks": [BLOCK]}).status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "incomplete" in page.text and "broken" in page.text


def test_importing_the_server_and_client_loads_no_torch() -> None:
    code = (
        "import sys, lut_server.app, lut_server.client, lut_server.__main__; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
