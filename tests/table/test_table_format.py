import json

import pytest

from lut_server.table_format import (
    TableFormatError,
    check_table_id,
    parse_table,
    read_table,
    validate_table,
    write_table,
)
from tests.table.table_factory import make_table


def test_valid_table_round_trips_through_an_atomic_write(tmp_path):
    doc = make_table()
    path = tmp_path / "t.json"
    write_table(path, doc)
    assert read_table(path) == json.loads(json.dumps(doc))
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temp file left behind


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["parts"]["mlp"]["median_ms"][0].__setitem__(0, -1.0), "parts.mlp.median_ms"),
        (lambda d: d["parts"]["mlp"]["median_ms"][0].__setitem__(0, float("inf")), "finite positive"),
        (lambda d: d["parts"]["mlp"]["median_ms"][0].__setitem__(0, None), "missing"),
        (lambda d: d["grid"].__setitem__("qk", [8, 8, 32]), "grid.qk must be strictly increasing"),
        (lambda d: d["grid"].__setitem__("qk", [32, 16, 8]), "strictly increasing"),
        (lambda d: d["parts"]["mlp"]["median_ms"].pop(), "shape"),
        (lambda d: d["parts"].__setitem__("bogus", {}), "parts.bogus is not a known part"),
        (lambda d: d.__setitem__("version", 99), "version 99 is not supported"),
        (lambda d: d["workload"].__setitem__("batch", 0), "workload.batch must be >= 1"),
        (lambda d: d["workload"].pop("precision"), "workload.precision is missing"),
        (lambda d: d["parts"]["attn_qk"].__setitem__("axes", ["emb", "qk", "heads"]), "axes must be"),
        (lambda d: d.__setitem__("parts", {"stem": d["parts"]["stem"]}), "must include block parts"),
    ],
)
def test_invalid_tables_are_refused_naming_the_field(mutate, message):
    doc = make_table()
    mutate(doc)
    with pytest.raises(TableFormatError, match=message):
        validate_table(doc)


def test_incomplete_tables_may_hold_missing_cells():
    doc = make_table()
    doc["complete"] = False
    doc["parts"]["mlp"]["median_ms"][0][0] = None
    validate_table(doc)


def test_nan_literals_in_json_are_refused():
    text = json.dumps(make_table()).replace('"median_ms": [[', '"median_ms": [[NaN, ', 1)
    with pytest.raises(TableFormatError, match="NaN"):
        parse_table(text)


def test_malformed_json_is_a_clear_error():
    with pytest.raises(TableFormatError, match="not valid JSON"):
        parse_table("{not json")


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "A-upper", "-lead", "a/b", "x" * 65, "a b", ".hidden"])
def test_bad_table_ids_are_refused(bad):
    with pytest.raises(TableFormatError):
        check_table_id(bad)


def test_good_table_ids_pass():
    assert check_table_id("epyc-torch-cpu-fp32-b1-t197") == "epyc-torch-cpu-fp32-b1-t197"
