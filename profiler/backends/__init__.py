"""Backend registry: name -> class, imported lazily so a missing optional library only fails its own backend."""

from __future__ import annotations

import importlib
from typing import Any

from profiler.backends.base import Backend, BackendUnavailable, GpuProviderMissing

_BACKENDS: dict[str, str] = {
    "torch-cpu": "profiler.backends.torch_cpu:TorchCpuBackend",
    "torch-cuda": "profiler.backends.torch_cuda:TorchCudaBackend",
    "onnxruntime": "profiler.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "profiler.backends.tensorrt_backend:TensorRtBackend",
}


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def create_backend(name: str, precision: str, threads: int | None = None, **options: Any) -> Backend:
    """A backend whose options are checked and whose process-wide settings (threads, allocator, math modes) are
    applied, so its `environment()` records them."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(backend_names())}")
    module_name, class_name = _BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name} needs a library that is not installed: {exc}") from exc
    backend = getattr(module, class_name)(precision=precision, threads=threads, **options)
    backend.apply_process_settings()
    return backend


__all__ = ["Backend", "BackendUnavailable", "GpuProviderMissing", "backend_names", "create_backend"]
