"""TensorRT: the module is exported to ONNX, built into an engine (cached) and timed with CUDA events.

Written against the TensorRT Python API of releases 10 and 11. TensorRT 11 builds every network strongly typed
(the FP16/BF16 builder flags are gone), so the precision is carried by the ONNX graph itself: the module is cast
to fp16/bf16 before export, and on TensorRT 10 the network is created with the STRONGLY_TYPED flag so both
releases build the same thing. fp32 clears the TF32 flag unless `allow_tf32` is set. 2:4 sparsity prunes the
Linear weights by magnitude before export and sets SPARSE_WEIGHTS.

Buffers are torch CUDA tensors bound by `data_ptr()`; the engine runs on a torch stream and is timed with
torch.cuda.Event on that stream, so no second CUDA binding is needed. Nothing here has been run on a GPU yet
(none was available while it was written): the pure parts (build plan, cache keys, sparsity) are tested on the CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from profiler.backends.base import PRECISIONS, Backend, BackendUnavailable
from profiler.engine_cache import EngineCache, cache_key, module_signature
from profiler.environment import package_version
from profiler.fingerprint import software
from profiler.onnx_export import DEFAULT_OPSET, EXPORTERS, export_onnx
from profiler.structured_sparsity import prune_2_4_
from profiler.timing import Runner

SPARSITIES: tuple[str, ...] = ("none", "2:4")
_TORCH_DTYPES: dict[str, torch.dtype] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class BuildPlan:
    """Everything about how an engine is built, decided without TensorRT (so it is testable without a GPU)."""

    onnx_precision: str  # the dtype the module is exported in; strongly typed networks keep it
    strongly_typed_flag: bool  # pass NetworkDefinitionCreationFlag.STRONGLY_TYPED (TensorRT 9/10)
    set_flags: tuple[str, ...]  # trt.BuilderFlag names
    clear_flags: tuple[str, ...]
    workspace_bytes: int
    optimization_level: int
    prune_2_4: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_plan(
    precision: str,
    sparsity: str = "none",
    trt_major: int = 10,
    allow_tf32: bool = False,
    workspace_gib: float = 4.0,
    optimization_level: int = 3,
) -> BuildPlan:
    if precision not in TensorRtBackend.precisions:
        raise ValueError(f"tensorrt precision must be one of {list(TensorRtBackend.precisions)}, got {precision!r}")
    if sparsity not in SPARSITIES:
        raise ValueError(f"sparsity must be one of {list(SPARSITIES)}, got {sparsity!r}")
    if trt_major < 9:
        raise ValueError(f"TensorRT {trt_major} is not supported; strongly typed networks need TensorRT >= 9")
    if not 0 <= optimization_level <= 5:
        raise ValueError(f"optimization_level must be 0..5, got {optimization_level}")
    if workspace_gib <= 0:
        raise ValueError(f"workspace_gib must be > 0, got {workspace_gib}")
    sparse = sparsity == "2:4"
    return BuildPlan(
        onnx_precision=precision,
        strongly_typed_flag=trt_major < 11,  # always on and the flag deprecated from TensorRT 11
        set_flags=("SPARSE_WEIGHTS",) if sparse else (),
        clear_flags=("TF32",) if precision == "fp32" and not allow_tf32 else (),
        workspace_bytes=int(workspace_gib * 2**30),
        optimization_level=optimization_level,
        prune_2_4=sparse,
    )


def trt_major_version(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise ValueError(f"cannot read a TensorRT major version from {version!r}") from None


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:  # includes a missing libnvinfer behind the bindings
        raise BackendUnavailable(
            f"tensorrt is not importable ({exc}); install tensorrt-cu12 (or -cu13) on a machine with an NVIDIA GPU"
        ) from exc
    return trt


class TensorRtBackend(Backend):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "bf16")

    def __init__(
        self,
        precision: str = "fp16",
        threads: int | None = None,
        sparsity: str = "none",
        allow_tf32: bool = False,
        workspace_gib: float = 4.0,
        optimization_level: int = 3,
        exporter: str = "torchscript",
        opset: int = DEFAULT_OPSET,
        engine_cache: str | Path | None = None,
        **options: Any,
    ):
        if exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
        super().__init__(
            precision, threads, sparsity=sparsity, allow_tf32=bool(allow_tf32), workspace_gib=float(workspace_gib),
            optimization_level=int(optimization_level), exporter=exporter, opset=int(opset), **options,
        )  # fmt: skip
        build_plan(precision, sparsity, 10, allow_tf32, workspace_gib, optimization_level)  # reject bad settings now
        if not torch.cuda.is_available():
            raise BackendUnavailable("tensorrt needs an NVIDIA GPU and a CUDA build of torch; none is available here")
        self.trt = _import_tensorrt()
        self.plan = build_plan(
            precision, sparsity, trt_major_version(self.trt.__version__), allow_tf32, workspace_gib, optimization_level
        )
        self.exporter, self.opset = exporter, int(opset)
        self.cache = EngineCache(engine_cache)  # a local path: not part of the recorded settings
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.stream = torch.cuda.Stream(self.device)
        self.engines_built = 0
        self.engines_reused = 0

    def versions(self) -> dict[str, Any]:
        props = torch.cuda.get_device_properties(self.device)
        return {"tensorrt": self.trt.__version__, "gpu": props.name, "compute_capability": [props.major, props.minor]}

    def engine_bytes(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> bytes:
        """The serialized engine for this module: from the cache, or built from its ONNX graph and cached."""
        dtype = PRECISIONS[self.plan.onnx_precision]
        module = module.eval().to(dtype=dtype)
        inputs = tuple(x.to(dtype=dtype) if x.is_floating_point() else x for x in inputs)
        build = {**self.plan.as_dict(), "exporter": self.exporter, "opset": self.opset}
        key = cache_key(module_signature(module, inputs), build, self.versions())
        cached = self.cache.get(key)
        if cached is not None:
            self.engines_reused += 1
            return cached
        if self.plan.prune_2_4:
            prune_2_4_(module)
        graph = export_onnx(module, inputs, exporter=self.exporter, opset=self.opset)  # type: ignore[arg-type]
        engine = self._build(graph.model)
        self.cache.put(key, engine)
        self.engines_built += 1
        return engine

    def _build(self, onnx_model: bytes) -> bytes:
        trt, plan = self.trt, self.plan
        builder = trt.Builder(self.logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed_flag else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_model):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
        config.builder_optimization_level = plan.optimization_level
        for name in plan.set_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in plan.clear_flags:
            config.clear_flag(getattr(trt.BuilderFlag, name))
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
        return bytes(serialized)

    def prepare(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Runner:
        trt = self.trt
        engine = self.runtime.deserialize_cuda_engine(self.engine_bytes(module, inputs))
        if engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (version or GPU mismatch?)")
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        feeds = {f"input{i}": x for i, x in enumerate(inputs)}  # export_onnx's names, kept by the ONNX parser
        buffers: list[Tensor] = []
        for name in names:
            dtype = _TORCH_DTYPES[engine.get_tensor_dtype(name).name]
            shape = tuple(engine.get_tensor_shape(name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                tensor = feeds[name].to(device=self.device, dtype=dtype).reshape(shape).contiguous()
            else:
                tensor = torch.empty(shape, dtype=dtype, device=self.device)
            context.set_tensor_address(name, tensor.data_ptr())
            buffers.append(tensor)
        stream = self.stream
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(self.device)  # inputs copied before the first timed launch

        def run(iterations: int) -> float:
            start.record(stream)
            for _ in range(iterations):
                if not context.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
            end.record(stream)
            end.synchronize()
            return float(start.elapsed_time(end))

        run.keepalive = (engine, context, buffers)  # type: ignore[attr-defined]  # bindings point into these
        return run

    def environment(self) -> dict[str, dict[str, Any]]:
        from profiler.backends.torch_cuda import cuda_device, cuda_software

        match = {**cuda_software(), "tensorrt": self.trt.__version__, "onnx": package_version("onnx")}
        return {"device": cuda_device(self.device), "software": software(match, {"build_plan": self.plan.as_dict()})}
