import json

import numpy as np
import pytest

from lut_server.table_format import (
    FORMAT_VERSION,
    MAX_AXIS_VALUE,
    MAX_LATENCY_MS,
    TableFormatError,
    check_table_id,
    has_fingerprint,
    new_table_document,
    parse_table,
    part_median,
    read_table,
    validate_table,
    write_table,
)
from tests.table_factory import FINGERPRINT, SOFTWARE, calibration, make_table, make_table_v2


def test_version_2_table_round_trips_through_an_atomic_write(tmp_path):
    doc = make_table_v2()
    doc["calibration"] = calibration()
    doc["validation"] = {"median_ape_pct": 1.5, "calibrated": {"median_ape_pct": 1.0}, "extra": [1, 2]}
    path = tmp_path / "t.json"
    write_table(path, doc)
    assert read_table(path) == json.loads(json.dumps(doc))
    assert json.loads(path.read_text())["version"] == FORMAT_VERSION == 2
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temp file left behind


def test_version_1_table_is_read_as_version_2_and_written_as_version_2(tmp_path):
    v1 = make_table()
    v1["device"] = {"name": "AMD EPYC", "kind": "cpu", "cpu_count": 2, "os": "Linux"}
    v1["software"] = {"python": "3.11", "torch": "2.13.0+cpu"}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(v1))
    doc = read_table(path)
    assert doc["version"] == 2 and doc["calibration"] is None
    recorded = {"cpu_count": 2, "os": "Linux"}
    assert doc["device"] == {"name": "AMD EPYC", "kind": "cpu", "match": {}, "recorded": recorded}
    assert doc["software"] == {"match": {}, "recorded": {"python": "3.11", "torch": "2.13.0+cpu"}}
    assert doc["parts"] == v1["parts"] and doc["grid"] == v1["grid"] and doc["workload"]["backend"] == "torch-cpu"
    assert not has_fingerprint(doc) and not has_fingerprint(v1)
    write_table(path, doc)
    assert json.loads(path.read_text())["version"] == 2 and read_table(path) == doc


def test_version_1_gpu_device_and_missing_kind_are_upgraded():
    v1 = make_table()
    v1["device"] = {"name": "NVIDIA H100", "kind": "cuda", "compute_capability": "9.0"}
    assert validate_table(v1)["device"]["kind"] == "gpu"
    v1["device"] = {"name": "x"}
    assert validate_table(v1)["device"] == {"name": "x", "kind": "cpu", "match": {}, "recorded": {}}


def test_a_fingerprinted_table_says_so():
    doc = make_table_v2()
    assert has_fingerprint(doc) and doc["device"] == FINGERPRINT and doc["software"] == SOFTWARE


def test_builder_takes_flat_facts_as_recorded_only():
    v1 = make_table()
    doc = new_table_document(
        workload=v1["workload"], model=None, device={"name": "cpu", "kind": "cpu", "os": "Linux"},
        software={"torch": "2.13"}, protocol={}, grid=v1["grid"], parts=v1["parts"], sweep=None,
    )  # fmt: skip
    assert doc["device"]["recorded"] == {"os": "Linux"}
    assert doc["software"] == {"match": {}, "recorded": {"torch": "2.13"}}
    assert doc["complete"] is False and doc["calibration"] is None and doc["created"].endswith("Z")
    assert doc["workload"]["options"] == {}  # defaults filled in


def _v2(mutate):
    def apply(doc):
        doc.update(make_table_v2())
        mutate(doc)

    return apply


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
        (lambda d: d["workload"].__setitem__("backend", "foo"), "workload.backend must be 'torch-cpu', .*got 'foo'"),
        (lambda d: d["workload"].__setitem__("precision", "fp8"), "workload.precision must be 'fp32', .*got 'fp8'"),
        (lambda d: d.__setitem__("sweep", {"layout": "whatever"}), "sweep.layout must be .*got 'whatever'"),
        (_v2(lambda d: d["workload"].__setitem__("backend", "foo")), "workload.backend must be .*got 'foo'"),
        (_v2(lambda d: d["workload"].__setitem__("precision", "int8")), "workload.precision must be .*got 'int8'"),
        (_v2(lambda d: d["sweep"].__setitem__("layout", "pairs")), "sweep.layout must be .*got 'pairs'"),
        (lambda d: d["parts"]["attn_qk"].__setitem__("axes", ["emb", "qk", "heads"]), "axes must be"),
        (lambda d: d.__setitem__("parts", {"stem": d["parts"]["stem"]}), "must include block parts"),
        (lambda d: d["workload"].__setitem__("batch", True), "workload.batch must be int, got bool"),
        (lambda d: d["workload"].__setitem__("tokens", "197"), "workload.tokens must be int, got str"),
        (lambda d: d.__setitem__("format", "other"), "format must be 'vitlut.latency-table'"),
        (lambda d: d.__setitem__("bogus", 1), "bogus is not a known field"),
        (lambda d: d.pop("grid"), "grid is missing"),
        (_v2(lambda d: d["device"].__setitem__("kind", "tpu")), "device.kind must be 'cpu' or 'gpu'"),
        (_v2(lambda d: d["device"].__setitem__("match", [1])), "device.match must be an object, got list"),
        (_v2(lambda d: d["device"].pop("name")), "device.name is missing"),
        (_v2(lambda d: d["software"].__setitem__("torch", "2.13")), "software.torch is not a known field"),
        (_v2(lambda d: d["parts"]["mlp"].__setitem__("p90_ms", [[1.0]])), "parts.mlp.p90_ms has shape"),
        (_v2(lambda d: d["sweep"].__setitem__("shard", {"index": -1, "count": 2})), "sweep.shard.index must be >= 0"),
        (_v2(lambda d: d.__setitem__("calibration", calibration({"mlp": -1.0}))), "factors.mlp must be > 0"),
        (_v2(lambda d: d.__setitem__("calibration", calibration({"mlp": float("nan")}))), "calibration.factors.mlp"),
        (_v2(lambda d: d.__setitem__("calibration", calibration({"bogus": 1.0}))), "calibration.factors.bogus is not"),
        (_v2(lambda d: d.__setitem__("calibration", calibration({"block": 1.0}))), "the table has no part 'block'"),
        (_v2(lambda d: d.__setitem__("calibration", {**calibration(), "model_ms": None})), "calibration.model_ms"),
        (_v2(lambda d: d.__setitem__("validation", {"points": "x"})), "validation.points must be int, got str"),
        (
            _v2(lambda d: d.__setitem__("validation", {"models_calibrated": {"median_ape_pct": -1.0}})),
            "validation.models_calibrated.median_ape_pct must be >= 0",
        ),
    ],
)
def test_invalid_tables_are_refused_naming_the_field(mutate, message):
    doc = make_table()
    mutate(doc)
    with pytest.raises(TableFormatError, match=message):
        validate_table(doc)


def _fill(part: str, value: object):
    def apply(doc):
        cells = np.array(doc["parts"][part]["median_ms"], dtype=float)
        doc["parts"][part]["median_ms"] = np.full(cells.shape, value, dtype=object).tolist()

    return apply


def _mlp_cell(value: object, key: str = "median_ms"):
    """Cell [1, 2] of the mlp part's `key` (the medians copied where the key is absent) set to `value`."""

    def apply(doc):
        mlp = doc["parts"]["mlp"]
        mlp[key] = [row[:] for row in mlp.get(key) or mlp["median_ms"]]
        mlp[key][1][2] = value

    return apply


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _fill("attn_v", 1.7e308),
            r"parts\.attn_v\.median_ms must hold latencies of at most 1e\+07 ms; entry \[0, 0, 0\]",
        ),
        (
            _mlp_cell(1e308),
            r"parts\.mlp\.median_ms must hold latencies of at most 1e\+07 ms; entry \[1, 2\] is 1e\+308",
        ),
        (_mlp_cell(10**400), r"parts\.mlp\.median_ms must be a nested list of numbers"),
        (_mlp_cell("1.0"), r"parts\.mlp\.median_ms must hold numbers .*; entry \[1, 2\] is '1\.0', a str"),
        (_mlp_cell(True), r"parts\.mlp\.median_ms must hold numbers .*; entry \[1, 2\] is True, a bool"),
        (_mlp_cell("1.0", "p90_ms"), r"parts\.mlp\.p90_ms must hold numbers .*; entry \[1, 2\] is '1\.0', a str"),
        (lambda d: d["grid"].__setitem__("emb", [64, 128, 2**60]), r"grid\.emb must hold integers from 1 to 1048576"),
    ],
)
def test_cells_must_be_numbers_of_a_bounded_latency(mutate, message):
    doc = make_table()
    mutate(doc)
    with pytest.raises(TableFormatError, match=message):
        validate_table(doc)


def test_the_largest_latency_and_width_allowed_are_kept():
    doc = make_table()
    doc["parts"]["mlp"]["median_ms"][2][2] = MAX_LATENCY_MS
    doc["grid"]["mlp"][2] = MAX_AXIS_VALUE
    kept = validate_table(doc)
    assert kept["parts"]["mlp"]["median_ms"][2][2] == 1e7 and kept["grid"]["mlp"][2] == 2**20


def test_a_not_yet_measured_cell_is_null_or_nan_but_never_a_string():
    doc = make_table()
    doc["complete"] = False
    doc["parts"]["mlp"]["median_ms"][0][0] = None
    doc["parts"]["mlp"]["median_ms"][0][1] = float("nan")
    kept = validate_table(doc)
    assert np.isnan(part_median(kept, "mlp")[0, :2]).all() and np.isfinite(part_median(kept, "mlp")[0, 2])
    doc["parts"]["mlp"]["median_ms"][0][1] = "nan"  # numpy would read it as a missing cell
    with pytest.raises(TableFormatError, match=r"parts\.mlp\.median_ms must hold numbers .* 'nan', a str"):
        validate_table(doc)


def test_incomplete_tables_may_hold_missing_cells():
    doc = make_table()
    doc["complete"] = False
    doc["parts"]["mlp"]["median_ms"][0][0] = None
    kept = validate_table(doc)
    assert kept["parts"]["mlp"]["median_ms"][0][0] is None  # still to measure, not filled in
    assert np.isnan(part_median(kept, "mlp")[0, 0]) and np.isfinite(part_median(kept, "mlp")[1:]).all()
    doc["complete"] = True
    with pytest.raises(TableFormatError, match=r"parts\.mlp\.median_ms"):
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


def test_written_tables_are_readable_by_other_users_as_the_umask_allows(tmp_path):
    import os
    import stat

    from lut_server.atomic_file import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "t.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.json").stat().st_mode) == 0o644
