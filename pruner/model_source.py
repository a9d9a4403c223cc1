"""What `--model` names: a `save_compact` directory, a DeiT configuration with random weights, or a timm model.

Named configurations (random weights, for smoke runs and cost measurements): `deit-tiny`, `deit-small`,
`deit-base` (patch 16, DeiT's widths) and `custom:emb=E,depth=D,heads=H,head_dim=Q,mlp=M`. Any other name is
created with timm when timm imports, and converted with `from_timm`. A timm model comes with its trained weights
unless asked otherwise: pruning a randomly initialised DeiT-B is never what "prune deit_base_patch16_224" means.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lut_server.dims import ModelDims
from profiler.vit import VisionTransformer, VitConfig, deit_dims
from pruner.checkpoint import MANIFEST, load_compact

DEIT_WIDTHS: dict[str, tuple[int, int]] = {"deit-tiny": (192, 3), "deit-small": (384, 6), "deit-base": (768, 12)}
"""name -> (embedding width, heads); all have 12 blocks, 64-wide heads and MLP ratio 4."""
TIMM_NAMES: dict[str, str] = {
    "deit-tiny": "deit_tiny_patch16_224",
    "deit-small": "deit_small_patch16_224",
    "deit-base": "deit_base_patch16_224",
}
"""The timm models with DeiT's trained weights at the widths of the named random-weight configurations."""


def _custom_dims(spec: str) -> ModelDims:
    fields = dict(item.split("=", 1) for item in spec.split(",") if item)
    need = ("emb", "depth", "heads", "head_dim", "mlp")
    missing = [k for k in need if k not in fields]
    if missing:
        raise ValueError(f"custom model needs {', '.join(need)}; missing {', '.join(missing)}")
    e, d, h, q, m = (int(fields[k]) for k in need)
    return ModelDims.uniform(emb=e, depth=d, heads=h, qk=q, v=q, mlp=m)


def build_model(
    name: str,
    num_classes: int,
    image_size: int = 224,
    patch_size: int = 16,
    in_chans: int = 3,
    seed: int = 0,
    pretrained: bool | None = None,
) -> VisionTransformer:
    """The model `name` refers to (see the module docstring), in train mode. `pretrained`: None takes a timm
    model's trained weights; True is refused for a name whose weights are not timm's."""
    path = Path(name)
    is_compact = (path / MANIFEST).is_file()
    if pretrained and (is_compact or name in DEIT_WIDTHS or name.startswith("custom:")):
        hint = f"; for DeiT's trained weights use the timm name {TIMM_NAMES[name]}" if name in TIMM_NAMES else ""
        raise ValueError(f"--pretrained applies to timm model names; {name!r} brings its own weights{hint}")
    if is_compact:
        model = load_compact(path)
        if model.config.num_classes != num_classes:
            raise ValueError(f"{name} classifies {model.config.num_classes} classes, the data has {num_classes}")
        return model.train()
    config = VitConfig(image_size=image_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes)
    torch.manual_seed(seed)
    if name in DEIT_WIDTHS:
        emb, heads = DEIT_WIDTHS[name]
        return VisionTransformer(deit_dims(emb, 12, heads), config).train()
    if name.startswith("custom:"):
        return VisionTransformer(_custom_dims(name.removeprefix("custom:")), config).train()
    try:
        import timm
    except Exception as exc:
        raise ValueError(
            f"--model {name!r} is neither a save_compact directory nor one of {sorted(DEIT_WIDTHS)} / custom:..., "
            f"and timm cannot be imported here ({type(exc).__name__}: {exc})"
        ) from None
    from pruner.timm_import import from_timm

    weights = pretrained is not False
    try:
        timm_model = timm.create_model(name, pretrained=weights, num_classes=num_classes, img_size=image_size)
    except Exception as exc:
        advice = "; --no-pretrained starts from random weights" if weights else ""
        raise ValueError(f"timm could not create {name!r} ({type(exc).__name__}: {exc}){advice}") from None
    return from_timm(timm_model).train()
