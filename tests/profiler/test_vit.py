import pytest
import torch
import torch.nn.functional as F

from lut_server.dims import BlockDims, BlockWidths, ModelDims
from profiler.vit import DEFAULT_ATTN_SCALE, Block, VisionTransformer, VitConfig, deit_dims
from profiler.workload import MlpStage, ScoresStage, ValuesStage, Workload, build_part, model_config_for_tokens


def textbook_scores(block: Block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """norm1 and softmax(QKᵀ·scale), written independently of Block's methods."""
    d = block.dims
    b, t, _ = x.shape
    h = F.layer_norm(x, (d.emb,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    qk = h @ block.qk.weight.T + block.qk.bias
    q = qk[..., : d.heads * d.qk].reshape(b, t, d.heads, d.qk).transpose(1, 2)
    k = qk[..., d.heads * d.qk :].reshape(b, t, d.heads, d.qk).transpose(1, 2)
    return h, torch.softmax(q @ k.transpose(-1, -2) * DEFAULT_ATTN_SCALE, dim=-1)


def textbook_values(block: Block, x: torch.Tensor, h: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    d = block.dims
    b, t, _ = x.shape
    v = (h @ block.v.weight.T + block.v.bias).reshape(b, t, d.heads, d.v).transpose(1, 2)
    mixed = (probs @ v).transpose(1, 2).reshape(b, t, d.heads * d.v)
    return x + mixed @ block.proj.weight.T + block.proj.bias


def textbook_mlp(block: Block, x: torch.Tensor) -> torch.Tensor:
    h = F.layer_norm(x, (block.dims.emb,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
    return x + F.gelu(h @ block.fc1.weight.T + block.fc1.bias) @ block.fc2.weight.T + block.fc2.bias


def reference_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Textbook attention and MLP written independently of Block's methods."""
    h, probs = textbook_scores(block, x)
    return textbook_mlp(block, textbook_values(block, x, h, probs))


def test_block_with_qk_different_from_v_matches_textbook_attention():
    torch.manual_seed(0)
    block = Block(BlockDims(emb=48, heads=3, qk=8, v=24, mlp=40)).eval()
    x = torch.randn(2, 17, 48)
    torch.testing.assert_close(block(x), reference_block(block, x), rtol=1e-5, atol=1e-5)
    assert block.qk.out_features == 2 * 3 * 8 and block.v.out_features == 3 * 24 and block.proj.in_features == 72


def test_attention_scale_is_fixed_by_the_model_not_the_pruned_width():
    assert Block(BlockDims(64, 2, 16, 32, 64)).attn_scale == DEFAULT_ATTN_SCALE == 64**-0.5


def test_timed_parts_compose_to_the_block():
    torch.manual_seed(1)
    workload = Workload(batch=2, tokens=10)
    dims = {"emb": 32, "heads": 2, "qk": 8, "v": 16, "mlp": 48}
    block, (x,) = build_part("block", dims, workload)
    # the three part modules, wrapped around this block and run in order, give the whole block's output
    with torch.no_grad():
        h, probs = ScoresStage(block)(x)
        (after_attention,) = ValuesStage(block)(x, h, probs)
        (out,) = MlpStage(block)(after_attention)
        torch.testing.assert_close(out, block(x), rtol=0, atol=0)
        torch.testing.assert_close(out, reference_block(block, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 10))


def test_each_timed_part_computes_its_piece_of_the_block_with_only_its_own_widths():
    workload = Workload(batch=2, tokens=10)
    dims = {"emb": 32, "heads": 2, "qk": 8, "v": 16, "mlp": 48}
    with torch.no_grad():
        scores, (x,) = build_part("attn_qk", dims, workload)
        assert scores.block.dims == BlockDims(32, 2, 8, 1, 1)  # widths the part does not time allocate nothing
        for got, want in zip(scores(x), textbook_scores(scores.block, x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        values, (x, h, probs) = build_part("attn_v", dims, workload)
        assert values.block.dims == BlockDims(32, 2, 1, 16, 1)
        assert h.shape == (2, 10, 32) and probs.shape == (2, 2, 10, 10)
        torch.testing.assert_close(values(x, h, probs)[0], textbook_values(values.block, x, h, probs))
        mlp, (x,) = build_part("mlp", dims, workload)
        assert mlp.block.dims == BlockDims(32, 1, 1, 1, 48)
        torch.testing.assert_close(mlp(x)[0], textbook_mlp(mlp.block, x))


def test_model_with_per_block_dims_and_distillation_token():
    dims = ModelDims(32, (BlockWidths(2, 8, 16, 64), BlockWidths(1, 16, 8, 32), BlockWidths(4, 8, 8, 16)))
    config = VitConfig(image_size=8, patch_size=2, in_chans=1, num_classes=10, distilled=True)
    model = VisionTransformer(dims, config).eval()
    images = torch.randn(3, 1, 8, 8)
    cls_logits, dist_logits = model.forward_both(images)
    assert cls_logits.shape == dist_logits.shape == (3, 10)
    torch.testing.assert_close(model(images), (cls_logits + dist_logits) / 2)
    assert model.stem.pos_embed.shape == (1, 16 + 2, 32)
    assert [b.dims.heads for b in model.blocks] == [2, 1, 4]


def test_deit_base_dims_and_parameter_count():
    model = VisionTransformer(deit_dims())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(86.6e6, rel=0.01)  # DeiT-B: 86.6M


def test_token_count_determines_the_patch_grid():
    assert model_config_for_tokens(197).image_size == 224
    cfg = model_config_for_tokens(198)
    assert cfg.distilled and cfg.tokens == 198
    assert model_config_for_tokens(17, patch_size=2, in_chans=1, num_classes=10).image_size == 8
    assert model_config_for_tokens(50).image_size == 7 * 16
    assert model_config_for_tokens(52) is None  # neither 51 nor 50 is a square
