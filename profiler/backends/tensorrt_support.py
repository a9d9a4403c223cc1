"""Which TensorRT releases build for which GPUs, and how each release is told the precision.

From NVIDIA's release notes and support matrices: TensorRT 8.5 was the last release for Kepler and 8.6 builds for
compute capability 5.0 and later; 10.0-10.4 build for 7.0 (Volta) and later; 10.5 removed Volta, so 10.5 and
later, 11 included, need 7.5 (Turing) or later. bf16 needs 8.0 (Ampere) and TensorRT 9 or later.

Precision: TensorRT 8 has no strongly typed networks, so precision is chosen by builder flags (FP16/BF16) on a
graph exported in that precision; TensorRT 9 and 10 offer both, strongly typed by default here; TensorRT 11 removed
the FP16/BF16 flags and builds every network strongly typed.
"""

from __future__ import annotations

from profiler.backends.base import BackendUnavailable

V100_IMAGE = "docker/profiler-gpu-volta.Dockerfile"
"""The image for Volta: Python 3.12, torch before 2.8 and TensorRT 10.4 (docs/gpu.md). NVIDIA's PyTorch images
that ship TensorRT 10.4 or older have Python 3.10, below this package's minimum."""

SUPPORT: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    # (first TensorRT release of the range, lowest compute capability it builds for)
    ((8, 6), (5, 0)),
    ((9, 0), (7, 0)),
    ((10, 5), (7, 5)),
)
NEWEST_FOR: tuple[tuple[tuple[int, int], str], ...] = (
    # (compute capabilities below this, the newest TensorRT that still builds for them)
    ((7, 0), "8.6"),
    ((7, 5), "10.4 (or 8.6)"),
)
TYPINGS: tuple[str, ...] = ("auto", "strong", "flags")


def parse_version(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError(f"cannot read a TensorRT version from {version!r}") from None


def lowest_capability(trt: tuple[int, int]) -> tuple[int, int]:
    """The lowest compute capability TensorRT `trt` builds for."""
    if trt < SUPPORT[0][0]:
        raise ValueError(f"TensorRT {trt[0]}.{trt[1]} is not supported; use 8.6 or later")
    return [cc for first, cc in SUPPORT if trt >= first][-1]


def newest_release_for(capability: tuple[int, int]) -> str | None:
    """The newest TensorRT release that builds for `capability` (None: every supported release does)."""
    return next((release for below, release in NEWEST_FOR if capability < below), None)


def check_sparsity(sparsity: str, capability: tuple[int, int], precision: str, tf32: bool) -> None:
    """2:4 sparse kernels exist on Ampere (8.0) and later, in fp16, bf16, int8 or TF32 only: elsewhere the engine runs
    dense while the table would say sparse."""
    if sparsity == "none":
        return
    cc = f"{capability[0]}.{capability[1]}"
    if capability < (8, 0):
        raise BackendUnavailable(f"2:4 sparsity needs compute capability 8.0 or later (Ampere); this GPU is {cc}")
    if precision == "fp32" and not tf32:
        raise ValueError("2:4 sparse kernels do not run in strict fp32: use --precision fp16/bf16 or --tf32")


def check_target(trt_version: str, capability: tuple[int, int], precision: str) -> None:
    """Refuse, naming the release to use, a GPU or precision the installed TensorRT cannot build for."""
    trt = parse_version(trt_version)
    lowest = lowest_capability(trt)
    cc = f"{capability[0]}.{capability[1]}"
    if capability < lowest:
        hint = f" (for a V100, the image {V100_IMAGE} has it)" if capability == (7, 0) else ""
        raise BackendUnavailable(
            f"TensorRT {trt_version} does not build for compute capability {cc} (it needs {lowest[0]}.{lowest[1]} "
            f"or later); the newest TensorRT that does is {newest_release_for(capability)}{hint} (docs/gpu.md)"
        )
    if precision == "bf16" and capability < (8, 0):
        raise BackendUnavailable(f"bf16 needs compute capability 8.0 or later (Ampere); this GPU is {cc}")
    if precision == "bf16" and trt < (9, 0):
        raise BackendUnavailable(f"TensorRT {trt_version} has no bf16; it needs TensorRT 9 or later")


def resolve_typing(typing: str, trt: tuple[int, int]) -> str:
    """ "strong" (the graph's types are kept) or "flags" (builder flags allow reduced precision), for release `trt`."""
    if typing not in TYPINGS:
        raise ValueError(f"typing must be one of {list(TYPINGS)}, got {typing!r}")
    if typing == "auto":
        return "flags" if trt < (9, 0) else "strong"
    if typing == "strong" and trt < (9, 0):
        raise ValueError(f"TensorRT {trt[0]}.{trt[1]} has no strongly typed networks; use typing 'flags'")
    if typing == "flags" and trt >= (11, 0):
        raise ValueError("TensorRT 11 removed the precision builder flags; use typing 'strong'")
    return typing
