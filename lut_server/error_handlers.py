"""One error shape for every 4xx, `{"detail": message, "field": name}`, and no input echoed back.

FastAPI's default validation error echoes the offending input, which fails to encode when it is NaN (a 500);
these handlers name the field and the allowed values instead.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lut_server.latency_table import QueryError
from lut_server.table_format import TableFormatError
from lut_server.table_store import TableIncomplete, TableNotFound

log = logging.getLogger("lut_server.errors")


def error_response(status: int, detail: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field}, status_code=status, headers=headers)


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """("body", "blocks", 3, "emb") -> "blocks[3].emb"; path and query parameters keep their own name."""
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query", "header"):
        parts = parts[1:] or [loc[0]]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _describe(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"the body is not valid JSON: {reason}".rstrip(": ")
    if kind == "extra_forbidden":
        return "is not an accepted field"
    if kind == "missing":
        return "is required"
    return str(error.get("msg", "is invalid"))


def _table_format_field(message: str) -> str:
    """TableFormatError messages start with the field they are about ("parts.mlp.median_ms has shape ...")."""
    first = message.split(" ", 1)[0]
    return first if first and first[0].isalpha() and first.replace(".", "").replace("_", "").isalnum() else "table"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0] if errors else {}
        named = (first.get("ctx") or {}).get("field")  # a whole-body check names the field it is about
        field = "body" if first.get("type") == "json_invalid" else named or field_name(first.get("loc", ("body",)))
        detail = f"{field}: {_describe(first)}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more problems)"
        return error_response(422, detail, field)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        field = getattr(exc, "field", None)
        return error_response(exc.status_code, str(exc.detail), field, headers=getattr(exc, "headers", None))

    @app.exception_handler(QueryError)
    async def _query(_: Request, exc: QueryError) -> JSONResponse:
        return error_response(422, str(exc), exc.field or None)

    @app.exception_handler(TableFormatError)
    async def _table_format(_: Request, exc: TableFormatError) -> JSONResponse:
        message = str(exc)
        return error_response(422, message, _table_format_field(message))

    @app.exception_handler(TableNotFound)
    async def _not_found(_: Request, exc: TableNotFound) -> JSONResponse:
        return error_response(404, str(exc), "table_id")

    @app.exception_handler(TableIncomplete)
    async def _incomplete(_: Request, exc: TableIncomplete) -> JSONResponse:
        return error_response(409, str(exc), "table_id")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # a bug: log it, answer cleanly
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return error_response(500, "internal error; the server log has the details")


class ApiError(HTTPException):
    """An HTTP error that names the input field at fault."""

    def __init__(self, status: int, detail: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status, detail, headers)
        self.field = field
