"""The FastAPI application of HTTP API v1: `create_app(config)` wires the store, the guards and the endpoints."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from lut_server import __version__
from lut_server.api_models import (
    DeltasRequest,
    DeltasResponse,
    ErrorBody,
    HealthResponse,
    LatencyRequest,
    LatencyResponse,
    TablesResponse,
    TableSummary,
)
from lut_server.auth import TokenGuard
from lut_server.body_limit import BodyLimitMiddleware
from lut_server.config import ServerConfig
from lut_server.dims import AXES, BlockWidths, ModelDims
from lut_server.error_handlers import ApiError, install_error_handlers
from lut_server.status_page import render_page
from lut_server.strict_json import StrictJsonRoute
from lut_server.table_body_route import TableBodyRoute
from lut_server.table_format import TABLE_ID_PATTERN
from lut_server.table_model import LatencyTableDocument
from lut_server.table_store import TableStore

TableId = Path(
    pattern=TABLE_ID_PATTERN.pattern,
    description="the table's file name without .json",
    examples=["deit-b-cpu-fp32"],
)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


def _json(payload: Any, status: int = 200) -> Response:
    """Serialise without re-validating through pydantic: the hot paths build plain dicts of finite floats."""
    return Response(json.dumps(payload, allow_nan=False), status_code=status, media_type="application/json")


INLINE_BLOCKS = 2_000
"""Queries up to this many blocks are answered on the event loop (well under a few ms); larger ones in a thread."""


async def _compute(function: Callable[[], Any], blocks: int) -> Any:
    """Run small queries inline: a thread-pool hop costs more than interpolating a few blocks."""
    return function() if blocks <= INLINE_BLOCKS else await run_in_threadpool(function)


def _check_block_count(n: int, limit: int) -> None:
    if n > limit:
        raise ApiError(413, f"blocks has {n} entries; at most {limit} a request", "blocks")


def create_app(config: ServerConfig) -> FastAPI:
    store = TableStore(config.tables_dir)
    guard = TokenGuard(config)
    app = FastAPI(
        title="vitlut latency service",
        version=__version__,
        description="Latency lookup tables for ViT pruning: block, model and group-delta latency over HTTP (API v1).",
    )
    app.state.store = store
    app.state.config = config
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.max_body_bytes)

    read = [Depends(guard.require_read)] if config.read_token else []  # no per-request hop when reads are open
    write = [Depends(guard.require_write)]
    api = APIRouter(route_class=StrictJsonRoute)

    @api.get("/healthz", response_model=HealthResponse, tags=["service"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "tables": len(store.tables())}

    @api.get("/v1/tables", response_model=TablesResponse, dependencies=read, responses=_errors(401), tags=["tables"])
    def list_tables() -> dict[str, Any]:
        """Every servable table's summary: provenance, accuracy and the inclusive range a query may use."""
        return {"tables": [t.summary() for t in store.tables()]}

    @api.get(
        "/v1/tables/{table_id}",
        response_model=dict[str, Any],
        dependencies=read,
        responses=_errors(401, 404, 422),
        tags=["tables"],
    )
    def get_table(table_id: str = TableId) -> Response:
        """The whole table document, as stored."""
        return _json(store.get(table_id).data)

    @api.get(
        "/v1/tables/{table_id}/summary",
        response_model=TableSummary,
        dependencies=read,
        responses=_errors(401, 404, 422),
        tags=["tables"],
    )
    def get_summary(table_id: str = TableId) -> Response:
        """One table's summary, as listed by /v1/tables (what a client needs: provenance, accuracy, ranges)."""
        return _json(store.get(table_id).summary())

    def put_table(table: LatencyTableDocument, table_id: str = TableId) -> Response:
        """Create (201) or replace (200) a table; it is validated and written atomically (as version 2), then
        swapped in whole. A version 1 document is accepted and upgraded."""
        stored, created = store.put(table_id, table.model_dump())
        return _json(stored.summary(), 201 if created else 200)

    api.add_api_route(
        "/v1/tables/{table_id}",
        put_table,
        methods=["PUT"],
        response_model=TableSummary,
        status_code=201,
        dependencies=write,
        responses={200: {"model": TableSummary, "description": "replaced"}, **_errors(401, 403, 413, 422)},
        tags=["tables"],
        route_class_override=TableBodyRoute,
    )

    @api.delete(
        "/v1/tables/{table_id}",
        status_code=204,
        dependencies=write,
        responses=_errors(401, 403, 404, 409, 422),
        tags=["tables"],
    )
    def delete_table(table_id: str = TableId) -> Response:
        """Remove a table (204); an incomplete one is refused (409): a sweep may still be writing it."""
        store.delete(table_id)
        return Response(status_code=204)

    @api.post(
        "/v1/tables/{table_id}/latency",
        response_model=LatencyResponse,
        dependencies=read,
        responses=_errors(401, 404, 413, 422),
        tags=["queries"],
    )
    async def latency(query: LatencyRequest, table_id: str = TableId) -> Response:
        """Predicted latency of each block (ms), in order; at most 100,000 blocks."""
        _check_block_count(len(query.blocks), config.max_blocks)

        def answer() -> Response:
            table = store.get(table_id)
            rows = np.array([[b.emb, b.heads, b.qk, b.v, b.mlp] for b in query.blocks], dtype=float)
            return _json({"latency_ms": table.block_latency(rows.reshape(-1, len(AXES))).tolist()})

        return await _compute(answer, len(query.blocks))

    @api.post(
        "/v1/tables/{table_id}/deltas",
        response_model=DeltasResponse,
        dependencies=read,
        responses=_errors(401, 404, 413, 422),
        tags=["queries"],
    )
    async def deltas(query: DeltasRequest, table_id: str = TableId) -> Response:
        """Lat(model) − Lat(model with one dimension of one block reduced by its group size), for every group."""
        _check_block_count(len(query.blocks), config.max_blocks)

        def answer() -> Response:
            table = store.get(table_id)
            model = ModelDims(query.emb, tuple(BlockWidths(b.heads, b.qk, b.v, b.mlp) for b in query.blocks))
            group_size = query.group_size.given() if query.group_size else None
            return _json(table.deltas(model, group_size).as_dict())

        return await _compute(answer, 6 * len(query.blocks))  # six evaluations per block

    @api.get("/", response_class=HTMLResponse, dependencies=read, include_in_schema=False)
    def page(request: Request) -> HTMLResponse:
        params = request.query_params
        requested = {a: params[a] for a in AXES if a in params}
        html = render_page(store.tables(), params.get("table"), requested, store.problems())
        return HTMLResponse(html)

    app.include_router(api)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory lut_server.app:app_from_env` and for worker processes (env carries config)."""
    return create_app(ServerConfig.from_env())
