"""Property-based fuzzing of the whole API from its own /openapi.json (schemathesis, in-process over ASGI).

Positive and negative cases for every operation, with and without the write token, half of them aimed at a table
that exists: no answer may be a 5xx, and every answer must match the status codes, content types and schemas
the OpenAPI document declares.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from lut_server.app import create_app  # noqa: E402
from lut_server.config import ServerConfig  # noqa: E402
from tests.table_factory import make_table  # noqa: E402

TOKEN = "fuzz-write-token"
EXAMPLES_PER_OPERATION_AND_MODE = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.mark.slow
def test_fuzzing_finds_no_5xx_and_no_schema_violation(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    tables.mkdir()
    document = json.dumps(make_table())

    def restore() -> None:  # a fuzzed DELETE with the token may remove it; keep a real table to aim at
        if not (tables / "small.json").exists():
            (tables / "small.json").write_text(document)

    restore()
    app = create_app(ServerConfig(tables, write_token=TOKEN, max_body_bytes=64 * 1024))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    calls: dict[str, int] = {}
    statuses: dict[int, int] = {}

    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            raw = operation.definition.raw
            if mode.is_negative and not (raw.get("parameters") or raw.get("requestBody")):
                continue  # nothing to make invalid (GET /healthz, GET /v1/tables)
            strategies = [operation.as_strategy(generation_mode=mode)]
            if "table_id" in str(operation.path):
                strategies.append(operation.as_strategy(generation_mode=mode, path_parameters={"table_id": "small"}))

            _fuzz(operation, strategies, calls, statuses, restore)

    total = sum(calls.values())
    print(f"schemathesis: {total} requests over {len(calls)} operations; statuses {sorted(statuses.items())}")
    assert total >= 500
    assert not [code for code in statuses if code >= 500]
    assert any(200 <= code < 300 for code in statuses) and any(400 <= code < 500 for code in statuses)


def _fuzz(operation, strategies: list, calls: dict[str, int], statuses: dict[int, int], after_each) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies), with_token=st.booleans())
    def run(case, with_token: bool) -> None:
        headers = {"authorization": f"Bearer {TOKEN}"} if with_token else None
        try:
            response = case.call_and_validate(checks=CHECKS, headers=headers)
        finally:
            after_each()
        calls[operation.label] = calls.get(operation.label, 0) + 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    run()
