"""Fixtures shared by the test packages; tables come from the one builder, tests/table_factory.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.table_factory import make_table


@pytest.fixture
def tables_dir(tmp_path: Path) -> Path:
    """A server's tables directory holding one complete table, `small`, over the factory's SMALL_GRID."""
    directory = tmp_path / "tables"
    directory.mkdir()
    (directory / "small.json").write_text(json.dumps(make_table()))
    return directory
