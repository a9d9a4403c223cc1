"""Server settings in one immutable object, filled from command-line flags with environment fallbacks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MAX_BLOCKS_PER_QUERY = 100_000
"""The API's limit on blocks in one /latency or /deltas request (more gets 413)."""

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
"""Large enough for a 100,000-block query (~7 MB) and a table at the format's cell limit; bounded all the same."""

TOKEN_VARIABLES: dict[str, str] = {"write_token": "LUT_SERVER_TOKEN", "read_token": "LUT_SERVER_READ_TOKEN"}
"""The environment variable each token is read from, named where a token is refused."""


@dataclass(frozen=True)
class ServerConfig:
    """What the app needs to know; tokens are None when not configured (writes are then refused)."""

    tables_dir: Path
    write_token: str | None = None
    read_token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_blocks: int = MAX_BLOCKS_PER_QUERY

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if self.max_blocks < 1:
            raise ValueError("max_blocks must be >= 1")
        for name, variable in TOKEN_VARIABLES.items():
            token = getattr(self, name)
            if token is not None and len(token) < 8:
                raise ValueError(f"{variable} ({name}) must be at least 8 characters (or unset)")

    @classmethod
    def from_env(cls, tables_dir: str | Path | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
        """Build from LUT_SERVER_* variables; an explicit tables_dir wins over LUT_SERVER_TABLES."""
        env = os.environ if env is None else env
        directory = tables_dir if tables_dir is not None else env.get("LUT_SERVER_TABLES", "tables")
        return cls(
            tables_dir=Path(directory),
            write_token=env.get(TOKEN_VARIABLES["write_token"]) or None,
            read_token=env.get(TOKEN_VARIABLES["read_token"]) or None,
            max_body_bytes=int(env.get("LUT_SERVER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
        )
