"""scikit-learn's 8×8 digits as a real, offline image-classification task for the demo, and its training loop.

1,797 grey 8×8 images of 10 digits; a stratified split holds out 20% for evaluation. The demo ViT sees 2×2 patches
(16 patches + a class token = 17 tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lut_server.dims import ModelDims
from profiler.vit import VisionTransformer, VitConfig

DIGITS_CONFIG = VitConfig(image_size=8, patch_size=2, in_chans=1, num_classes=10)
DEMO_DIMS = ModelDims.uniform(emb=128, depth=4, heads=4, qk=32, v=32, mlp=512)


@dataclass(frozen=True)
class DigitsSplit:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """Images scaled to [0, 1] then standardised with the training set's mean and std; a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images.astype(np.float32) / 16.0)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, data.target, test_size=test_fraction, random_state=seed, stratify=data.target
    )
    mean, std = float(x_tr.mean()), float(x_tr.std())
    return DigitsSplit(
        torch.from_numpy((x_tr - mean) / std),
        torch.from_numpy(y_tr).long(),
        torch.from_numpy((x_te - mean) / std),
        torch.from_numpy(y_te).long(),
    )


def batches(x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """One shuffled epoch without augmentation (one-pixel shifts of an 8×8 digit cost more accuracy than they gave)."""
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent."""
    was_training = model.training
    model.eval()
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    model.train(was_training)
    return 100.0 * correct / len(x)


def new_demo_model(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(DEMO_DIMS, DIGITS_CONFIG)


def train(
    model: nn.Module,
    split: DigitsSplit,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    after_backward: Callable[[int], None] | None = None,
    weight_decay: float = 0.05,
    label_smoothing: float = 0.1,
) -> list[float]:
    """AdamW with a one-cycle schedule; `after_backward(iteration)` runs between backward and the optimizer step."""
    loss_fn = loss_fn or (lambda m, x, y: nn.functional.cross_entropy(m(x), y, label_smoothing=label_smoothing))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(split.train_x) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.1
    )
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    iteration = 0
    model.train()
    for _ in range(epochs):
        for x, y in batches(split.train_x, split.train_y, batch_size, generator):
            loss = loss_fn(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward(iteration)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            iteration += 1
    return losses
