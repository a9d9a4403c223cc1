"""PUT /v1/tables/{id} takes the typed table document: its schema is in /openapi.json, version 1 is upgraded, and
a bad field is refused with the table format's message naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lut_server.app import create_app
from lut_server.config import ServerConfig
from tests.table_factory import FINGERPRINT, make_table, make_table_v2

TOKEN = "write-token-123"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    (tmp_path / "tables").mkdir()
    return TestClient(create_app(ServerConfig(tmp_path / "tables", write_token=TOKEN)))


def _resolve(spec: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def test_the_put_body_schema_is_the_table_document(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/tables/{table_id}"]["put"]["requestBody"]
    table = _resolve(spec, body["content"]["application/json"]["schema"])
    expected = {"format", "version", "complete", "created", "workload", "model", "device", "software", "protocol",
                "grid", "parts", "sweep", "validation", "calibration", "interpolation", "levels"}  # fmt: skip
    assert set(table["properties"]) == expected and table["additionalProperties"] is False
    assert {"format", "version", "workload", "device", "software", "grid", "parts"} <= set(table["required"])
    device = _resolve(spec, table["properties"]["device"])
    assert set(device["properties"]) == {"name", "kind", "match", "recorded"}
    assert device["properties"]["kind"]["enum"] == ["cpu", "gpu"]
    workload = _resolve(spec, table["properties"]["workload"])
    assert workload["properties"]["batch"]["minimum"] == 1
    calibration = _resolve(spec, table["properties"]["calibration"]["anyOf"][0])
    assert {"method", "factors", "block_ms", "model_ms", "before", "after"} <= set(calibration["required"])


def test_a_version_2_upload_is_stored_with_its_fingerprint(client: TestClient, tmp_path: Path) -> None:
    doc = make_table_v2()
    assert client.put("/v1/tables/fp", json=doc, headers=AUTH).status_code == 201
    assert client.get("/v1/tables/fp").json() == doc
    assert json.loads((tmp_path / "tables" / "fp.json").read_text())["device"]["match"] == FINGERPRINT["match"]


def test_a_version_1_upload_is_stored_as_version_2(client: TestClient, tmp_path: Path) -> None:
    assert client.put("/v1/tables/old", json=make_table(), headers=AUTH).status_code == 201
    stored = json.loads((tmp_path / "tables" / "old.json").read_text())
    assert stored["version"] == 2
    assert stored["device"] == {"name": "test-cpu", "kind": "cpu", "match": {}, "recorded": {}}


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d["device"].__setitem__("kind", "tpu"), "device.kind", "must be 'cpu' or 'gpu'"),
        (lambda d: d["device"].pop("name"), "device.name", "is missing"),
        (lambda d: d["workload"].__setitem__("batch", True), "workload.batch", "must be int, got bool"),
        (lambda d: d["parts"]["mlp"].__setitem__("median_ms", [[1.0]]), "parts.mlp.median_ms", "has shape"),
        (lambda d: d.__setitem__("calibration", {"method": "x"}), "calibration.factors", "is missing"),
        (lambda d: d.__setitem__("extra", 1), "extra", "is not a known field"),
        (lambda d: d.__setitem__("version", 3), "version", "is not supported"),
    ],
)
def test_a_bad_field_is_named(client: TestClient, mutate, field: str, words: str) -> None:
    doc = make_table_v2()
    mutate(doc)
    answer = client.put("/v1/tables/bad", json=doc, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and words in answer.json()["detail"], answer.json()


@pytest.mark.parametrize("body", [[1, 2], "table", None, 3])
def test_a_body_that_is_not_a_table_object_is_refused(client: TestClient, body: object) -> None:
    answer = client.put("/v1/tables/bad", json=body, headers=AUTH)
    assert answer.status_code == 422, answer.text
