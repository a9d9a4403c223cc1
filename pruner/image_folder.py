"""ImageFolder data (`train/<class>/*`, `val/<class>/*`) for the `prune` command, with a sharded global batch.

torchvision's loader and transforms are used where torchvision imports; where it does not (a CPU-only torch build
cannot load the registry's torchvision), a small built-in loader reads the images with Pillow, resizes the short
side, centre-crops and normalises with ImageNet's mean and std. Batches are drawn from one permutation per epoch
seeded by (seed, epoch), so the global batch of an iteration is the same in one process and across N ranks (rank
r takes the r-th slice) and a resumed run draws exactly the batches the interrupted one would have.

An image that cannot be decoded is an error naming its file (`UnreadableImage`, a ValueError), not skipped: a
skipped image would silently change the batches, and the checkpoint keeps the run's progress while the file is
replaced. A class folder of the training split without images is refused, as torchvision's ImageFolder does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnreadableImage(ValueError):
    """An image file of the dataset that cannot be read or decoded."""


def _builtin_transform(image_size: int, channels: int) -> Callable[[Path], Tensor]:
    from PIL import Image

    mean = torch.tensor(IMAGENET_MEAN[:channels] if channels == 3 else (0.5,) * channels).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD[:channels] if channels == 3 else (0.5,) * channels).view(-1, 1, 1)

    def load(path: Path) -> Tensor:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L")
            w, h = image.size
            scale = image_size / min(w, h)
            image = image.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))))
            w, h = image.size
            left, top = (w - image_size) // 2, (h - image_size) // 2
            image = image.crop((left, top, left + image_size, top + image_size))
            array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).reshape(image_size, image_size, channels).permute(2, 0, 1)
        return (tensor - mean) / std

    return load


def image_transform(image_size: int, channels: int) -> tuple[Callable[[Path], Tensor], str]:
    """(path -> normalised CHW tensor, which loader it is)."""
    if channels == 3:
        try:
            from PIL import Image
            from torchvision import transforms

            pipeline = transforms.Compose(
                [
                    transforms.Resize(image_size),
                    transforms.CenterCrop(image_size),
                    transforms.ToTensor(),
                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                ]
            )

            def load(path: Path) -> Tensor:
                with Image.open(path) as image:
                    return pipeline(image.convert("RGB"))

            return load, "torchvision"
        except Exception:  # torchvision absent or not loadable with this torch build
            pass
    return _builtin_transform(image_size, channels), "built-in"


class ImageFolderSplit:
    """The images of one split (`root/<class>/<image>`), classes sorted by name, loaded on demand."""

    def __init__(self, root: Path, image_size: int, channels: int = 3, classes: list[str] | None = None):
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory (expected ImageFolder layout: <class>/<image>)")
        own_classes = classes is None
        self.classes = classes or sorted(d.name for d in root.iterdir() if d.is_dir())
        if not self.classes:
            raise ValueError(f"{root} has no class directories")
        self.samples: list[tuple[Path, int]] = []
        empty = []
        for label, name in enumerate(self.classes):
            folder = root / name
            found = folder.iterdir() if folder.is_dir() else ()  # a held-out split may lack a class
            images = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
            empty += [] if images else [name]
            self.samples += [(path, label) for path in images]
        if not self.samples:
            raise ValueError(f"{root} has no images")
        if own_classes and empty:  # the class list comes from these folders: an empty one is a mistake
            shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            raise ValueError(
                f"{root} has class folders without images ({shown}); remove them or add images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self.load, self.loader = image_transform(image_size, channels)

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> Tensor:
        path = self.samples[index][0]
        try:
            return self.load(path)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise UnreadableImage(
                f"cannot read image {path}: {exc}; replace the file (removing it changes the batches of a --resume)"
            ) from None

    def batch(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        images = torch.stack([self.image(i) for i in indices])
        labels = torch.tensor([self.samples[i][1] for i in indices], dtype=torch.long)
        return images, labels


def epoch_batches(
    size: int, global_batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1, start: int = 0
) -> Iterator[tuple[int, list[int]]]:
    """(iteration in the epoch, this rank's indices) of every full global batch from iteration `start` on."""
    if global_batch % world:
        raise ValueError(f"the global batch {global_batch} does not split evenly over {world} ranks")
    per_rank = global_batch // world
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    for it in range(start, size // global_batch):
        chunk = order[it * global_batch : (it + 1) * global_batch]
        yield it, chunk[rank * per_rank : (rank + 1) * per_rank]


def iterations_per_epoch(size: int, global_batch: int) -> int:
    count = size // global_batch
    if count == 0:
        raise ValueError(f"the training split has {size} images, fewer than one global batch of {global_batch}")
    return count
