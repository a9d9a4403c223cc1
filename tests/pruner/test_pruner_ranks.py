"""Two gloo ranks in one test: reduced importance, rank 0's decision everywhere, errors and mismatches on all ranks."""

from __future__ import annotations

import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lut_server.client import LatencyServiceError
from pruner import Pruner
from tests.pruner.small_models import batch, small_model, small_table


class FailingLatency:
    """A latency source whose service is down."""

    def __init__(self):
        self.inner = small_table()

    def summary(self):
        return self.inner.summary()

    @property
    def ranges(self):
        return self.inner.ranges

    def deltas(self, model, group_size=None):
        raise LatencyServiceError("POST http://lut/v1/tables/small/deltas failed after 6 attempts", "http://lut")

    def model_latency(self, model):
        raise AssertionError("not used")


def _worker(rank: int, init_file: str, results) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
        torch.set_num_threads(1)
        out = {}
        # each rank holds half of the global batch and trains through forward_both (no DDP hooks)
        model = small_model()
        p = Pruner(model, latency=small_table(), target_ratio=0.5, groups_per_step=2)
        x, y = batch(0, n=8)
        model.zero_grad()
        F.cross_entropy(model.forward_both(x[rank * 4 : (rank + 1) * 4])[0], y[rank * 4 : (rank + 1) * 4]).backward()
        p.accumulate()
        out["importance"] = p.importance.value().flat()
        out["removed"] = [c.name for c in p.step().removed]
        out["checksum"] = p.history[-1].gates_checksum
        # rank 0's latency failure is the same error on both ranks, not a hang
        q = Pruner(small_model(), latency=FailingLatency(), target_ratio=0.5)
        model_q = q.model
        model_q.zero_grad()
        F.cross_entropy(model_q(x), y).backward()
        q.accumulate()
        try:
            q.step()
        except Exception as exc:
            out["failure"] = f"{type(exc).__name__}: {exc}"
        # a replica that diverged is found at the next step
        if rank == 1:
            p.gates.blocks[0].mlp[5] = 0
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        p.accumulate()
        try:
            p.step()
        except Exception as exc:
            out["mismatch"] = f"{type(exc).__name__}: {exc}"
        results[rank] = out
        dist.destroy_process_group()
    except Exception:
        results[rank] = {"crash": traceback.format_exc()}


@pytest.mark.slow
def test_two_ranks_agree_and_fail_together(tmp_path):
    results = mp.Manager().dict()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    r0, r1 = results[0], results[1]
    assert "crash" not in r0 and "crash" not in r1, r0.get("crash") or r1.get("crash")
    torch.testing.assert_close(r0["importance"], r1["importance"], rtol=0, atol=0)
    # the reduced importance is the global batch's: the mean of the two halves' gate gradients, squared
    model = small_model()
    x, y = batch(0, n=8)
    halves = []
    for rank in range(2):
        model.zero_grad()
        F.cross_entropy(model.forward_both(x[rank * 4 : (rank + 1) * 4])[0], y[rank * 4 : (rank + 1) * 4]).backward()
        from pruner.gates import gate_gradients

        halves.append(gate_gradients(model).flat().double())
    torch.testing.assert_close(r0["importance"], ((halves[0] + halves[1]) / 2).square(), rtol=1e-5, atol=1e-12)
    assert r0["removed"] == r1["removed"] and r0["removed"]
    assert r0["checksum"] == r1["checksum"]
    assert "LatencyServiceError" in r0["failure"] and "failed after 6 attempts" in r0["failure"]
    assert "failed after 6 attempts" in r1["failure"]
    assert "RankDisagreement" in r0["mismatch"] and "RankDisagreement" in r1["mismatch"]
