"""TensorRT: each stage is exported to ONNX, built into an engine (cached) and timed with CUDA events.

Written against the TensorRT Python API of releases 8.6, 10 and 11 (tensorrt_support.py says which GPUs each
builds for and how it takes the precision). The module is cast to the table's precision and exported on the GPU;
strongly typed networks keep the graph's types, builder-flag networks (TensorRT 8.6, or `typing=flags` on 9/10)
are allowed FP16/BF16 kernels by flag. TF32 is set or cleared explicitly (`tf32` option, off by default). 2:4
sparsity prunes the Linear weights by magnitude before export and sets SPARSE_WEIGHTS.

A pipeline is one engine per stage, chained through device buffers (a stage reads the very buffer an earlier one
wrote: no pass-through copies) and launched back to back on one stream with CUDA events between them. A block is
split as attn | mlp (`block_stages`): attention is one engine, so TensorRT can fuse scores, softmax and values,
and only the residual stream passes between engines, as inside the block. `doctor` reports what remains of the
split against the whole block as one engine. Buffers are torch CUDA tensors bound
by `data_ptr()`. None of this has run on a GPU (docs/gpu.md); the pure parts are tested on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from profiler.backends.base import Backend, BackendUnavailable
from profiler.backends.cuda_device import compute_capability, cuda_device, gpu_identity, require_supported_gpu
from profiler.backends.options import OptionSpec
from profiler.backends.runners import CudaEventRunner
from profiler.backends.tensorrt_io import bind_stage, checked_launch, set_addresses
from profiler.backends.tensorrt_support import TYPINGS, check_sparsity, check_target, parse_version, resolve_typing
from profiler.backends.tf32_environment import check_tf32_environment
from profiler.backends.torch_cuda import cuda_versions
from profiler.engine_cache import EngineCache, cache_key, graph_signature
from profiler.environment import package_version
from profiler.fingerprint import software
from profiler.onnx_export import EXPORTERS, OnnxGraph, export_onnx, resolve_opset
from profiler.structured_sparsity import prune_2_4_
from profiler.timing import Runner
from profiler.workload import FUSED_ATTENTION, initial_state, stage_inputs, stage_io

SPARSITIES: tuple[str, ...] = ("none", "2:4")
_TORCH_DTYPES: dict[str, torch.dtype] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}
_PRECISION_FLAG = {"fp16": "FP16", "bf16": "BF16"}


@dataclass(frozen=True)
class BuildPlan:
    """Everything about how an engine is built, decided without TensorRT (so it is testable without a GPU)."""

    onnx_precision: str  # the dtype the module is exported in
    typing: str  # "strong": the graph's types are kept; "flags": builder flags allow reduced precision
    network_flags: tuple[str, ...]  # trt.NetworkDefinitionCreationFlag names
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
    trt_version: str = "10.13",
    tf32: bool = False,
    workspace_gib: float = 4.0,
    optimization_level: int = 3,
    typing: str = "auto",
) -> BuildPlan:
    if precision not in TensorRtBackend.precisions:
        raise ValueError(f"tensorrt precision must be one of {list(TensorRtBackend.precisions)}, got {precision!r}")
    if sparsity not in SPARSITIES:
        raise ValueError(f"sparsity must be one of {list(SPARSITIES)}, got {sparsity!r}")
    if not 0 <= optimization_level <= 5:
        raise ValueError(f"optimization_level must be 0..5, got {optimization_level}")
    if workspace_gib <= 0:
        raise ValueError(f"workspace_gib must be > 0, got {workspace_gib}")
    trt = parse_version(trt_version)
    if trt < (8, 6):
        raise ValueError(f"TensorRT {trt_version} is not supported; use 8.6 or later")
    mode = resolve_typing(typing, trt)
    if precision == "bf16" and trt < (9, 0):
        raise ValueError(f"TensorRT {trt_version} has no bf16")
    network_flags: tuple[str, ...] = ()
    if trt < (10, 0):
        network_flags += ("EXPLICIT_BATCH",)  # implicit batch is gone from TensorRT 10 on
    if mode == "strong" and trt < (11, 0):
        network_flags += ("STRONGLY_TYPED",)  # always on, the flag deprecated, from TensorRT 11
    set_flags: list[str] = []
    if mode == "flags" and precision in _PRECISION_FLAG:
        set_flags.append(_PRECISION_FLAG[precision])
    if sparsity == "2:4":
        set_flags.append("SPARSE_WEIGHTS")
    if tf32:
        set_flags.append("TF32")
    return BuildPlan(
        onnx_precision=precision,
        typing=mode,
        network_flags=network_flags,
        set_flags=tuple(set_flags),
        clear_flags=() if tf32 else ("TF32",),  # TF32 is on by default in a builder config
        workspace_bytes=int(workspace_gib * 2**30),
        optimization_level=optimization_level,
        prune_2_4=sparsity == "2:4",
    )


def engine_target(trt_version: str, props: Any) -> dict[str, Any]:
    """What a serialized engine is bound to, for its cache key: the TensorRT version and the GPU as the table's
    device names it (gpu_identity). Tactics are chosen for the SM count and memory too, so two parts sharing a name
    and compute capability (a cut-down or MIG-partitioned GPU, a 40 and an 80 GB card) do not share engines."""
    return {"tensorrt": trt_version, "gpu": gpu_identity(props)}


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:  # includes a missing libnvinfer behind the bindings
        raise BackendUnavailable(
            f"tensorrt is not importable ({exc}); install tensorrt-cu12 on a machine with an NVIDIA GPU"
        ) from exc
    return trt


class TensorRtBackend(Backend):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "bf16")
    option_specs = (
        OptionSpec("sparsity", str, "none", "2:4 structured weights (Ampere and later)", allowed=SPARSITIES),
        OptionSpec("tf32", bool, False, "let fp32 layers use TF32 tensor cores"),
        OptionSpec("typing", str, "auto", "strongly typed network or builder precision flags", allowed=TYPINGS),
        OptionSpec("workspace_gib", float, 4.0, "builder workspace limit", bounds=(0.0625, None)),
        OptionSpec("optimization_level", int, 3, "builder optimization level", bounds=(0, 5)),
        OptionSpec("exporter", str, "torchscript", "torch's ONNX exporter", allowed=EXPORTERS),
        OptionSpec("opset", int, None, "ONNX opset of the exported graph (default 17, bf16: 22)", bounds=(17, None)),
        OptionSpec("engine_cache", str, None, "engine cache directory (default: see engine_cache.py)", recorded=False),
    )

    def __init__(self, precision: str = "fp16", threads: int | None = None, **options: Any):
        if options.get("engine_cache") is not None:
            options["engine_cache"] = str(options["engine_cache"])
        super().__init__(precision, threads, **options)
        o = self.options
        o["opset"] = resolve_opset(self.dtype, o["opset"])  # recorded as used; refused before a GPU is looked for
        build_plan(precision, o["sparsity"], "10.13", o["tf32"], o["workspace_gib"], o["optimization_level"])
        check_tf32_environment(self.name, precision, o["tf32"], os.environ, torch_matmuls=False)
        if not torch.cuda.is_available():
            package = "" if importlib.util.find_spec("tensorrt") else "; the tensorrt package is not installed either"
            raise BackendUnavailable(
                f"tensorrt needs an NVIDIA GPU and a CUDA build of torch; none is available here{package}"
            )
        self.trt = _import_tensorrt()
        self.device = torch.device("cuda", torch.cuda.current_device())
        require_supported_gpu(self.name, self.device)
        check_target(self.trt.__version__, compute_capability(self.device), precision)
        check_sparsity(o["sparsity"], compute_capability(self.device), precision, o["tf32"])
        self.plan = build_plan(
            precision, o["sparsity"], self.trt.__version__, o["tf32"], o["workspace_gib"], o["optimization_level"],
            o["typing"],
        )  # fmt: skip
        self.cache = EngineCache(o["engine_cache"])
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self.stream = torch.cuda.Stream(self.device)
        self.engines_built = 0

    @property
    def stage_timing(self) -> str:
        return "in-context-chained-engines"

    @property
    def block_stages(self) -> tuple[str, ...]:
        return FUSED_ATTENTION  # TensorRT fuses MatMul-Softmax-MatMul attention

    def versions(self) -> dict[str, Any]:
        return engine_target(self.trt.__version__, torch.cuda.get_device_properties(self.device))

    def engine_bytes(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[bytes, OnnxGraph]:
        """The serialized engine for this module (on the GPU, in the plan's precision), from the cache, keyed by
        the exported graph's structure, or built and cached; and the graph (its I/O names name the engine's)."""
        if self.plan.prune_2_4:
            prune_2_4_(module)
        graph = export_onnx(module, inputs, exporter=self.options["exporter"], opset=self.options["opset"])
        build = {**self.plan.as_dict(), "exporter": self.options["exporter"], "opset": self.options["opset"]}
        key = cache_key(graph_signature(graph.model), build, self.versions())
        cached = self.cache.get(key)
        if cached is not None:
            return cached, graph
        engine = self._build(graph.model)
        self.cache.put(key, engine)
        self.engines_built += 1
        return engine, graph

    def _build(self, onnx_model: bytes) -> bytes:
        trt, plan = self.trt, self.plan
        builder = trt.Builder(self.logger)
        flags = 0
        for name in plan.network_flags:
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
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

    def _pipeline_runner(self, stages: list[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        dtype = self.dtype
        stages = [stage.eval().to(device=self.device, dtype=dtype) for stage in stages]
        inputs = tuple(x.to(device=self.device, dtype=dtype if x.is_floating_point() else x.dtype) for x in inputs)
        examples = stage_inputs(stages, inputs)  # one run on the GPU, for the graphs' shapes
        state = {name: x.contiguous() for name, x in initial_state(stages, inputs).items()}
        engines, contexts, buffers = [], [], []
        for stage, example in zip(stages, examples, strict=True):
            serialized, graph = self.engine_bytes(stage, example)
            engine = self.runtime.deserialize_cuda_engine(serialized)
            if engine is None:
                raise RuntimeError("TensorRT could not deserialize the engine (version or GPU mismatch?)")
            context = engine.create_execution_context()
            reads, writes = stage_io(stage)
            tensors = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            modes = [(name, engine.get_tensor_mode(name).name) for name in tensors]

            def allocate(name: str, engine: Any = engine) -> Tensor:
                dtype_of = _TORCH_DTYPES[engine.get_tensor_dtype(name).name]
                return torch.empty(tuple(engine.get_tensor_shape(name)), dtype=dtype_of, device=self.device)

            bound = bind_stage(modes, graph.input_names, graph.output_names, reads, writes, state, allocate)
            for name, tensor in bound.items():
                dtype_of = _TORCH_DTYPES[engine.get_tensor_dtype(name).name]
                shape = tuple(engine.get_tensor_shape(name))
                if tensor.dtype != dtype_of or tuple(tensor.shape) != shape:
                    raise RuntimeError(f"engine tensor {name} wants {dtype_of} {shape}, the pipeline has "
                                       f"{tensor.dtype} {tuple(tensor.shape)}")  # fmt: skip
            set_addresses(context.set_tensor_address, {name: tensor.data_ptr() for name, tensor in bound.items()})
            engines.append(engine)
            contexts.append(context)
            buffers.append(bound)  # a later stage replaces a name (x) in `state`; the engine still reads this one
        stream = self.stream
        torch.cuda.synchronize(self.device)  # inputs in place before the first timed launch
        steps = [checked_launch(context.execute_async_v3, stream.cuda_stream) for context in contexts]
        # buffers are bound by address: the runner keeps the engines, contexts and every bound buffer alive
        return CudaEventRunner(steps, stream, resources=(engines, contexts, buffers))

    def environment(self) -> dict[str, dict[str, Any]]:
        return {
            "device": cuda_device(self.device),
            "software": software(tensorrt_software_match(self.trt.__version__, self.plan),
                                 {"build_plan": self.plan.as_dict()}),
        }  # fmt: skip


def tensorrt_software_match(trt_version: str, plan: BuildPlan) -> dict[str, Any]:
    """What a TensorRT table must match: the exporter (torch, onnx), CUDA, TensorRT and the math mode TensorRT is
    built with (typing, TF32 and precision flags). torch's own math modes (its TF32 flags) choose torch's kernels,
    not TensorRT's, so they are left out."""
    return {
        **cuda_versions(),
        "tensorrt": trt_version,
        "onnx": package_version("onnx"),
        "tensorrt_typing": plan.typing,
        "tensorrt_tf32": "TF32" in plan.set_flags,
        "tensorrt_builder_flags": list(plan.set_flags),
    }
