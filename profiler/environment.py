"""Package versions and timestamps recorded in tables (the device and software fingerprint is in fingerprint.py)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
