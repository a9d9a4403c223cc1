"""ONNX Runtime: the module is exported to ONNX with its exact dims and timed in an InferenceSession.

CPU execution provider: a fixed, recorded intra-op thread count (default 1), one inter-op thread, sequential
execution, all graph optimizations on, timed with perf_counter_ns. Inputs and outputs are bound once through
IO binding (outputs preallocated), so a timed iteration is the session's own work, not numpy allocation.

CUDA execution provider (where onnxruntime-gpu is installed): buffers are torch CUDA tensors bound by pointer,
the session runs on a torch stream (`user_compute_stream`) and is timed with CUDA events on that stream.
This path has not been run on a GPU yet (see README.md, "Deployment runtimes").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from profiler.backends.base import Backend, BackendUnavailable
from profiler.environment import package_version
from profiler.fingerprint import cpu_device, software
from profiler.onnx_export import DEFAULT_OPSET, EXPORTERS, OnnxGraph, export_onnx
from profiler.timing import Runner

PROVIDERS: dict[str, str] = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def default_provider() -> str:
    """CUDA where both onnxruntime-gpu and a GPU are present, else CPU."""
    cuda_ready = PROVIDERS["cuda"] in ort.get_available_providers() and torch.cuda.is_available()
    return "cuda" if cuda_ready else "cpu"


def session_options(threads: int) -> ort.SessionOptions:
    """Fixed threads (intra-op = `threads`, inter-op 1), sequential execution, every graph optimization."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    precisions = ("fp32", "fp16")

    def __init__(
        self,
        precision: str = "fp32",
        threads: int | None = None,
        provider: str | None = None,
        exporter: str = "torchscript",
        opset: int = DEFAULT_OPSET,
        **options: Any,
    ):
        provider = provider or default_provider()
        if provider not in PROVIDERS:
            raise ValueError(f"onnxruntime provider must be one of {list(PROVIDERS)}, got {provider!r}")
        if exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
        threads = threads if threads is not None else 1
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        super().__init__(precision, threads, provider=provider, exporter=exporter, opset=int(opset), **options)
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise BackendUnavailable(
                f"onnxruntime {ort.__version__} has no {PROVIDERS[provider]} here "
                f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu for CUDA"
            )
        if provider == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("onnxruntime's CUDA provider needs torch with CUDA for buffers and events")
        if provider == "cpu" and precision != "fp32":
            raise ValueError("onnxruntime on the CPU provider is profiled in fp32 only (fp16 runs unfused there)")
        self.provider = provider
        self.exporter = exporter
        self.opset = int(opset)
        self._cuda_stream: torch.cuda.Stream | None = None

    def export(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> OnnxGraph:
        """The ONNX graph this backend times: the module cast to the table's precision, exact dims."""
        module = module.eval().to(dtype=self.dtype)
        inputs = tuple(x.to(dtype=self.dtype) if x.is_floating_point() else x for x in inputs)
        return export_onnx(module, inputs, exporter=self.exporter, opset=self.opset)  # type: ignore[arg-type]

    def session(self, graph: OnnxGraph) -> ort.InferenceSession:
        provider_options: dict[str, str] = {}
        if self.provider == "cuda":
            provider_options = {
                "device_id": str(torch.cuda.current_device()),
                "user_compute_stream": str(self._stream().cuda_stream),
            }
        return ort.InferenceSession(
            graph.model, session_options(self.threads), providers=[(PROVIDERS[self.provider], provider_options)]
        )

    def prepare(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Runner:
        if self.provider == "cpu":
            chained = self.prepare_pipeline([module], inputs)  # a one-stage chain
            return lambda iterations: float(chained(iterations)[0])
        graph = self.export(module, inputs)
        session = self.session(graph)
        return self._cuda_runner(session, [x.detach().to(dtype=self.dtype).numpy() for x in inputs])

    @property
    def stage_timing(self) -> str:  # type: ignore[override]
        return "in-context" if self.provider == "cpu" else "isolated"

    def prepare_pipeline(self, stages: Sequence[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        """One session per stage, chained through bound OrtValues (each stage's outputs are the next one's
        inputs) and timed stage by stage on the host clock, which is exact on the synchronous CPU provider."""
        if self.provider != "cpu":
            return super().prepare_pipeline(stages, inputs)
        states = [tuple(inputs)]
        with torch.inference_mode():
            for stage in stages[:-1]:
                states.append(tuple(t.clone() for t in stage.eval()(*states[-1])))
        sessions = [self.session(self.export(stage, state)) for stage, state in zip(stages, states, strict=True)]
        values = [
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x.detach().to(dtype=self.dtype).numpy()))
            for x in inputs
        ]
        keepalive: list[Any] = [values]
        executes = []
        for session in sessions:
            binding = session.io_binding()
            for meta, value in zip(session.get_inputs(), values, strict=True):
                binding.bind_ortvalue_input(meta.name, value)
            values = [
                ort.OrtValue.ortvalue_from_shape_and_type(meta.shape, _onnx_numpy_type(meta.type))
                for meta in session.get_outputs()
            ]
            for meta, value in zip(session.get_outputs(), values, strict=True):
                binding.bind_ortvalue_output(meta.name, value)
            keepalive.append((binding, values))
            executes.append(_raw_run_with_iobinding(session, binding))
        run_options = ort.RunOptions()
        clock = time.perf_counter_ns

        def run(iterations: int) -> np.ndarray:
            totals = [0] * len(executes)
            for _ in range(iterations):
                before = clock()
                for i, execute in enumerate(executes):
                    execute(run_options)
                    after = clock()
                    totals[i] += after - before
                    before = after
            return np.array(totals, dtype=float) / 1e6

        run.keepalive = (keepalive, sessions)  # type: ignore[attr-defined]  # OrtValues view these buffers
        return run

    def _stream(self) -> torch.cuda.Stream:
        if self._cuda_stream is None:
            self._cuda_stream = torch.cuda.Stream()
        return self._cuda_stream

    def _cuda_runner(self, session: ort.InferenceSession, arrays: list[np.ndarray]) -> Runner:
        device = torch.device("cuda", torch.cuda.current_device())
        inputs = [torch.from_numpy(a).to(device) for a in arrays]
        outputs = [
            torch.empty(tuple(meta.shape), dtype=_onnx_torch_type(meta.type), device=device)
            for meta in session.get_outputs()
        ]
        binding = session.io_binding()
        for meta, tensor in zip(session.get_inputs(), inputs, strict=True):
            binding.bind_input(meta.name, "cuda", device.index, _onnx_numpy_type(meta.type), tuple(tensor.shape),
                               tensor.data_ptr())  # fmt: skip
        for meta, tensor in zip(session.get_outputs(), outputs, strict=True):
            binding.bind_output(meta.name, "cuda", device.index, _onnx_numpy_type(meta.type), tuple(tensor.shape),
                                tensor.data_ptr())  # fmt: skip
        run_options = ort.RunOptions()
        # the session runs on our stream; we synchronise through the end event, not after every run
        run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        stream = self._stream()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        execute = _raw_run_with_iobinding(session, binding)

        def run(iterations: int) -> float:
            start.record(stream)
            for _ in range(iterations):
                execute(run_options)
            end.record(stream)
            end.synchronize()
            return float(start.elapsed_time(end))

        run.keepalive = (inputs, outputs)  # type: ignore[attr-defined]
        return run

    def environment(self) -> dict[str, dict[str, Any]]:
        """The graph comes from torch's exporter, so torch's version is part of what must match."""
        match = {
            "onnxruntime": ort.__version__,
            "onnx": package_version("onnx"),
            "torch": torch.__version__,
            "provider": PROVIDERS[self.provider],
        }
        recorded = {"onnxruntime_providers": ort.get_available_providers()}
        if self.provider == "cuda":
            from profiler.backends.torch_cuda import cuda_device, cuda_software

            return {"device": cuda_device(), "software": software(match | cuda_software(), recorded)}
        device = cpu_device(self.threads, {"ort_intra_op_threads": self.threads, "ort_inter_op_threads": 1})
        return {"device": device, "software": software(match, recorded)}


def _raw_run_with_iobinding(session: ort.InferenceSession, binding: ort.IOBinding) -> Callable[[ort.RunOptions], None]:
    """The C++ session's run, without the Python wrapper's per-call bookkeeping.

    In onnxruntime 1.31 `InferenceSession.run_with_iobinding` spends ~33 µs per call in Python (WebGPU
    graph-capture checks) around a ~2 µs native call; that is 15-20% of a small block's latency on this CPU, and
    it is paid three times by a block timed as three parts but once by a whole block. A deployed runtime (C/C++,
    a serving process) does not pay it, so the table times the native call. Falls back to the public method
    where the private handle is absent.
    """
    native, native_binding = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
    if native is None or native_binding is None or not hasattr(native, "run_with_iobinding"):
        return lambda options: session.run_with_iobinding(binding, options)
    return lambda options: native.run_with_iobinding(native_binding, options)


_ONNX_NUMPY: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}
_ONNX_TORCH: dict[str, torch.dtype] = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
    "tensor(bool)": torch.bool,
}


def _onnx_numpy_type(onnx_type: str) -> type:
    try:
        return _ONNX_NUMPY[onnx_type]
    except KeyError:
        raise ValueError(f"unsupported ONNX tensor type {onnx_type}") from None


def _onnx_torch_type(onnx_type: str) -> torch.dtype:
    try:
        return _ONNX_TORCH[onnx_type]
    except KeyError:
        raise ValueError(f"unsupported ONNX tensor type {onnx_type}") from None
