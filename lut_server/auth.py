"""Bearer-token checks: writes need the write token, reads need the read token when one is configured."""

from __future__ import annotations

import hmac

from fastapi import Request

from lut_server.config import ServerConfig
from lut_server.error_handlers import ApiError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(given: str, expected: str | None) -> bool:
    # compare_digest on bytes: constant time whatever the content, and no TypeError on non-ASCII input
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


class TokenGuard:
    """FastAPI dependencies `require_write` and `require_read` bound to one configuration.

    They are `async` although they never wait: FastAPI would run a plain function in its thread pool, a hop that
    costs more than the check itself.
    """

    def __init__(self, config: ServerConfig):
        self.write_token = config.write_token
        self.read_token = config.read_token

    async def require_write(self, request: Request) -> None:
        if self.write_token is None:
            raise ApiError(403, "writes are disabled: the server was started without LUT_SERVER_TOKEN", "authorization")
        token = _bearer(request)
        if token is None:
            raise ApiError(401, "writes need 'Authorization: Bearer <token>'", "authorization", _CHALLENGE)
        if not _matches(token, self.write_token):
            raise ApiError(401, "the bearer token is not the server's write token", "authorization", _CHALLENGE)

    async def require_read(self, request: Request) -> None:
        if self.read_token is None:
            return
        token = _bearer(request)
        if token is None:
            raise ApiError(401, "reads need 'Authorization: Bearer <read token>'", "authorization", _CHALLENGE)
        if not (_matches(token, self.read_token) or _matches(token, self.write_token)):
            raise ApiError(401, "the bearer token is not the server's read or write token", "authorization", _CHALLENGE)
