"""GPU runners on a real GPU: CUDA graphs honoured in pipelines and owning what they replay; chained TensorRT
engines. Skipped without an NVIDIA GPU (none has been available to this project: docs/gpu.md)."""

from __future__ import annotations

import gc
import importlib.util

import numpy as np
import pytest
import torch

from lut_server.dims import BlockDims
from profiler.backends import create_backend
from profiler.workload import FUSED_ATTENTION, Workload, build_pipeline

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]
WORKLOAD = Workload(batch=8, tokens=50)


def test_cuda_graph_pipeline_replays_graphs_per_stage_and_keeps_its_resources() -> None:
    backend = create_backend("torch-cuda", "fp16", cuda_graphs=True)
    assert backend.stage_timing == "in-context-cuda-graph-per-stage"
    _, stages, inputs = build_pipeline(BlockDims(128, 2, 32, 32, 256), WORKLOAD, with_model_parts=False)
    run = backend.prepare_pipeline(stages, inputs)
    del stages, inputs
    gc.collect()
    torch.cuda.empty_cache()  # freed weights or inputs would now be reused or unmapped
    totals = np.asarray(run(5))
    assert totals.shape == (3,) and (totals > 0).all()
    assert len(run.resources[3]) == 3  # one graph per stage


def test_tf32_is_off_and_recorded_for_fp32() -> None:
    backend = create_backend("torch-cuda", "fp32")
    software = backend.environment()["software"]["match"]
    if "cuda_matmul_fp32_precision" in software:  # torch's fp32_precision API (torch 2.9 and later)
        assert software["cuda_matmul_fp32_precision"] == software["cudnn_conv_fp32_precision"] == "ieee"
    else:
        assert software["cuda_matmul_allow_tf32"] is False and software["cudnn_allow_tf32"] is False


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt not installed")
def test_tensorrt_chained_engines_time_each_stage_of_its_fused_attention_split(tmp_path) -> None:
    backend = create_backend("tensorrt", "fp16", engine_cache=str(tmp_path), optimization_level=1)
    assert backend.block_stages == FUSED_ATTENTION  # attn | mlp, as TensorRT tables are split
    names, stages, inputs = build_pipeline(
        BlockDims(128, 2, 32, 32, 256), WORKLOAD, with_model_parts=False, block_stages=backend.block_stages
    )
    assert names == ["attn", "mlp"]
    totals = np.asarray(backend.prepare_pipeline(stages, inputs)(5))
    assert totals.shape == (2,) and (totals > 0).all() and backend.engines_built == 2
