"""Small ViTs, data and a latency table covering them, shared by the pruner tests."""

from __future__ import annotations

import torch

from lut_server.dims import BlockWidths, ModelDims
from lut_server.latency_table import LatencyTable
from profiler.vit import VisionTransformer, VitConfig
from tests.table_factory import make_table

CONFIG = VitConfig(image_size=8, patch_size=4, in_chans=1, num_classes=3, distilled=True)
GRID = {"emb": [16, 32, 48, 64], "heads": [1, 2, 3, 4], "qk": [8, 16, 24], "v": [8, 16, 24], "mlp": [16, 32, 64, 96]}


def small_dims() -> ModelDims:
    """Non-uniform blocks with QK != V, all on the pruning lattice."""
    return ModelDims(64, (BlockWidths(4, 16, 24, 96), BlockWidths(3, 24, 16, 64)))


def small_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(small_dims(), CONFIG).to(dtype)
    with torch.no_grad():  # non-trivial norms and biases, so every weight kind carries gradient signal
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def batch(seed: int, n: int = 6, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, CONFIG.in_chans, CONFIG.image_size, CONFIG.image_size, generator=g, dtype=dtype)
    y = torch.randint(0, CONFIG.num_classes, (n,), generator=g)
    return x, y


def small_table_doc() -> dict:
    """The document of `small_table()`: profiled (nominally) for the small model's token count."""
    doc = make_table(GRID)
    doc["workload"]["tokens"] = CONFIG.tokens
    return doc


def small_table() -> LatencyTable:
    """A multilinear (FLOP-like) table over GRID, so interpolation is exact and deltas are known in closed form."""
    return LatencyTable(small_table_doc(), "small")


class CountingLatency:
    """Wraps a latency source and counts the queries the pruner makes."""

    def __init__(self, inner: LatencyTable):
        self.inner = inner
        self.calls: dict[str, int] = {"deltas": 0, "model_latency": 0, "block_latency": 0}

    @property
    def ranges(self):
        return self.inner.ranges

    def deltas(self, model, group_size=None):
        self.calls["deltas"] += 1
        return self.inner.deltas(model, group_size)

    def model_latency(self, model):
        self.calls["model_latency"] += 1
        return self.inner.model_latency(model)

    def block_latency(self, blocks):
        self.calls["block_latency"] += 1
        return self.inner.block_latency(blocks)
