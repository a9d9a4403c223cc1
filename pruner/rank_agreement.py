"""Keeping every rank of a torch.distributed job on the same pruning decisions.

Three rules: gate gradients are averaged across ranks before they are folded into the importance (so importance
is that of the global batch even when training bypasses DDP's gradient hooks, e.g. through `module.forward_both`);
rank 0 alone asks the latency source and decides, and the decision (or the error it met) is broadcast, so a
service failure reaches every rank as the same exception instead of a hang; a checksum of the gates is compared
after every step and a mismatch raises on every rank.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class RankDisagreement(RuntimeError):
    """Ranks hold different gates after a pruning step."""


class RemoteDecisionError(RuntimeError):
    """Rank 0 failed to decide a pruning step; raised on the other ranks with rank 0's message."""


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a distributed job."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_across_ranks(flat: Tensor) -> Tensor:
    """The mean of `flat` over all ranks (itself outside a distributed job); one collective."""
    _, size = world()
    if size == 1:
        return flat
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return flat.div_(size)


def decide_on_rank0(decide: Callable[[], Any]) -> Any:
    """Run `decide` on rank 0 and return its result on every rank; its exception is raised on every rank."""
    rank, size = world()
    if size == 1:
        return decide()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if rank == 0:
        try:
            payload[0] = {"ok": decide()}
        except Exception as exc:  # broadcast, then re-raise on rank 0
            error = exc
            payload[0] = {"error": f"{type(exc).__name__}: {exc}"}
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    if "error" in payload[0]:
        raise RemoteDecisionError(f"rank 0 could not decide the pruning step: {payload[0]['error']}")
    return payload[0]["ok"]


def gates_checksum(flat_gates: Tensor) -> int:
    """A 63-bit checksum of which gates are open."""
    open_bytes = (flat_gates != 0).to(torch.uint8).cpu().numpy().tobytes()
    return int.from_bytes(hashlib.sha256(open_bytes).digest()[:8], "little") >> 1


def check_same_gates(flat_gates: Tensor, step: int) -> int:
    """Compare the gates' checksum across ranks; raise RankDisagreement on every rank when any differs."""
    checksum = gates_checksum(flat_gates)
    _, size = world()
    if size == 1:
        return checksum
    mine = torch.tensor([checksum], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        mine = mine.cuda()
    everyone = [torch.zeros_like(mine) for _ in range(size)]
    dist.all_gather(everyone, mine)
    values = [int(t.item()) for t in everyone]
    if len(set(values)) > 1:
        raise RankDisagreement(
            f"pruning step {step}: ranks hold different gates (checksums by rank: {[hex(v) for v in values]}); "
            "the model replicas have diverged"
        )
    return checksum
