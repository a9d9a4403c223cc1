"""ONNX Runtime: the module is exported to ONNX with its exact dims and timed in an InferenceSession.

CPU execution provider: a fixed, recorded intra-op thread count (default 1), one inter-op thread, sequential
execution, all graph optimizations on, timed with perf_counter_ns. Inputs and outputs are bound once through
IO binding (outputs preallocated), so a timed iteration is the session's own work, not numpy allocation.

CUDA execution provider (where onnxruntime-gpu is installed): buffers are torch CUDA tensors bound by pointer,
the sessions run on one torch stream (`user_compute_stream`) and are timed with CUDA events on that stream; TF32
is set explicitly (`use_tf32`, off unless the `tf32` option asks for it) and recorded.

A pipeline is one session per stage, chained through the bound buffers: a stage reads the very buffer an earlier
stage wrote (attn_v reads the block's input for its residual), so no stage copies a tensor through. On the CUDA
provider a block is split as attn | mlp, so the provider's attention fusions see the whole attention. This path has
not been run on a GPU (docs/gpu.md).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from profiler.backends.base import Backend, BackendUnavailable, GpuProviderMissing
from profiler.backends.cuda_device import every_gpu_hidden, require_supported_gpu
from profiler.backends.options import OptionSpec
from profiler.backends.runners import CudaEventRunner, HostClockRunner
from profiler.backends.tf32_environment import check_tf32_environment
from profiler.environment import package_version
from profiler.fingerprint import cpu_device, software
from profiler.onnx_export import EXPORTERS, OnnxGraph, export_onnx, resolve_opset
from profiler.timing import Runner
from profiler.workload import FUSED_ATTENTION, SCORES_VALUES, initial_state, stage_inputs, stage_io

PROVIDERS: dict[str, str] = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


CUDA_PACKAGE = "onnxruntime-gpu>=1.19,<1.27"
"""The CUDA 12 builds of ONNX Runtime on PyPI (the `gpu` extra's)."""


def gpu_visible() -> bool:
    """An NVIDIA GPU is here: torch sees one, or `nvidia-smi -L` lists one (a CPU build of torch sees none) and
    CUDA_VISIBLE_DEVICES does not hide them all (a user profiling the CPU on a GPU machine)."""
    if torch.cuda.is_available():
        return True
    if every_gpu_hidden(os.environ.get("CUDA_VISIBLE_DEVICES")):
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and any(line.startswith("GPU ") for line in listed.stdout.splitlines())


def choose_provider(available: Sequence[str], gpu: bool) -> str:
    """The provider used when none is asked for: CUDA where a GPU is here, CPU where none is. A GPU machine whose
    onnxruntime lacks the CUDA provider (the CPU package installed, alone or over onnxruntime-gpu, whose module it
    shares) is refused rather than timed on the CPU under a GPU machine's name."""
    if not gpu:
        return "cpu"
    if PROVIDERS["cuda"] in available:
        return "cuda"
    both = " (both onnxruntime and onnxruntime-gpu are installed; the CPU package's module won)" if (
        package_version("onnxruntime") and package_version("onnxruntime-gpu")
    ) else ""  # fmt: skip
    raise GpuProviderMissing(
        f"an NVIDIA GPU is here but onnxruntime {onnxruntime_version()} has no {PROVIDERS['cuda']}{both}: "
        f"pip uninstall -y onnxruntime onnxruntime-gpu && pip install '{CUDA_PACKAGE}', or pass --provider cpu",
        cpu_options={"provider": "cpu"},
    )


def default_provider() -> str:
    """CUDA where a GPU and onnxruntime-gpu are here, CPU where no GPU is; refused where the GPU's provider is
    missing (choose_provider)."""
    return choose_provider(ort.get_available_providers(), gpu_visible())


def onnxruntime_cuda_version() -> str | None:
    """The CUDA version this onnxruntime was built against (onnxruntime-gpu records it; None where it does not)."""
    try:
        from onnxruntime.capi import build_and_package_info
    except ImportError:
        return None
    version = getattr(build_and_package_info, "cuda_version", None)
    return str(version) if version else None


def check_cuda_majors(torch_cuda: str | None, onnxruntime_cuda: str | None) -> None:
    """Refuse torch and onnxruntime built for different CUDA majors: both load their CUDA runtime into one
    process, and the provider's libraries (cuBLAS, cuDNN) of one major fail to load, or load beside the other
    major's, under torch's. Unknown versions are not refused."""
    if not torch_cuda or not onnxruntime_cuda:
        return
    torch_major, ort_major = torch_cuda.split(".")[0], onnxruntime_cuda.split(".")[0]
    if torch_major != ort_major:
        raise BackendUnavailable(
            f"torch is built for CUDA {torch_cuda} but onnxruntime {onnxruntime_version()} for CUDA "
            f"{onnxruntime_cuda}: install a CUDA {ort_major} build of torch first (for CUDA 12: "
            "pip install torch --index-url https://download.pytorch.org/whl/cu126)"
        )


def onnxruntime_version() -> str:
    """The installed ONNX Runtime, whichever distribution provides it (onnxruntime, onnxruntime-gpu, ...)."""
    return ort.__version__


def require_provider(session: ort.InferenceSession, provider: str) -> None:
    """onnxruntime falls back to the CPU provider when the requested one fails to start (a missing cuDNN, say), with
    its warning hidden at our log level; a table labelled CUDA must never be timed on the CPU."""
    active = session.get_providers()
    if not active or active[0] != provider:
        raise BackendUnavailable(
            f"onnxruntime did not start {provider} (active providers: {', '.join(active) or 'none'}); "
            "check the CUDA and cuDNN libraries onnxruntime-gpu needs"
        )


def session_options(threads: int) -> ort.SessionOptions:
    """Fixed threads (intra-op = `threads`, inter-op 1), sequential execution, every graph optimization."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def cuda_provider_options(device_id: int, stream_handle: int, tf32: bool) -> dict[str, str]:
    """The CUDA provider's options, every one that changes kernels set explicitly (TF32 defaults to on there)."""
    return {
        "device_id": str(device_id),
        "has_user_compute_stream": "1",
        "user_compute_stream": str(stream_handle),
        "use_tf32": "1" if tf32 else "0",
    }


def cuda_provider_match(tf32: bool) -> dict[str, Any]:
    """What a CUDA-provider table must match besides onnxruntime itself: CUDA, cuDNN and the provider's own TF32
    setting. torch's math modes choose torch's kernels, not the provider's, so they are left out."""
    from profiler.backends.torch_cuda import cuda_versions

    return {**cuda_versions(), "ort_cuda_use_tf32": tf32}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    precisions = ("fp32", "fp16")
    default_threads = 1
    takes_threads = True
    option_specs = (
        OptionSpec("provider", str, "cpu", "execution provider", allowed=tuple(PROVIDERS)),
        OptionSpec("exporter", str, "torchscript", "torch's ONNX exporter", allowed=EXPORTERS),
        OptionSpec("opset", int, None, "ONNX opset of the exported graph (default 17)", bounds=(17, None)),
        OptionSpec(
            "tf32", bool, False, "let the CUDA provider use TF32 for fp32 matmuls and convolutions",
            applies=lambda o: o["provider"] == "cuda", applies_help="with provider cuda",
        ),
    )  # fmt: skip

    def __init__(self, precision: str = "fp32", threads: int | None = None, **options: Any):
        options["provider"] = options.get("provider") or default_provider()
        super().__init__(precision, threads, **options)
        self.provider = self.options["provider"]
        self.exporter = self.options["exporter"]
        if PROVIDERS[self.provider] not in ort.get_available_providers():
            raise BackendUnavailable(
                f"onnxruntime {onnxruntime_version()} has no {PROVIDERS[self.provider]} here "
                f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu for CUDA"
            )
        if self.provider == "cuda":
            check_tf32_environment(self.name, precision, self.options["tf32"], os.environ, torch_matmuls=False)
            if not torch.cuda.is_available():
                raise BackendUnavailable("onnxruntime's CUDA provider needs torch with CUDA for buffers and events")
            check_cuda_majors(torch.version.cuda, onnxruntime_cuda_version())
            require_supported_gpu(self.name)
        if self.provider == "cpu" and precision != "fp32":
            raise ValueError("onnxruntime on the CPU provider is profiled in fp32 only (fp16 runs unfused there)")
        self.options["opset"] = resolve_opset(self.dtype, self.options["opset"])  # before a sweep, recorded as used
        self._cuda_stream: torch.cuda.Stream | None = None

    @property
    def opset(self) -> int:
        """The opset graphs are exported with: the one recorded in the options, so the two cannot disagree."""
        return int(self.options["opset"])

    @property
    def stage_timing(self) -> str:
        return "in-context" if self.provider == "cpu" else "in-context-chained-sessions"

    @property
    def block_stages(self) -> tuple[str, ...]:
        """The CUDA provider fuses attention (its transformer fusions); the CPU provider keeps the shipped split."""
        return FUSED_ATTENTION if self.provider == "cuda" else SCORES_VALUES

    def export(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> OnnxGraph:
        """The ONNX graph this backend times: the module (already in the table's precision), exact dims."""
        return export_onnx(module, inputs, exporter=self.exporter, opset=self.opset)

    def session(self, graph: OnnxGraph) -> ort.InferenceSession:
        provider_options: dict[str, str] = {}
        if self.provider == "cuda":
            provider_options = cuda_provider_options(
                torch.cuda.current_device(), self._stream().cuda_stream, self.options["tf32"]
            )
        session = ort.InferenceSession(
            graph.model, session_options(self.threads), providers=[(PROVIDERS[self.provider], provider_options)]
        )
        require_provider(session, PROVIDERS[self.provider])
        return session

    def _pipeline_runner(self, stages: list[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        """One session per stage, chained through bound buffers named by what each stage reads and writes."""
        device = torch.device("cuda", torch.cuda.current_device()) if self.provider == "cuda" else torch.device("cpu")
        stages = [stage.eval().to(device=device, dtype=self.dtype) for stage in stages]
        inputs = tuple(x.to(device=device, dtype=self.dtype if x.is_floating_point() else x.dtype) for x in inputs)
        examples = stage_inputs(stages, inputs)  # one run on the target device, for the graphs' shapes
        sessions = [self.session(self.export(stage, ex)) for stage, ex in zip(stages, examples, strict=True)]
        if self.provider == "cpu":
            return self._cpu_runner(stages, sessions, inputs)
        return self._cuda_runner(stages, sessions, inputs, device)

    def _cpu_runner(self, stages: list[nn.Module], sessions: list[ort.InferenceSession], inputs: tuple) -> Runner:
        state = {
            name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x.detach().numpy()))
            for name, x in initial_state(stages, inputs).items()
        }
        bindings, executes = [], []
        for stage, session in zip(stages, sessions, strict=True):
            reads, writes = stage_io(stage)
            binding = session.io_binding()
            for meta, name in zip(session.get_inputs(), reads, strict=True):
                binding.bind_ortvalue_input(meta.name, state[name])
            for meta, name in zip(session.get_outputs(), writes, strict=True):
                state[name] = ort.OrtValue.ortvalue_from_shape_and_type(meta.shape, _onnx_numpy_type(meta.type))
                binding.bind_ortvalue_output(meta.name, state[name])
            bindings.append(binding)
            executes.append(_raw_run_with_iobinding(session, binding))
        run_options = ort.RunOptions()
        steps = [lambda execute=execute: execute(run_options) for execute in executes]
        return HostClockRunner(steps, resources=(sessions, bindings, state))  # OrtValues view these buffers

    def _stream(self) -> torch.cuda.Stream:
        if self._cuda_stream is None:
            self._cuda_stream = torch.cuda.Stream()
        return self._cuda_stream

    def _cuda_runner(
        self, stages: list[nn.Module], sessions: list[ort.InferenceSession], inputs: tuple, device: torch.device
    ) -> Runner:
        state = {name: x.contiguous() for name, x in initial_state(stages, inputs).items()}
        bindings, executes = [], []
        bound: list[Tensor] = []  # every buffer bound by pointer: `state` forgets a name's earlier buffer (x)
        for stage, session in zip(stages, sessions, strict=True):
            reads, writes = stage_io(stage)
            binding = session.io_binding()
            for meta, name in zip(session.get_inputs(), reads, strict=True):
                tensor = state[name]
                bound.append(tensor)
                binding.bind_input(meta.name, "cuda", device.index, _onnx_numpy_type(meta.type), tuple(tensor.shape),
                                   tensor.data_ptr())  # fmt: skip
            for meta, name in zip(session.get_outputs(), writes, strict=True):
                tensor = torch.empty(tuple(meta.shape), dtype=_onnx_torch_type(meta.type), device=device)
                bound.append(tensor)
                state[name] = tensor
                binding.bind_output(meta.name, "cuda", device.index, _onnx_numpy_type(meta.type), tuple(tensor.shape),
                                    tensor.data_ptr())  # fmt: skip
            bindings.append(binding)
            executes.append(_raw_run_with_iobinding(session, binding))
        run_options = ort.RunOptions()
        # the sessions run on our stream; we synchronise through the last event, not after every run
        run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        torch.cuda.synchronize(device)  # inputs copied before the first timed launch
        steps = [lambda execute=execute: execute(run_options) for execute in executes]
        return CudaEventRunner(steps, self._stream(), resources=(sessions, bindings, bound))

    def environment(self) -> dict[str, dict[str, Any]]:
        """The graph comes from torch's exporter, so torch's version is part of what must match."""
        match: dict[str, Any] = {
            "onnxruntime": onnxruntime_version(),
            "onnx": package_version("onnx"),
            "torch": torch.__version__,
            "provider": PROVIDERS[self.provider],
        }
        recorded = {
            "onnxruntime_providers": ort.get_available_providers(),
            "onnxruntime_distribution": _ort_distribution(),
        }
        if self.provider == "cuda":
            from profiler.backends.torch_cuda import cuda_device

            return {"device": cuda_device(), "software": software(match | cuda_provider_match(self.options["tf32"]),
                                                                  recorded)}  # fmt: skip
        device = cpu_device(self.threads, {"ort_intra_op_threads": self.threads, "ort_inter_op_threads": 1})
        return {"device": device, "software": software(match, recorded)}


def _ort_distribution() -> str | None:
    """Which package installed onnxruntime (recorded: onnxruntime-gpu carries the CUDA provider)."""
    for name in ("onnxruntime-gpu", "onnxruntime", "onnxruntime-directml", "onnxruntime-openvino"):
        if package_version(name):
            return f"{name} {package_version(name)}"
    return None


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
