"""Which physical GPU a CUDA backend times on, and its fingerprint.

nvidia-smi lists every GPU of the machine in PCI order, while CUDA numbers only the visible ones
(CUDA_VISIBLE_DEVICES, in the order it gives, by index or UUID). Reading nvidia-smi's first line records another
GPU's clocks, P-state and power limit on a sharded run, so the row is chosen by the device's UUID as CUDA reports
it, or else through the CUDA_VISIBLE_DEVICES mapping.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any

from profiler.fingerprint import gpu_device

SMI_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "pci.bus_id",
    "driver_version",
    "clocks.sm",
    "clocks.mem",
    "clocks.max.sm",
    "power.limit",
    "pstate",
)


def parse_nvidia_smi(text: str, fields: Sequence[str] = SMI_FIELDS) -> list[dict[str, str]]:
    """Rows of `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` as dicts of stripped strings."""
    rows = []
    for line in text.splitlines():
        if line.strip():
            rows.append(dict(zip(fields, (v.strip() for v in line.split(",")), strict=False)))
    return rows


def _normal_uuid(value: str) -> str:
    value = value.strip().lower()
    return value[4:] if value.startswith("gpu-") else value


def visible_gpu_row(
    rows: list[dict[str, str]], uuid: str | None, ordinal: int, cuda_visible_devices: str | None
) -> dict[str, str] | None:
    """The nvidia-smi row of CUDA device `ordinal`: by UUID when known, else by the CUDA_VISIBLE_DEVICES entry
    (an index or a UUID prefix), else the only GPU. None when it cannot be told which row it is."""
    if uuid:
        wanted = _normal_uuid(uuid)
        return next((row for row in rows if _normal_uuid(row.get("uuid", "")) == wanted), None)
    if cuda_visible_devices:
        entries = [e.strip() for e in cuda_visible_devices.split(",") if e.strip()]
        if ordinal >= len(entries):
            return None
        entry = entries[ordinal]
        if entry.isdigit():
            return next((row for row in rows if row.get("index") == entry), None)
        prefix = _normal_uuid(entry)
        matches = [row for row in rows if _normal_uuid(row.get("uuid", "")).startswith(prefix)]
        return matches[0] if len(matches) == 1 else None
    return rows[0] if len(rows) == 1 else None


def every_gpu_hidden(visible: str | None) -> bool:
    """CUDA_VISIBLE_DEVICES hides every GPU: set but empty, or its first entry is no device ("-1" by convention;
    CUDA stops at the first invalid entry). nvidia-smi still lists them, so a listing alone does not say a GPU is
    meant to be used."""
    if visible is None:
        return False
    first = visible.split(",")[0].strip()
    return first == "" or first.startswith("-")


def nvidia_smi_facts(uuid: str | None, ordinal: int) -> dict[str, Any]:
    """Driver, clocks, power limit and P-state of the visible GPU (empty where nvidia-smi is absent or the GPU
    cannot be identified: an unknown row is better than another GPU's)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    row = visible_gpu_row(parse_nvidia_smi(out), uuid, ordinal, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return dict(row) if row else {}


def gpu_identity(props: Any) -> dict[str, Any]:
    """What tells GPUs apart, from torch's device properties: name, compute capability, memory and SM count (a
    cut-down or MIG-partitioned part shares the name and capability). A table's device and a TensorRT engine's
    cache key both name the GPU by it."""
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_mib": int(props.total_memory // 2**20),
        "sm_count": props.multi_processor_count,
    }


def cuda_device(device: Any = None) -> dict[str, Any]:
    """The fingerprint of the GPU a CUDA backend times on (every CUDA backend records it this way)."""
    import torch

    index = torch.device(device).index if isinstance(device, torch.device | str) else device
    index = torch.cuda.current_device() if index is None else index
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "") or None
    return gpu_device(gpu_identity(props), nvidia_smi_facts(uuid, index))


def compute_capability(device: Any = None) -> tuple[int, int]:
    import torch

    props = torch.cuda.get_device_properties(device if device is not None else torch.cuda.current_device())
    return props.major, props.minor


def require_bf16(backend: str, capability: tuple[int, int]) -> None:
    """bf16 tensor cores start with Ampere (sm 8.0); below it a bf16 table would time emulation or fail."""
    from profiler.backends.base import BackendUnavailable

    if capability < (8, 0):
        raise BackendUnavailable(
            f"{backend} bf16 needs compute capability 8.0 or later (Ampere); this GPU is "
            f"{capability[0]}.{capability[1]}: profile fp16 or fp32"
        )


VOLTA_INSTALL = (
    "install a torch built for it (for Volta, sm 7.0: a torch<2.8 CUDA 12.6 wheel, "
    "pip install 'torch<2.8' --index-url https://download.pytorch.org/whl/cu126), "
    "or use the Volta image docker/profiler-gpu-volta.Dockerfile"
)


def _arch_capability(arch: str) -> tuple[int, int] | None:
    """(major, minor) of an arch-list entry such as sm_70, sm_90a or compute_80; None for one it cannot read."""
    digits = arch.split("_", 1)[1].rstrip("abf") if "_" in arch else ""
    if len(digits) < 2 or not digits.isdigit():
        return None
    return int(digits[:-1]), int(digits[-1])


def torch_runs_on(capability: tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether torch's kernels load on a GPU of this compute capability: its arch list has the capability's own
    cubin (sm_XY), a cubin of the same major at or below it (binary compatible within a major), or PTX (compute_XY)
    at or below it that the driver can compile. Anything else fails at the first kernel with "no kernel image is
    available for execution on the device" (a CUDA 12.8+ wheel dropped sm_70, for instance)."""
    for arch in arch_list:
        arch_cc = _arch_capability(arch)
        if arch_cc is None or arch_cc > capability:
            continue
        if arch.startswith("compute_") or (arch.startswith("sm_") and arch_cc[0] == capability[0]):
            return True
    return False


def require_torch_kernels(backend: str, capability: tuple[int, int], arch_list: Sequence[str]) -> None:
    """Refuse in one line, naming what to install, a GPU this torch build has no kernels for (every CUDA backend
    runs modules through torch on the GPU: to time them, or to fill their buffers)."""
    from profiler.backends.base import BackendUnavailable

    if not torch_runs_on(capability, arch_list):
        raise BackendUnavailable(
            f"{backend}: this torch has no kernels for compute capability {capability[0]}.{capability[1]} "
            f"(it is built for {' '.join(arch_list) or 'no GPU architecture'}); {VOLTA_INSTALL}"
        )


def require_supported_gpu(backend: str, device: Any = None) -> None:
    """require_torch_kernels for the current (or given) CUDA device."""
    import torch

    require_torch_kernels(backend, compute_capability(device), torch.cuda.get_arch_list())
