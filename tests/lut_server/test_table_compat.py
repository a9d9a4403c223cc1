"""One compatibility key: what resume, merge and check compare, named field by field."""

from __future__ import annotations

import copy

from lut_server.table_compat import compatibility_key, compatibility_mismatches
from lut_server.table_format import validate_table
from tests.table_factory import make_table, make_table_v2


def test_identical_tables_and_recorded_only_differences_are_compatible():
    a = make_table_v2()
    b = copy.deepcopy(a)
    b["device"]["recorded"]["os"] = "Linux 7"
    b["software"]["recorded"]["numpy"] = "9.9"
    b["created"] = "2027-01-01T00:00:00Z"
    b["validation"] = {"median_ape_pct": 9.0}
    assert compatibility_mismatches(a, b) == []
    assert compatibility_key(a) == compatibility_key(b)


def test_a_differing_nested_fingerprint_field_is_named_with_both_values():
    a = make_table_v2()
    b = copy.deepcopy(a)
    b["device"]["match"]["cpu"]["isa"]["avx512_bf16"] = False
    assert compatibility_mismatches(a, b) == ["device.match.cpu.isa.avx512_bf16: table True, here False"]


def test_every_differing_field_is_listed_including_absent_ones():
    a = make_table_v2()
    b = copy.deepcopy(a)
    del b["device"]["match"]["cpu"]["l3_kib"]
    b["software"]["match"]["torch"] = "2.14.0"
    b["workload"]["batch"] = 2
    b["grid"]["mlp"] = [64, 256]
    b["sweep"]["layout"] = "in-context-parts/v1"
    found = compatibility_mismatches(a, b, labels=("shard0.json", "shard1.json"))
    assert found == [
        "device.match.cpu.l3_kib: shard0.json 32768, shard1.json absent",
        "grid.mlp: shard0.json [64, 256, 512], shard1.json [64, 256]",
        "software.match.torch: shard0.json '2.13.0+cpu', shard1.json '2.14.0'",
        "sweep.layout: shard0.json 'in-context-pairs/v2', shard1.json 'in-context-parts/v1'",
        "workload.batch: shard0.json 1, shard1.json 2",
    ]


def test_fields_only_the_second_document_has_are_ignored_when_asked():
    a = make_table_v2()
    b = copy.deepcopy(a)
    b["software"]["match"]["onnxruntime"] = "1.31.1"  # a partial view of this machine that says more
    b["device"]["match"]["cpu"]["isa"]["avx512_bf16"] = False
    del b["device"]["match"]["cpu"]["l3_kib"]
    found = compatibility_mismatches(a, b, fields_of_a_only=True)
    assert found == [
        "device.match.cpu.isa.avx512_bf16: table True, here False",
        "device.match.cpu.l3_kib: table 32768, here absent",
    ]
    assert "software.match.onnxruntime: table absent, here '1.31.1'" in compatibility_mismatches(a, b)


def test_a_flag_is_not_equal_to_the_number_one():
    a = make_table_v2()
    b = copy.deepcopy(a)
    b["device"]["match"]["cpu"]["isa"]["avx2"] = 1
    assert compatibility_mismatches(a, b) == ["device.match.cpu.isa.avx2: table True, here 1"]


def test_a_version_1_table_differs_from_a_fingerprinted_one_in_its_missing_fingerprint():
    old = validate_table(make_table())
    new = make_table_v2(device={**make_table_v2()["device"], "name": old["device"]["name"]})
    found = compatibility_mismatches(old, new)
    assert "device.match.threads: table absent, here 1" in found
    assert any(m.startswith("device.match.cpu:") for m in found)
    assert any(m.startswith("software.match.torch:") for m in found)
