"""The tables directory as the server sees it: files it cannot serve are listed with the reason, and a table a sweep
may still be writing is not deleted over HTTP."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lut_server.app import create_app
from lut_server.config import ServerConfig
from tests.table_factory import make_table

TOKEN = "write-token-123"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MISNAMED = ("Upper.json", "My CPU.json", "-dash.json")


@pytest.fixture
def client(tables_dir: Path) -> TestClient:
    return TestClient(create_app(ServerConfig(tables_dir, write_token=TOKEN)))


def test_a_file_whose_name_is_no_table_id_is_listed_as_not_served_and_logged_once(
    tables_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in MISNAMED:
        (tables_dir / name).write_text(json.dumps(make_table()))
    (tables_dir / ".small.json.tmp.json").write_text("{")  # a dot file: an atomic write in flight, not a table
    with caplog.at_level(logging.WARNING, logger="lut_server.store"):
        client = TestClient(create_app(ServerConfig(tables_dir, write_token=TOKEN)))  # the store scans at load
        logged = sorted(r.file for r in caplog.records if getattr(r, "file", None))
        assert logged == sorted(MISNAMED)
        assert [t["id"] for t in client.get("/v1/tables").json()["tables"]] == ["small"]
        page = client.get("/").text
    assert sorted(r.file for r in caplog.records if getattr(r, "file", None)) == logged  # not again per scan
    reason = "its name is not a valid table id (lower-case letters, digits, &#x27;.&#x27;, &#x27;_&#x27;, &#x27;-&#x27;"
    not_served = page.split("<h2>Files not served</h2>", 1)[1]
    for name in MISNAMED:
        assert f"<li>{name}: {reason}" in not_served
    assert ".small.json.tmp.json" not in page

    (tables_dir / "Upper.json").rename(tables_dir / "upper.json")  # renamed: served, and no longer listed
    assert [t["id"] for t in client.get("/v1/tables").json()["tables"]] == ["small", "upper"]
    assert "Upper.json" not in client.get("/").text.split("<h2>Files not served</h2>", 1)[1]


def test_an_incomplete_table_is_not_deleted_over_http(client: TestClient, tables_dir: Path) -> None:
    partial = make_table()
    partial["complete"] = False
    partial["parts"]["mlp"]["median_ms"][0][0] = None
    (tables_dir / "partial.json").write_text(json.dumps(partial))
    answer = client.delete("/v1/tables/partial", headers=AUTH)
    assert (answer.status_code, answer.json()["field"]) == (409, "table_id")
    detail = answer.json()["detail"]
    assert "incomplete" in detail and "sweep may still be writing it" in detail and "partial.json" in detail
    assert "by hand" in detail and (tables_dir / "partial.json").exists()

    (tables_dir / "broken.json").write_text("{not json")  # no sweep writes this: it may go
    assert client.delete("/v1/tables/broken", headers=AUTH).status_code == 204
    assert client.delete("/v1/tables/small", headers=AUTH).status_code == 204
    assert sorted(p.name for p in tables_dir.iterdir()) == ["partial.json"]
