"""What gets timed: a table part, a whole block or a whole model, built with example inputs for a workload.

The part modules call the very `Block` methods the model's forward pass is made of, so the sum of the parts is
the block, operation for operation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lut_server.dims import BlockDims, ModelDims
from lut_server.table_format import BLOCK_SPLITS, PART_AXES
from profiler.vit import DEFAULT_ATTN_SCALE, Block, Head, Stem, VisionTransformer, VitConfig


@dataclass(frozen=True)
class Workload:
    """Batch and token count every measurement of a table shares; `model` is set when stem/head are profiled."""

    batch: int
    tokens: int
    model: VitConfig | None = None

    def __post_init__(self) -> None:
        if self.batch < 1 or self.tokens < 1:
            raise ValueError(f"batch and tokens must be >= 1, got batch={self.batch}, tokens={self.tokens}")
        if self.model is not None and self.model.tokens != self.tokens:
            raise ValueError(
                f"the model config gives {self.model.tokens} tokens "
                f"({self.model.num_patches} patches + {self.model.prefix_tokens} prefix), not {self.tokens}"
            )

    @property
    def attn_scale(self) -> float:
        return self.model.attn_scale if self.model else DEFAULT_ATTN_SCALE


def model_config_for_tokens(
    tokens: int, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000
) -> VitConfig | None:
    """The square-image ViT whose token count is `tokens` (1 class token, or 2 with a distillation token)."""
    for prefix, distilled in ((1, False), (2, True)):
        side = math.isqrt(tokens - prefix) if tokens > prefix else 0
        if side > 0 and side * side == tokens - prefix:
            return VitConfig(side * patch_size, patch_size, in_chans, num_classes, distilled=distilled)
    return None


class PipelineStage(nn.Module):
    """A stage of a timed pipeline: it reads named tensors of the pipeline's state and writes others.

    Naming what each stage reads and writes lets a later stage take a tensor an earlier one produced (attn_v reads
    the block's input `x` for its residual) without a stage passing it through: a pass-through is free in eager
    torch but becomes an Identity copy of the whole activation in an exported graph, work a deployed block does
    not do.
    """

    reads: tuple[str, ...] = ("x",)
    writes: tuple[str, ...] = ("x",)


class ScoresStage(PipelineStage):
    """attn_qk: norm1, Q/K projection, softmax. Writes the normalised input and the attention probabilities."""

    writes = ("h", "probs")

    def __init__(self, block: Block):
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.block.attention_scores(x)


class ValuesStage(PipelineStage):
    """attn_v: V projection, mixing, output projection, residual (onto the block's input `x`)."""

    reads = ("x", "h", "probs")

    def __init__(self, block: Block):
        super().__init__()
        self.block = block

    def forward(self, x: Tensor, h: Tensor, probs: Tensor) -> tuple[Tensor]:
        return (self.block.attention_values(x, h, probs),)


class AttentionStage(PipelineStage):
    """attn: the whole attention sub-block (attn_qk and attn_v as one stage), for runtimes that fuse attention.

    Split as attn_qk | attn_v, the attention probabilities become an engine or session output, which no deployed
    block writes out and which keeps a runtime from fusing scores, softmax and values into one kernel. This stage
    reads and writes only the residual stream, as the block does between its attention and its MLP."""

    def __init__(self, block: Block):
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (self.block.attention_residual(x),)


class MlpStage(PipelineStage):
    """mlp: norm2, fc1, GELU, fc2, residual."""

    def __init__(self, block: Block):
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (self.block.mlp_residual(x),)


class TupleStage(PipelineStage):
    """A module with one tensor output (stem, head) as a pipeline stage."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (self.module(x),)


def stage_io(stage: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a stage reads and writes; any other module (a block, a model) reads and writes `x`."""
    return tuple(getattr(stage, "reads", ("x",))), tuple(getattr(stage, "writes", ("x",)))


def as_outputs(value: Tensor | tuple | list) -> tuple[Tensor, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def initial_state(stages: Sequence[nn.Module], inputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """The pipeline's inputs, named as its first stage reads them."""
    reads, _ = stage_io(stages[0])
    if len(reads) != len(inputs):
        raise ValueError(f"the first stage reads {list(reads)} but {len(inputs)} input(s) were given")
    return dict(zip(reads, inputs, strict=True))


def run_stage(stage: nn.Module, state: dict[str, Tensor]) -> None:
    """Run one stage on the named state and store what it writes."""
    reads, writes = stage_io(stage)
    outputs = as_outputs(stage(*(state[name] for name in reads)))
    if len(outputs) != len(writes):
        raise ValueError(f"{type(stage).__name__} returned {len(outputs)} tensors, declared {list(writes)}")
    state.update(zip(writes, outputs, strict=True))


def stage_inputs(stages: Sequence[nn.Module], inputs: tuple[Tensor, ...]) -> list[tuple[Tensor, ...]]:
    """Each stage's example inputs, from one run of the pipeline (on the inputs' device and dtype); exported
    graphs need them for their shapes."""
    state = initial_state(stages, inputs)
    collected = []
    with torch.inference_mode():
        for stage in stages:
            collected.append(tuple(state[name] for name in stage_io(stage)[0]))
            run_stage(stage, state)
    return collected


SCORES_VALUES: tuple[str, ...] = BLOCK_SPLITS["scores-values"]
"""attn_qk | attn_v | mlp: every part on at most three axes; for runtimes that run the block op by op."""
FUSED_ATTENTION: tuple[str, ...] = BLOCK_SPLITS["fused-attention"]
"""attn | mlp: attention as one stage on (emb, heads, qk, v); for runtimes that fuse attention."""
BLOCK_STAGES = SCORES_VALUES
"""The default split."""
_STAGES: dict[str, type[PipelineStage]] = {"attn_qk": ScoresStage, "attn_v": ValuesStage, "attn": AttentionStage,
                                           "mlp": MlpStage}  # fmt: skip


def block_stages_of(parts: Iterable[str]) -> tuple[str, ...]:
    """The block split a table (or grid) with these parts is measured in."""
    parts = set(parts)
    if "attn" in parts:
        return FUSED_ATTENTION
    if parts & set(SCORES_VALUES):
        return SCORES_VALUES
    raise ValueError(f"parts {sorted(parts)} hold neither {list(SCORES_VALUES)} nor {list(FUSED_ATTENTION)}")


def _full_dims(part: str, dims: Mapping[str, int]) -> BlockDims:
    """Unused axes of a part get width 1 so its block allocates almost nothing for them."""
    missing = [a for a in PART_AXES[part] if a not in dims]
    if missing:
        raise ValueError(f"part {part} needs dims {list(PART_AXES[part])}; missing {missing}")
    return BlockDims(**{a: int(dims.get(a, 1)) if a in PART_AXES[part] else 1 for a in BlockDims.__slots__})


def build_part(part: str, dims: Mapping[str, int], workload: Workload, seed: int = 0) -> tuple[nn.Module, tuple]:
    """A module and example inputs that time one cell of `part`."""
    generator = torch.Generator().manual_seed(seed)
    b, t = workload.batch, workload.tokens
    if part in ("stem", "head"):
        if workload.model is None:
            raise ValueError(f"part {part} needs a model config (image and patch size) in the workload")
        emb = int(dims["emb"])
        if part == "stem":
            cfg = workload.model
            images = torch.randn(b, cfg.in_chans, cfg.image_size, cfg.image_size, generator=generator)
            return Stem(emb, cfg), (images,)
        return Head(emb, workload.model), (torch.randn(b, t, emb, generator=generator),)
    block_dims = _full_dims(part, dims)
    block = Block(block_dims, workload.attn_scale)
    x = torch.randn(b, t, block_dims.emb, generator=generator)
    if part == "block":
        return block, (x,)
    if part == "attn_qk":
        return ScoresStage(block), (x,)
    if part == "mlp":
        return MlpStage(block), (x,)
    if part == "attn":
        return AttentionStage(block), (x,)
    if part == "attn_v":
        h = torch.randn(b, t, block_dims.emb, generator=generator)
        probs = torch.randn(b, block_dims.heads, t, t, generator=generator).softmax(-1)
        return ValuesStage(block), (x, h, probs)
    raise ValueError(f"unknown part {part!r}; parts are {list(PART_AXES)}")


def build_pipeline(
    blocks: BlockDims | Sequence[BlockDims],
    workload: Workload,
    with_model_parts: bool,
    seed: int = 0,
    block_stages: Sequence[str] = SCORES_VALUES,
) -> tuple[list[str], list[nn.Module], tuple[Tensor, ...]]:
    """The stages of one or more stacked blocks (all of one EMB; the stem before them and the head after them when
    the table has them) and the pipeline's inputs; timing it yields every part's latency measured inside a running
    model. Each block is split into `block_stages` (SCORES_VALUES or FUSED_ATTENTION). Names repeat per block:
    block i's n stages follow the stem (if any) at positions n·i ... n·i + n - 1."""
    block_stages = tuple(block_stages)
    if block_stages not in (SCORES_VALUES, FUSED_ATTENTION):
        raise ValueError(f"a block splits into {list(SCORES_VALUES)} or {list(FUSED_ATTENTION)}, not {block_stages}")
    stack = [blocks] if isinstance(blocks, BlockDims) else list(blocks)
    if not stack or len({b.emb for b in stack}) != 1:
        raise ValueError(f"a pipeline needs one or more blocks of one EMB, got {[b.as_dict() for b in stack]}")
    emb = stack[0].emb
    generator = torch.Generator().manual_seed(seed)
    names: list[str] = []
    stages: list[nn.Module] = []
    for dims in stack:
        block = Block(dims, workload.attn_scale)
        names += block_stages
        stages += [_STAGES[name](block) for name in block_stages]
    if with_model_parts:
        cfg = workload.model
        if cfg is None:
            raise ValueError("stem and head stages need a model config (image and patch size) in the workload")
        names = ["stem", *names, "head"]
        stages = [TupleStage(Stem(emb, cfg)), *stages, TupleStage(Head(emb, cfg))]
        inputs = (torch.randn(workload.batch, cfg.in_chans, cfg.image_size, cfg.image_size, generator=generator),)
    else:
        inputs = (torch.randn(workload.batch, workload.tokens, emb, generator=generator),)
    return names, stages, inputs


def build_block(dims: BlockDims, workload: Workload, seed: int = 0, stack: int = 1) -> tuple[nn.Module, tuple]:
    """One block, or `stack` blocks of the same dims (each with its own weights) run one after the other: a block
    as it runs inside a model, where the blocks around it evict its weights from cache."""
    if stack == 1:
        return build_part("block", dims.as_dict(), workload, seed)
    if stack < 1:
        raise ValueError(f"stack must be at least 1, got {stack}")
    generator = torch.Generator().manual_seed(seed)
    blocks = nn.Sequential(*(Block(dims, workload.attn_scale) for _ in range(stack)))
    return blocks, (torch.randn(workload.batch, workload.tokens, dims.emb, generator=generator),)


def build_model(dims: ModelDims, workload: Workload, seed: int = 0) -> tuple[nn.Module, tuple]:
    """A whole model; without a model config (no stem/head in the table) just the stacked blocks."""
    generator = torch.Generator().manual_seed(seed)
    if workload.model is None:
        blocks = nn.Sequential(*(Block(b, workload.attn_scale) for b in dims.block_dims()))
        return blocks, (torch.randn(workload.batch, workload.tokens, dims.emb, generator=generator),)
    cfg = workload.model
    images = torch.randn(workload.batch, cfg.in_chans, cfg.image_size, cfg.image_size, generator=generator)
    return VisionTransformer(dims, cfg), (images,)
