"""Facts about this machine and its software, recorded in every table."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def host_facts() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
    }


def software_facts(*packages: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"python": platform.python_version(), "vitlut": package_version("vitlut")}
    for name in ("torch", "numpy", *packages):
        facts[name] = package_version(name)
    return facts


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
