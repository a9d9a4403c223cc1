"""The two timing loops every backend uses, written once: host clock (synchronous CPU work) and CUDA events.

A runner executes a pipeline of steps (one per stage; one step for a whole module) `iterations` times back to back
and returns the elapsed milliseconds of each step, summed over the iterations. It owns what its steps use (modules
and their weights, input and output buffers, sessions, engines, CUDA graphs), so nothing a launch reads can be
freed while the runner lives.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

Step = Callable[[], Any]
Context = Callable[[], AbstractContextManager[Any]]


class HostClockRunner:
    """perf_counter_ns between steps; exact where every step returns when its work is done (CPU execution).

    `reset` runs before each iteration, untimed (eager torch restarts its chain of tensors from the inputs);
    `context` is entered once around the whole batch (torch.inference_mode). With a single step and no reset, the
    clock is read only around the whole batch of iterations.
    """

    def __init__(
        self, steps: Sequence[Step], resources: Any = None, reset: Step | None = None, context: Context | None = None
    ):
        if not steps:
            raise ValueError("a runner needs at least one step")
        self.steps = list(steps)
        self.resources = resources
        self.reset = reset
        self.context = context or contextlib.nullcontext

    def __call__(self, iterations: int) -> np.ndarray:
        with self.context():
            return self._run(iterations)

    def _run(self, iterations: int) -> np.ndarray:
        clock = time.perf_counter_ns
        if len(self.steps) == 1 and self.reset is None:
            step = self.steps[0]
            start = clock()
            for _ in range(iterations):
                step()
            return np.array([(clock() - start) / 1e6])
        totals = [0] * len(self.steps)
        for _ in range(iterations):
            if self.reset is not None:
                self.reset()
            before = clock()
            for i, step in enumerate(self.steps):
                step()
                after = clock()
                totals[i] += after - before
                before = after
        return np.array(totals, dtype=float) / 1e6


class CudaEventRunner:
    """CUDA events recorded on `stream` between steps: the GPU's own time for each step, launches queued back to
    back without a host synchronisation until the last event of the batch.

    `stream` is the torch.cuda.Stream the steps launch on. With a single step and no reset, one pair of events
    brackets the whole batch of iterations.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        stream: Any,
        resources: Any = None,
        reset: Step | None = None,
        context: Context | None = None,
    ):
        import torch

        if not steps:
            raise ValueError("a runner needs at least one step")
        self.steps = list(steps)
        self.stream = stream
        self.resources = resources
        self.reset = reset
        self.context = context or contextlib.nullcontext
        self._events: list[Any] = []
        self._event = lambda: torch.cuda.Event(enable_timing=True)

    def __call__(self, iterations: int) -> np.ndarray:
        with self.context():
            return self._run(iterations)

    def _run(self, iterations: int) -> np.ndarray:
        import torch

        per_iteration = len(self.steps) + 1
        while len(self._events) < iterations * per_iteration:
            self._events.append(self._event())
        events = self._events
        if len(self.steps) == 1 and self.reset is None:
            step = self.steps[0]
            with torch.cuda.stream(self.stream):
                events[0].record(self.stream)
                for _ in range(iterations):
                    step()
                events[1].record(self.stream)
            events[1].synchronize()
            return np.array([events[0].elapsed_time(events[1])])
        with torch.cuda.stream(self.stream):
            k = 0
            for _ in range(iterations):
                if self.reset is not None:
                    self.reset()
                events[k].record(self.stream)
                for step in self.steps:
                    step()
                    k += 1
                    events[k].record(self.stream)
                k += 1
        events[k - 1].synchronize()
        totals = np.zeros(len(self.steps))
        for it in range(iterations):
            base = it * per_iteration
            for i in range(len(self.steps)):
                totals[i] += events[base + i].elapsed_time(events[base + i + 1])
        return totals
