"""Environment variables that override a GPU backend's TF32 setting, refused where they contradict the table.

A table records the math mode it was timed in (`tf32` off: strict fp32). Two variables change that mode behind the
backend's back, so the label would be wrong:

- `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE` (torch): when true, torch's cuBLAS handles use TF32 for fp32 matmuls whatever
  `torch.backends.cuda.matmul.allow_tf32` and `float32_matmul_precision` say. A strict-fp32 torch-cuda table
  cannot be timed under it.
- `NVIDIA_TF32_OVERRIDE=0` (CUDA libraries and TensorRT): disables TF32 in cuBLAS, cuDNN and TensorRT's builder
  whatever they are asked for, so a table asked to use TF32 would be timed in strict fp32.
"""

from __future__ import annotations

from collections.abc import Mapping

TORCH_OVERRIDE = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"
NVIDIA_OVERRIDE = "NVIDIA_TF32_OVERRIDE"
_TRUE = frozenset({"1", "on", "yes", "true", "y"})
"""The values c10's environment check reads as true."""


def torch_forces_tf32(environ: Mapping[str, str]) -> bool:
    return environ.get(TORCH_OVERRIDE, "").strip().lower() in _TRUE


def check_tf32_environment(
    backend: str, precision: str, tf32: bool, environ: Mapping[str, str], torch_matmuls: bool
) -> None:
    """Refuse, in one line naming the variable, a TF32 setting the environment would overrule. `torch_matmuls`: the
    backend's matmuls run through torch's cuBLAS handles (torch-cuda), so torch's override applies."""
    if torch_matmuls and precision == "fp32" and not tf32 and torch_forces_tf32(environ):
        raise ValueError(
            f"{TORCH_OVERRIDE}={environ[TORCH_OVERRIDE]} forces TF32 matmuls, so {backend} cannot time strict fp32: "
            f"unset {TORCH_OVERRIDE}, or profile with --tf32"
        )
    if tf32 and environ.get(NVIDIA_OVERRIDE, "").strip() == "0":
        raise ValueError(
            f"{NVIDIA_OVERRIDE}=0 disables TF32 in cuBLAS, cuDNN and TensorRT, so {backend} cannot time the --tf32 "
            f"asked for: unset {NVIDIA_OVERRIDE}, or profile without --tf32"
        )
