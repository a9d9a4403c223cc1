"""A generated ImageFolder dataset and a latency table file for the `prune` command's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lut_server.table_format import write_table
from tests.pruner.small_models import GRID
from tests.table_factory import make_table

IMAGE_SIZE = 16
PATCH_SIZE = 4
TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1
MODEL = "custom:emb=64,depth=2,heads=4,head_dim=16,mlp=96"
"""Inside the small table's grid (emb 16-64, heads 1-4, qk/v 8-24, mlp 16-96)."""


def make_image_folder(root: Path, classes: int = 3, train_per_class: int = 16, val_per_class: int = 4) -> Path:
    """Coloured noise images whose class sets the mean colour, so the task is learnable."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.zeros(3)
            base[c % 3] = 160
            for i in range(count):
                pixels = np.clip(base + rng.normal(0, 50, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def write_small_table(path: Path) -> Path:
    doc = make_table(GRID)
    doc["workload"]["tokens"] = TOKENS
    write_table(path, doc)
    return path
