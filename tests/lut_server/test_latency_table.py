import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator

from lut_server.dims import AXES, BlockDims, BlockWidths, ModelDims
from lut_server.latency_table import LatencyTable, QueryError, monotone_fit
from tests.table_factory import SMALL_GRID, make_table, multilinear_parts

FUNCS = multilinear_parts(SMALL_GRID)


def true_block(b: BlockDims) -> float:
    return FUNCS["attn_qk"](b.emb, b.heads, b.qk) + FUNCS["attn_v"](b.emb, b.heads, b.v) + FUNCS["mlp"](b.emb, b.mlp)


def true_model(m: ModelDims) -> float:
    return sum(true_block(b) for b in m.block_dims()) + FUNCS["stem"](m.emb) + FUNCS["head"](m.emb)


def random_blocks(n: int, seed: int = 0) -> list[BlockDims]:
    rng = np.random.default_rng(seed)
    return [
        BlockDims(**{a: int(rng.integers(min(SMALL_GRID[a]), max(SMALL_GRID[a]) + 1)) for a in AXES}) for _ in range(n)
    ]


def test_multilinear_latency_is_reproduced_exactly_off_grid():
    table = LatencyTable(make_table())
    blocks = random_blocks(500)
    expected = np.array([true_block(b) for b in blocks])
    np.testing.assert_allclose(table.block_latency(blocks), expected, rtol=1e-12)


def test_vectorised_array_queries_equal_per_config_scipy_calls():
    doc = make_table()
    table = LatencyTable(doc)
    blocks = random_blocks(50, seed=3)
    array = np.array([[getattr(b, a) for a in AXES] for b in blocks])
    per_config = []
    for b in blocks:
        total = 0.0
        for part, axes in (
            ("attn_qk", ("emb", "heads", "qk")),
            ("attn_v", ("emb", "heads", "v")),
            ("mlp", ("emb", "mlp")),
        ):
            interp = RegularGridInterpolator(
                tuple(SMALL_GRID[a] for a in axes), np.array(doc["parts"][part]["median_ms"])
            )
            total += float(interp([getattr(b, a) for a in axes])[0])
        per_config.append(total)
    np.testing.assert_allclose(table.block_latency(array), per_config, rtol=1e-12)


def test_model_latency_adds_stem_and_head():
    table = LatencyTable(make_table())
    model = ModelDims(100, (BlockWidths(2, 10, 20, 300), BlockWidths(3, 30, 9, 100)))
    blocks = sum(true_block(b) for b in model.block_dims())
    assert table.model_latency(model) == pytest.approx(blocks + FUNCS["stem"](100) + FUNCS["head"](100), rel=1e-12)


@pytest.mark.parametrize(("axis", "value"), [("emb", 63), ("heads", 5), ("qk", 33), ("mlp", 1000)])
def test_out_of_range_queries_name_the_axis_and_range(axis, value):
    table = LatencyTable(make_table())
    dims = {"emb": 128, "heads": 2, "qk": 16, "v": 16, "mlp": 256, axis: value}
    lo, hi = min(SMALL_GRID[axis]), max(SMALL_GRID[axis])
    with pytest.raises(QueryError, match=rf"blocks\[1\]\.{axis} = {value} is outside .* {axis}: \[{lo}, {hi}\]") as err:
        table.block_latency([BlockDims(128, 2, 16, 16, 256), BlockDims(**dims)])
    assert err.value.field == f"blocks[1].{axis}"


def test_a_model_emb_out_of_range_is_named_emb():
    table = LatencyTable(make_table())
    model = ModelDims(4096, (BlockWidths(2, 16, 16, 256),) * 3)
    for query in (table.model_latency, table.deltas, table.raw_part_sums):
        with pytest.raises(QueryError, match=r"^emb = 4096 is outside the table's range for emb: \[64, 256\]$") as err:
            query(model)
        assert err.value.field == "emb"


def test_group_deltas_are_exact_differences_of_model_latency():
    table = LatencyTable(make_table())
    model = ModelDims(128, (BlockWidths(4, 32, 16, 512), BlockWidths(2, 24, 32, 300), BlockWidths(1, 16, 8, 64)))
    group_size = {"emb": 16, "heads": 1, "qk": 8, "v": 8, "mlp": 16}
    d = table.deltas(model, group_size)
    base = table.model_latency(model)
    assert d.total_ms == pytest.approx(base, rel=1e-12)
    for i, block in enumerate(model.blocks):
        for axis in ("heads", "qk", "v", "mlp"):
            reduced = getattr(block, axis) - group_size[axis]
            if reduced < 1:
                assert d.blocks[i][axis] is None  # cannot remove the last unit
                continue
            changed = list(model.blocks)
            changed[i] = BlockWidths(**{**block.as_dict(), axis: reduced})
            smaller = ModelDims(model.emb, tuple(changed))
            # below the grid the table extrapolates linearly, which is exact for this multilinear table
            expected = true_model(model) - true_model(smaller)
            assert d.blocks[i][axis] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    smaller_emb = ModelDims(model.emb - 16, model.blocks)
    assert d.emb == pytest.approx(base - table.model_latency(smaller_emb), rel=1e-9)


def test_deltas_below_the_table_range_extrapolate_linearly():
    table = LatencyTable(make_table())
    model = ModelDims(128, (BlockWidths(2, 8, 16, 256),))  # qk 8 - group size 4 = 4 is below the grid's 8
    d = table.deltas(model, {"qk": 4})
    expected = FUNCS["attn_qk"](128, 2, 8) - FUNCS["attn_qk"](128, 2, 4)  # the function is linear in qk
    assert d.blocks[0]["qk"] == pytest.approx(expected, rel=1e-9)


def test_bad_group_size_is_refused():
    table = LatencyTable(make_table())
    with pytest.raises(QueryError, match=r"group_size\.qk") as err:
        table.deltas(ModelDims(128, (BlockWidths(2, 16, 16, 256),)), {"qk": 0})
    assert err.value.field == "group_size.qk"


def test_step_is_a_deprecated_name_for_group_size():
    table = LatencyTable(make_table())
    model = ModelDims(128, (BlockWidths(2, 16, 16, 256),))
    with pytest.warns(DeprecationWarning, match="group_size"):
        old = table.deltas(model, step={"qk": 4})
    assert old == table.deltas(model, group_size={"qk": 4}) != table.deltas(model)
    with pytest.raises(TypeError, match="both"):
        table.deltas(model, {"qk": 4}, step={"qk": 4})


def test_served_latency_never_decreases_with_width():
    rng = np.random.default_rng(0)
    values = np.add.outer(np.arange(6.0), np.arange(5.0))[:, :, None] + np.arange(4.0) + rng.normal(0, 0.8, (6, 5, 4))
    fitted = monotone_fit(values)
    for axis in range(3):
        assert (np.diff(fitted, axis=axis) >= 0).all()
    already = np.add.outer(np.arange(3.0), np.arange(4.0))
    np.testing.assert_array_equal(monotone_fit(already), already)  # monotone data is left alone


def test_one_slow_outlier_is_pooled_not_copied_into_every_wider_cell():
    values = np.array([1.0, 2.0, 9.0, 4.0, 5.0, 6.0])
    fitted = monotone_fit(values)
    np.testing.assert_allclose(fitted, [1.0, 2.0, 6.0, 6.0, 6.0, 6.0])
    assert fitted[-1] == 6.0  # a running maximum would have served 9.0 for every width above the outlier


def test_incomplete_table_is_not_served():
    doc = make_table()
    doc["complete"] = False
    with pytest.raises(QueryError, match="incomplete"):
        LatencyTable(doc)


def test_singleton_axes_are_supported():
    grid = {**SMALL_GRID, "heads": [4]}
    table = LatencyTable(make_table(grid, multilinear_parts(grid)))
    assert table.ranges["heads"] == (4, 4)
    b = BlockDims(100, 4, 20, 10, 100)
    assert table.block_latency([b])[0] == pytest.approx(true_block(b), rel=1e-12)
    with pytest.raises(QueryError, match="heads"):
        table.block_latency([BlockDims(100, 3, 20, 10, 100)])
