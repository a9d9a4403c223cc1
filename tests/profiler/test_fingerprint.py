"""The device fingerprint tells machines apart field by field, from what /proc/cpuinfo and sysfs expose."""

from __future__ import annotations

import copy

from profiler.fingerprint import cache_sizes_kib, cpu_identity, fingerprint_mismatches

ZEN5_CPUINFO = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 26
model		: 2
model name	: AMD EPYC
stepping	: 1
flags		: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512_vnni avx512_bf16 avx_vnni

processor	: 1
vendor_id	: AuthenticAMD
cpu family	: 26
model		: 2
model name	: AMD EPYC
stepping	: 1
flags		: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512_vnni avx512_bf16 avx_vnni
"""

ZEN3_CPUINFO = ZEN5_CPUINFO.replace("cpu family\t: 26", "cpu family\t: 25").replace(
    " avx512f avx512bw avx512vl avx512dq avx512_vnni avx512_bf16 avx_vnni", ""
)


def make_cache_dir(root, sizes):
    for i, (level, kind, size) in enumerate(sizes):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    return root


def test_cpu_identity_reads_family_model_stepping_flags_and_caches(tmp_path):
    caches = make_cache_dir(
        tmp_path, [(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "1024K"), (3, "Unified", "32M")]
    )
    identity = cpu_identity(ZEN5_CPUINFO, caches)
    assert (identity["vendor"], identity["family"], identity["model"], identity["stepping"]) == (
        "AuthenticAMD",
        26,
        2,
        1,
    )
    assert identity["model_name"] == "AMD EPYC"
    assert identity["isa"]["avx512_bf16"] is True and identity["isa"]["amx_tile"] is False
    assert (identity["l1d_kib"], identity["l2_kib"], identity["l3_kib"]) == (48, 1024, 32768)
    assert cache_sizes_kib(tmp_path / "missing") == {}


def _doc(cpuinfo, caches, torch_version="2.13.0+cpu"):
    return {
        "device": {"name": "AMD EPYC", "kind": "cpu", "match": {"cpu": cpu_identity(cpuinfo, caches), "threads": 1}},
        "software": {"match": {"torch": torch_version}, "recorded": {"python": "3.11"}},
    }


def test_two_epyc_generations_differ_field_by_field(tmp_path):
    caches = make_cache_dir(tmp_path, [(2, "Unified", "1024K"), (3, "Unified", "32M")])
    table, here = _doc(ZEN3_CPUINFO, caches), _doc(ZEN5_CPUINFO, caches)
    mismatches = fingerprint_mismatches(table, here)
    fields = {line.split(":")[0] for line in mismatches}
    assert "device.match.cpu.family" in fields
    isa = "device.match.cpu.isa"
    assert {f"{isa}.avx512f", f"{isa}.avx512_bf16", f"{isa}.avx512_vnni"} <= fields
    assert "device.match.cpu.model_name" not in fields  # both say "AMD EPYC": the name alone cannot tell them apart
    assert "device.match.cpu.family: table 25, here 26" in mismatches


def test_one_flag_threads_or_software_version_is_named_and_recorded_facts_are_ignored(tmp_path):
    caches = make_cache_dir(tmp_path, [(3, "Unified", "32M")])
    table = _doc(ZEN5_CPUINFO, caches)
    assert fingerprint_mismatches(table, copy.deepcopy(table)) == []
    here = copy.deepcopy(table)
    here["device"]["match"]["cpu"]["isa"]["avx2"] = False
    here["device"]["match"]["threads"] = 2
    here["software"]["match"]["torch"] = "2.14.0"
    here["software"]["recorded"]["python"] = "3.12"
    assert fingerprint_mismatches(table, here) == [
        "device.match.cpu.isa.avx2: table True, here False",
        "device.match.threads: table 1, here 2",
        "software.match.torch: table '2.13.0+cpu', here '2.14.0'",
    ]


def test_a_table_without_a_fingerprint_cannot_say_which_machine_it_describes(tmp_path):
    here = _doc(ZEN5_CPUINFO, make_cache_dir(tmp_path, []))
    v1_table = {"device": {"name": "AMD EPYC", "kind": "cpu", "match": {}}, "software": {"match": {}}}
    (line,) = fingerprint_mismatches(v1_table, here)
    assert line.startswith("device: the table records no fingerprint")
