"""Sweep runs stack two blocks of one EMB and record each block's own stages."""

import json
from collections import Counter

from profiler.backends import create_backend
from profiler.cli import main
from profiler.grids import DEFAULT_PARTS, PRESETS, GridSpec
from profiler.sweep import PipelineRun, Sweep, check_layout, mlp_index, pair_units, plan_combos
from profiler.timing import Protocol
from profiler.workload import Workload, model_config_for_tokens


def test_units_pair_within_one_pass_and_emb_and_a_lone_unit_gets_a_context_companion():
    pool = [(e, h, x) for e in range(2) for h in range(2) for x in range(2)]
    units = [(0, (0, 0, 0)), (0, (1, 0, 0)), (1, (0, 0, 0)), (0, (0, 1, 1)), (0, (1, 1, 0)), (0, (0, 0, 1))]
    runs = pair_units(units, pool)
    assert runs[:3] == [
        PipelineRun(0, ((0, 0, 0), (0, 1, 1))),
        PipelineRun(0, ((1, 0, 0), (1, 1, 0))),
        PipelineRun(0, ((0, 0, 1),), companion=(0, 0, 0)),  # odd one out of pass 0, emb 0
    ]
    assert runs[3] == PipelineRun(1, ((0, 0, 0),), companion=(0, 0, 1))  # never paired across passes
    recorded = Counter((r.pass_index, c) for r in runs for c in r.combos)
    assert recorded == Counter(units)  # every unit recorded exactly once; companions are not recorded
    assert all(len({c[0] for c in r.stack()}) == 1 for r in runs)


def test_each_record_holds_its_own_blocks_stages(tmp_path):
    # per emb: 2 heads x 2 qk = 4 combos -> 2 pairs; mlp cycles 16/2048, so every pair has a narrow and a wide MLP
    spec = GridSpec({"emb": [64], "heads": [1, 2], "qk": [8, 16], "v": [8, 16], "mlp": [16, 2048]}, DEFAULT_PARTS)
    workload = Workload(2, 17, model_config_for_tokens(17))
    protocol = Protocol.quick()
    doc = Sweep(tmp_path / "t.json", create_backend("torch-cpu", "fp32", 1), workload, spec, protocol).run(False)
    records = doc["sweep"]["records"]
    assert len(records) == 4 * protocol.passes and doc["complete"]
    assert all(len(r["with"]) == 1 and r["with"][0][0] == r["combo"][0] for r in records)
    by_combo = {(r["pass"], tuple(r["combo"])): r for r in records}
    for r in records:
        partner = by_combo[(r["pass"], tuple(r["with"][0]))]
        assert partner["with"] == [r["combo"]]  # the pair is symmetric: both recorded from one run
        assert partner["median_ms"]["stem"] == r["median_ms"]["stem"]
        if r["dims"]["mlp"] == 2048 and partner["dims"]["mlp"] == 16:
            assert r["median_ms"]["mlp"] > 5 * partner["median_ms"]["mlp"]  # 128x the MLP FLOPs
    references = len(doc["sweep"]["reference"]["series"])
    assert doc["sweep"]["measurements"] == len(records) // 2 + references  # one measurement times two records


def test_passes_given_on_the_command_line_are_the_protocol_the_table_records(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"grid": {"emb": [32], "heads": [1, 2], "qk": [8, 16], "v": [8, 16], "mlp": [32]}}))
    out = tmp_path / "t.json"
    args = ["profile", "--grid", str(grid), "--quick", "--passes", "2", "--tokens", "17", "--out", str(out)]
    assert main([*args, "--no-model-parts", "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert doc["protocol"]["passes"] == 2
    per_pass = Counter(r["pass"] for r in doc["sweep"]["records"])
    assert per_pass[0] == per_pass[1] == 4  # a third pass only where the two disagree by over max_pass_gap


def test_the_gpu_preset_puts_qk_and_v_on_the_pruning_lattice_and_costs_its_runs_in_emb_heads_qk():
    spec = PRESETS["gpu"]
    check_layout(spec)
    assert spec.grid["qk"] == spec.grid["v"] == [8, 16, 24, 32, 40, 48, 56, 64]
    assert len(plan_combos(spec)) == 13 * 8 * 8  # mlp's 49 values ride on an emb's 64 runs
    cells = {(c[0], mlp_index(spec, c)) for c in plan_combos(spec)}
    assert len(cells) == len(spec.grid["emb"]) * len(spec.grid["mlp"])  # every (emb, mlp) cell gets a run


def test_validation_times_a_block_in_the_context_its_table_was_swept_in():
    import torch

    from lut_server.dims import BlockDims
    from profiler.validate import _per_block, block_stack
    from profiler.workload import build_block

    assert block_stack({"sweep": {"layout": "in-context-pairs/v2"}}) == 2
    assert block_stack({"sweep": {"layout": "in-context-parts/v1"}}) == 1
    assert block_stack({"sweep": None}) == 1
    dims = BlockDims(32, 2, 8, 8, 64)
    stack, (x,) = build_block(dims, Workload(2, 5), stack=2)
    assert len(stack) == 2 and stack[0].qk.weight.data_ptr() != stack[1].qk.weight.data_ptr()
    with torch.inference_mode():
        assert torch.equal(stack(x), stack[1](stack[0](x)))
    assert _per_block(lambda iterations: 10.0 * iterations, 2)(3) == 15.0
