"""JSON request bodies without NaN, Infinity or overflowing numbers, which Python's json module accepts.

A latency or width must be a finite number; rejecting these at parse time turns them into a 422 naming the body,
instead of values that reach the interpolation (or an error renderer that cannot encode them: a 500).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(f"{name} is not valid JSON; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"number {text[:32]} overflows a 64-bit float")
    return value


def loads_strict(text: str | bytes) -> Any:
    """json.loads that raises json.JSONDecodeError on NaN, Infinity and floats that overflow to infinity."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (_NonFinite, UnicodeDecodeError) as exc:
        doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        message = str(exc) if isinstance(exc, _NonFinite) else "the body is not UTF-8 text"
        raise json.JSONDecodeError(message, doc, 0) from None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose request body is decoded with `loads_strict`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler
