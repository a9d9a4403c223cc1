"""A route whose request body is a table document: a body that fails validation gets the table format's message.

The body is declared as `LatencyTableDocument`, so /openapi.json documents the real schema. FastAPI would report
the model's failure as a generic "body" error; this route re-raises the `TableFormatError` inside it, so an
upload is refused with the same message and field name ("parts.mlp.median_ms has shape ...") as a file on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError

from lut_server.strict_json import StrictJsonRoute
from lut_server.table_model import TableFormatError


def table_error(errors: list[Any]) -> TableFormatError | None:
    """The table format's own error among a request's validation errors, if the body was a table that failed."""
    for error in errors:
        cause = (error.get("ctx") or {}).get("error") if isinstance(error, dict) else None
        if isinstance(cause, TableFormatError):
            return cause
    return None


class TableBodyRoute(StrictJsonRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def table_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                cause = table_error(list(exc.errors()))
                if cause is None:
                    raise
                raise cause from None

        return table_handler
