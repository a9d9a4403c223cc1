"""`python -m lut_server --tables DIR [--host 127.0.0.1] [--port N] [--workers K]`: serve latency tables.

Tokens come from the environment only (LUT_SERVER_TOKEN, LUT_SERVER_READ_TOKEN), never from flags, so they do not
show up in process listings.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import sys
from pathlib import Path

from lut_server.config import DEFAULT_MAX_BODY_BYTES, ServerConfig
from lut_server.json_logging import log_config

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _env_int(name: str, default: int) -> int:
    """An integer setting from the environment; a value that is not one is a usage error naming the variable."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        print(f"error: {name} must be an integer, got {raw!r}", file=sys.stderr)
        raise SystemExit(2) from None


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m lut_server", description=__doc__)
    p.add_argument("--tables", type=Path, default=env.get("LUT_SERVER_TABLES"), help="directory of ID.json tables")
    p.add_argument("--host", default=env.get("LUT_SERVER_HOST", "127.0.0.1"), help="default 127.0.0.1 (loopback)")
    # numbers from LUT_SERVER_* are read in main, only where the flag is absent, so a flag wins over a bad variable
    p.add_argument("--port", type=int, default=None, help="0 to 65535 (default LUT_SERVER_PORT, else 8000)")
    p.add_argument("--workers", type=int, default=None, help="processes (default LUT_SERVER_WORKERS, else 1)")
    p.add_argument("--max-body-bytes", type=int, default=None, help="default LUT_SERVER_MAX_BODY_BYTES, else 32 MiB")
    p.add_argument(
        "--log-level", default=env.get("LUT_SERVER_LOG_LEVEL", "info"), type=str.lower, choices=LOG_LEVELS,
        help="default LUT_SERVER_LOG_LEVEL, else info",
    )  # fmt: skip
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, variable, default in (
        ("port", "LUT_SERVER_PORT", 8000),
        ("workers", "LUT_SERVER_WORKERS", 1),
        ("max_body_bytes", "LUT_SERVER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
    ):
        if getattr(args, flag) is None:
            setattr(args, flag, _env_int(variable, default))
    if args.log_level not in LOG_LEVELS:  # from LUT_SERVER_LOG_LEVEL: argparse checks only the flag
        print(
            f"error: LUT_SERVER_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {args.log_level!r}",
            file=sys.stderr,
        )
        return 2
    if args.tables is None:
        print("error: --tables DIR (or LUT_SERVER_TABLES) is required", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be 0 to 65535, got {args.port}", file=sys.stderr)
        return 2
    if not args.tables.exists():
        print(
            f"error: --tables {args.tables} does not exist; to serve an empty store on purpose, create it first "
            f"(mkdir -p {args.tables})",
            file=sys.stderr,
        )
        return 2
    if not args.tables.is_dir():
        print(f"error: --tables {args.tables} is a file; it takes the directory of ID.json tables", file=sys.stderr)
        return 2
    try:
        next(os.scandir(args.tables), None)
    except OSError as exc:
        print(f"error: cannot read --tables {args.tables}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.max_body_bytes < 1024:
        print(
            f"error: --max-body-bytes (or LUT_SERVER_MAX_BODY_BYTES) must be at least 1024, got {args.max_body_bytes}",
            file=sys.stderr,
        )
        return 2
    # Worker processes rebuild the app from the environment, so the flags travel there.
    os.environ["LUT_SERVER_TABLES"] = str(args.tables.resolve())
    os.environ["LUT_SERVER_MAX_BODY_BYTES"] = str(args.max_body_bytes)
    try:
        config = ServerConfig.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging_config = log_config(args.log_level, access_log=not args.no_access_log)
    logging.config.dictConfig(logging_config)
    log = logging.getLogger("lut_server.main")
    directory = config.tables_dir
    if not any(directory.glob("*.json")):
        if config.write_token is None:
            log.warning(
                "no tables in %s: copy ID.json files in (uploads are refused: LUT_SERVER_TOKEN is not set)", directory
            )
        else:
            log.warning("no tables in %s: uploads (PUT /v1/tables/ID) or ID.json files copied in add them", directory)
    if config.write_token is None:
        log.warning("LUT_SERVER_TOKEN is not set: uploads and deletions are refused")
    if args.host not in LOOPBACK and config.read_token is None:
        log.warning("serving beyond loopback without LUT_SERVER_READ_TOKEN: anyone who reaches it can read")
    log.info(
        "starting",
        extra={"tables": str(config.tables_dir), "host": args.host, "port": args.port, "workers": args.workers},
    )
    import uvicorn

    uvicorn.run(
        "lut_server.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=logging_config,
        access_log=not args.no_access_log,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
