"""Engine cache keys change with exactly what changes an engine, and cached engines are written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from lut_server.dims import BlockDims
from profiler.engine_cache import EngineCache, cache_key, default_cache_dir, graph_signature
from profiler.onnx_export import export_onnx
from profiler.workload import Workload, build_block, build_part

BUILD = {"onnx_precision": "fp16", "prune_2_4": False, "set_flags": [], "clear_flags": []}
VERSIONS = {"tensorrt": "10.13.0", "gpu": "NVIDIA H100", "compute_capability": [9, 0]}


def _key(dims: BlockDims, build: dict = BUILD, versions: dict = VERSIONS, workload: Workload | None = None) -> str:
    module, inputs = build_block(dims, workload or Workload(batch=2, tokens=17))
    return cache_key(graph_signature(export_onnx(module, inputs).model), build, versions)


def test_same_dims_give_the_same_key_whatever_the_weights() -> None:
    dims = BlockDims(64, 2, 16, 8, 128)
    assert _key(dims) == _key(dims)  # two builds draw different random weights


@pytest.mark.parametrize(
    "other",
    [
        BlockDims(64, 2, 8, 16, 128),
        BlockDims(64, 2, 16, 8, 144),
        BlockDims(64, 4, 16, 8, 128),
        BlockDims(80, 2, 16, 8, 128),
    ],
)
def test_every_dimension_is_in_the_key(other: BlockDims) -> None:
    assert _key(other) != _key(BlockDims(64, 2, 16, 8, 128))


def test_workload_precision_sparsity_and_versions_are_in_the_key() -> None:
    dims = BlockDims(64, 2, 16, 8, 128)
    base = _key(dims)
    assert _key(dims, workload=Workload(batch=4, tokens=17)) != base
    assert _key(dims, workload=Workload(batch=2, tokens=50)) != base
    assert _key(dims, build={**BUILD, "onnx_precision": "fp32"}) != base
    assert _key(dims, build={**BUILD, "prune_2_4": True, "set_flags": ["SPARSE_WEIGHTS"]}) != base
    assert _key(dims, versions={**VERSIONS, "tensorrt": "10.13.1"}) != base
    assert _key(dims, versions={**VERSIONS, "gpu": "NVIDIA A100"}) != base


def test_parts_with_equal_shapes_but_different_computation_do_not_collide() -> None:
    dims = {"emb": 64, "heads": 2, "qk": 16, "v": 16, "mlp": 64}
    keys = {
        cache_key(graph_signature(export_onnx(*build_part(p, dims, Workload(1, 9))).model), BUILD, VERSIONS)
        for p in ("attn_qk", "attn_v", "mlp")
    }
    assert len(keys) == 3


@pytest.mark.parametrize(("first", "second"), [((2, 24), (6, 8)), ((1, 48), (3, 16)), ((4, 8), (2, 16))])
def test_attention_scores_with_equal_weight_shapes_but_other_heads_do_not_collide(first, second) -> None:
    """(2·heads·qk, emb) is the Q/K weight's shape: heads=2, qk=24 and heads=6, qk=8 share every shape."""
    keys = set()
    for heads, qk in (first, second):
        stage, inputs = build_part("attn_qk", {"emb": 64, "heads": heads, "qk": qk}, Workload(2, 9))
        keys.add(cache_key(graph_signature(export_onnx(stage, inputs).model), BUILD, VERSIONS))
    assert len(keys) == 2


def test_put_get_roundtrip_and_bad_keys(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    key = _key(BlockDims(32, 1, 8, 8, 32))
    assert cache.get(key) is None
    path = cache.put(key, b"\x01engine-bytes")
    assert cache.get(key) == b"\x01engine-bytes"
    assert path.parent == tmp_path / "engines" and path.name == f"{key}.engine"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    for bad in ("../../etc/passwd", "ABC", key[:-1]):
        with pytest.raises(ValueError, match="64 lower-case hex"):
            cache.get(bad)
    with pytest.raises(ValueError, match="empty"):
        cache.put(key, b"")


def test_default_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VITLUT_ENGINE_CACHE", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("VITLUT_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache" / "vitlut" / "tensorrt"
