"""The served tables: a directory of `ID.json` files, loaded lazily and reloaded when a file changes on disk.

Each request looks up its table with one `stat` call, so tables copied in by hand (or written by another worker
process) are picked up without a restart. A table is replaced by swapping the whole `LatencyTable` object: a
reader holds either the old object or the new one, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lut_server.atomic_file import write_json_atomic
from lut_server.latency_table import LatencyTable, QueryError
from lut_server.table_format import TableFormatError, check_table_id, read_table

log = logging.getLogger("lut_server.store")

_Signature = tuple[int, int, int]  # inode, size, mtime_ns


class TableNotFound(LookupError):
    """No servable table under that id; the message says whether it is missing, incomplete or invalid."""


class TableIncomplete(RuntimeError):
    """A delete refused: the table says it is incomplete, so a sweep may still be writing it."""


MISNAMED = (
    "its name is not a valid table id (lower-case letters, digits, '.', '_', '-'; starting with a letter or digit, "
    "at most 64 characters): rename it to serve it"
)
"""Why a `*.json` file whose name is no table id is not served."""


@dataclass(frozen=True)
class _Entry:
    signature: _Signature
    table: LatencyTable | None
    problem: str | None  # why the file is not served (invalid or incomplete)


def _signature(path: str | Path) -> _Signature | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class TableStore:
    """Tables by id over one directory; thread-safe, and consistent across worker processes through the files."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():  # never created here: a mistyped path would serve an empty store
            raise FileNotFoundError(f"tables directory {self.directory} does not exist or is not a directory")
        self._entries: dict[str, _Entry] = {}
        self._paths: dict[str, str] = {}  # id -> file path, for ids already validated
        self._misnamed: frozenset[str] = frozenset()  # *.json files whose name is no table id, at the last scan
        self._lock = threading.Lock()
        self.ids()  # logs the misnamed files at startup

    def path_for(self, table_id: str) -> Path:
        return self.directory / f"{check_table_id(table_id)}.json"

    def _cached_path(self, table_id: str) -> str:
        path = self._paths.get(table_id)
        if path is None:
            path = str(self.path_for(table_id))
            if len(self._paths) < 10_000:  # ids are validated, but bound the cache all the same
                self._paths[table_id] = path
        return path

    # ---- reads ----------------------------------------------------------------------------------------------
    def get(self, table_id: str) -> LatencyTable:
        """The current table, reloaded first if its file changed; raises TableNotFound."""
        path = self._cached_path(table_id)
        signature = _signature(path)
        entry = self._entries.get(table_id)
        if signature is None:
            if entry is not None:
                with self._lock:
                    self._entries.pop(table_id, None)
            raise TableNotFound(f"table {table_id!r} does not exist")
        if entry is None or entry.signature != signature:
            entry = self._load(table_id, path, signature)
        if entry.table is None:
            raise TableNotFound(f"table {table_id!r} is not served: {entry.problem}")
        return entry.table

    def ids(self) -> list[str]:
        """Ids of all `*.json` files with a valid id in the directory (servable or not), sorted. The other `*.json`
        files are remembered for `problems()` and logged once each when first seen."""
        found, misnamed = [], set()
        with os.scandir(self.directory) as it:
            for item in it:
                name = item.name
                if name.endswith(".json") and not name.startswith("."):  # dot files: temp files of atomic writes
                    try:
                        found.append(check_table_id(name[: -len(".json")]))
                    except TableFormatError:
                        misnamed.add(name)
        if misnamed != self._misnamed:
            with self._lock:
                new, self._misnamed = misnamed - self._misnamed, frozenset(misnamed)
            for name in sorted(new):
                log.warning("table not served", extra={"file": name, "reason": MISNAMED})
        return sorted(found)

    def tables(self) -> list[LatencyTable]:
        """Every servable table; invalid and incomplete files are skipped (and logged once per file version)."""
        out = []
        for table_id in self.ids():
            try:
                out.append(self.get(table_id))
            except TableNotFound:
                continue
        return out

    def problems(self) -> dict[str, str]:
        """Files in the directory that are not served, by file name, with the reason (after the last scan)."""
        loaded = {f"{k}.json": e.problem for k, e in self._entries.items() if e.problem is not None}
        return loaded | dict.fromkeys(self._misnamed, MISNAMED)

    def _load(self, table_id: str, path: str, signature: _Signature) -> _Entry:
        with self._lock:
            current = self._entries.get(table_id)
            if current is not None and current.signature == signature:
                return current  # another thread loaded it meanwhile
            entry = self._read(table_id, path)
            self._entries[table_id] = entry
            return entry

    @staticmethod
    def _read(table_id: str, path: str) -> _Entry:
        # The signature is taken from the file we actually read, so a write racing this load triggers another.
        for _ in range(3):
            before = _signature(path)
            try:
                data = read_table(path)
                table = LatencyTable(data, table_id=table_id)
                problem = None
            except (TableFormatError, QueryError) as exc:
                table, problem = None, str(exc)
            after = _signature(path)
            if before == after and after is not None:
                break
        if after is None:
            raise TableNotFound(f"table {table_id!r} does not exist")
        if problem is not None:
            log.warning("table not served", extra={"table": table_id, "reason": problem})
        else:
            log.info("table loaded", extra={"table": table_id})
        return _Entry(after, table, problem)

    # ---- writes ---------------------------------------------------------------------------------------------
    def put(self, table_id: str, data: Mapping[str, Any]) -> tuple[LatencyTable, bool]:
        """Validate, write atomically, swap in; returns (table, created). Raises TableFormatError or QueryError."""
        path = self.path_for(table_id)
        table = LatencyTable(data, table_id=table_id)  # validates the format; QueryError(field "complete") if partial
        with self._lock:
            created = not path.exists()
            write_json_atomic(path, table.data)
            signature = _signature(path)
            if signature is not None:
                self._entries[table_id] = _Entry(signature, table, None)
        log.info("table stored", extra={"table": table_id, "new_table": created})
        return table, created

    def delete(self, table_id: str) -> None:
        """Remove a table's file; raises TableNotFound, or TableIncomplete for a table a sweep may be writing."""
        path = self.path_for(table_id)
        if _says_incomplete(path):
            raise TableIncomplete(
                f"table {table_id!r} is incomplete: a sweep may still be writing it, so it is not deleted; if the "
                f"sweep is dead, delete {path.name} from the tables directory by hand"
            )
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                raise TableNotFound(f"table {table_id!r} does not exist") from None
            self._entries.pop(table_id, None)
        log.info("table deleted", extra={"table": table_id})


def _says_incomplete(path: Path) -> bool:
    """Whether the file is a table document with `complete: false`, however else it may fail to validate (a sweep
    writes its partial table whole, by rename, so an unreadable file is no sweep's)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("complete") is False
