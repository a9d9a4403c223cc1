"""Stage timing inside a running block: one elapsed total per stage, and stages that do more take longer."""

import numpy as np
import pytest

from lut_server.dims import BlockDims
from profiler.backends import create_backend
from profiler.timing import Protocol, measure
from profiler.workload import Workload, build_block, build_pipeline, model_config_for_tokens

WORKLOAD = Workload(batch=2, tokens=50, model=model_config_for_tokens(50))


@pytest.mark.parametrize("backend_name", ["torch-cpu", "onnxruntime"])
def test_pipeline_runner_times_each_stage_of_a_running_block(backend_name):
    options = {"provider": "cpu"} if backend_name == "onnxruntime" else {}  # the CPU on a GPU machine too
    backend = create_backend(backend_name, "fp32", 1, **options)
    assert backend.stage_timing == "in-context"
    light = BlockDims(emb=128, heads=2, qk=16, v=16, mlp=16)
    heavy = BlockDims(emb=128, heads=2, qk=16, v=16, mlp=2048)
    results = {}
    for label, dims in (("light", light), ("heavy", heavy)):
        names, stages, inputs = build_pipeline(dims, WORKLOAD, with_model_parts=True)
        assert names == ["stem", "attn_qk", "attn_v", "mlp", "head"]
        run = backend.prepare_pipeline(stages, inputs)
        totals = run(3)
        assert totals.shape == (5,) and (totals > 0).all()
        results[label] = measure(run, Protocol.quick())
    light_m, heavy_m = results["light"], results["heavy"]
    assert len(heavy_m.stage_median_ms) == 5
    # Medians of totals and of stages agree on a quiet machine; a burst of load on a shared one can split them, so
    # the heavy block is re-measured (at most twice) before the relation is judged.
    for _ in range(2):
        if heavy_m.median_ms == pytest.approx(sum(heavy_m.stage_median_ms), rel=0.25):
            break
        heavy_m = measure(backend.prepare_pipeline(*build_pipeline(heavy, WORKLOAD, True)[1:]), Protocol.quick())
    assert heavy_m.median_ms == pytest.approx(sum(heavy_m.stage_median_ms), rel=0.25)
    # a 128x wider MLP (~100x its FLOPs) shows in the mlp stage, not in the attention stages: 2.5x, as a stage's
    # fixed cost can be most of the narrow one's (3.2x on one H100 host's Xeon); a wider one leaves the next
    # stage's weights out of the caches, which slows the attention stages instead
    assert heavy_m.stage_median_ms[3] > 2.5 * light_m.stage_median_ms[3]
    assert heavy_m.stage_median_ms[1] < 3 * light_m.stage_median_ms[1]


def test_a_single_module_runner_returns_one_total():
    backend = create_backend("torch-cpu", "fp32", 1)
    run = backend.prepare(*build_block(BlockDims(64, 2, 8, 8, 64), Workload(1, 17)))
    totals = np.asarray(run(2))
    assert totals.shape == (1,) and totals[0] > 0
