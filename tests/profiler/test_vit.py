import pytest
import torch

from lut_server.dims import BlockDims, BlockWidths, ModelDims
from profiler.vit import DEFAULT_ATTN_SCALE, Block, VisionTransformer, VitConfig, deit_dims
from profiler.workload import Workload, build_part, model_config_for_tokens


def reference_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Textbook attention written independently of Block's methods."""
    d = block.dims
    b, t, _ = x.shape
    h = torch.nn.functional.layer_norm(x, (d.emb,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    qk = h @ block.qk.weight.T + block.qk.bias
    q = qk[..., : d.heads * d.qk].reshape(b, t, d.heads, d.qk).transpose(1, 2)
    k = qk[..., d.heads * d.qk :].reshape(b, t, d.heads, d.qk).transpose(1, 2)
    v = (h @ block.v.weight.T + block.v.bias).reshape(b, t, d.heads, d.v).transpose(1, 2)
    attn = torch.softmax(q @ k.transpose(-1, -2) * DEFAULT_ATTN_SCALE, dim=-1)
    x = x + block.proj((attn @ v).transpose(1, 2).reshape(b, t, d.heads * d.v))
    return x + block.fc2(torch.nn.functional.gelu(block.fc1(block.norm2(x))))


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
    # the part modules wrap the same Block methods; run them on this block to check the composition
    h, probs = block.attention_scores(x)
    out = block.mlp_residual(block.attention_values(x, h, probs))
    torch.testing.assert_close(out, block(x))
    assert probs.shape == (2, 2, 10, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 10))
    for part in ("attn_qk", "attn_v", "mlp"):
        module, inputs = build_part(part, dims, workload)
        module(*inputs)  # each part runs on its own example inputs


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
