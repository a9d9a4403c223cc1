"""The device fingerprint recorded in every table: what must match for the table to apply, and what is only recorded.

A latency table describes one machine and one software stack. `/proc/cpuinfo`'s model name alone ("AMD EPYC")
cannot tell two EPYC generations apart, yet they differ by tens of percent; family/model/stepping, the ISA
extensions that select kernels (AVX2, AVX-512 and its BF16/VNNI subsets, AMX) and the cache sizes do. For a GPU,
the name plus compute capability, memory and SM count identify the part without its UUID, and the power limit
caps what it can do. The software that chooses kernels (torch and its oneDNN/MKL, onnxruntime, CUDA, cuDNN,
TensorRT) and the math modes (TF32) belong to the fingerprint too: the same GPU with TF32 on is another device.

`match` holds those; `recorded` holds facts that help a reader but do not invalidate a table (core count, OS,
current clocks, malloc state).
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lut_server.table_compat import compatibility_mismatches

KERNEL_ISA_FLAGS: tuple[str, ...] = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "sve2",
)
"""CPU flags that change which kernels oneDNN, MKL, ATen and onnxruntime dispatch to (x86 and Arm)."""

KERNEL_ENV_VARS: tuple[str, ...] = (
    "ATEN_CPU_CAPABILITY",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
    "MKL_CBWR",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
)
"""Environment variables that override kernel selection or math modes; recorded in `match` when set."""

CPUINFO = Path("/proc/cpuinfo")
CPU_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


def _cpuinfo_first_block(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _int_or_text(value: str | None) -> int | str | None:
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        return value


def cpu_identity(cpuinfo_text: str | None = None, cache_dir: Path = CPU_CACHE_DIR) -> dict[str, Any]:
    """Vendor, family/model/stepping (or the Arm implementer/part), model name, kernel ISA flags, cache sizes."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = CPUINFO.read_text()
        except OSError:
            cpuinfo_text = ""
    info = _cpuinfo_first_block(cpuinfo_text)
    flags = set((info.get("flags") or info.get("Features") or "").split())
    identity: dict[str, Any] = {
        "vendor": info.get("vendor_id") or _int_or_text(info.get("CPU implementer")) or platform.machine(),
        "family": _int_or_text(info.get("cpu family")),
        "model": _int_or_text(info.get("model") if "model" in info else info.get("CPU part")),
        "stepping": _int_or_text(info.get("stepping") if "stepping" in info else info.get("CPU variant")),
        "model_name": info.get("model name") or platform.processor() or platform.machine(),
        "isa": {flag: flag in flags for flag in KERNEL_ISA_FLAGS},
    }
    identity.update(cache_sizes_kib(cache_dir))
    return identity


def cache_sizes_kib(cache_dir: Path = CPU_CACHE_DIR) -> dict[str, int]:
    """{"l1d_kib", "l2_kib", "l3_kib"}: one instance of each data/unified level, as sysfs reports it."""
    sizes: dict[str, int] = {}
    for index in sorted(cache_dir.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        match = re.fullmatch(r"(\d+)([KMG]?)", size)
        if not match:
            continue
        kib = int(match.group(1)) * {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 * 1024}[match.group(2)]
        sizes[f"l{level}{'d' if kind == 'Data' else ''}_kib"] = int(kib)
    return sizes


def kernel_env() -> dict[str, str]:
    return {name: os.environ[name] for name in KERNEL_ENV_VARS if name in os.environ}


def host_recorded() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
    }


def cpu_device(threads: int | None, recorded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fingerprint of a CPU backend's device: the CPU's identity and the thread count it was timed with."""
    cpu = cpu_identity()
    name = f"{cpu['model_name']} (family {cpu['family']} model {cpu['model']} stepping {cpu['stepping']})"
    return {
        "name": name,
        "kind": "cpu",
        "match": {"cpu": cpu, "threads": threads, "env": kernel_env()},
        "recorded": {**host_recorded(), **(recorded or {})},
    }


def gpu_device(properties: Mapping[str, Any], smi: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fingerprint of a GPU: identity without the UUID (name, compute capability, memory, SMs) and the power
    limit it runs under; driver and clocks are recorded (they move between runs without changing kernels)."""
    smi = dict(smi or {})
    match = {
        "gpu": {
            "name": properties["name"],
            "compute_capability": properties["compute_capability"],
            "memory_mib": properties["memory_mib"],
            "sm_count": properties["sm_count"],
        },
        "power_limit_w": _float_or_none(smi.pop("power.limit", None)),
        "max_sm_clock_mhz": _float_or_none(smi.pop("clocks.max.sm", None)),
        "env": kernel_env(),
        "host_cpu": cpu_identity()["model_name"],
    }
    return {
        "name": f"{properties['name']} (sm {properties['compute_capability']}, {properties['sm_count']} SMs)",
        "kind": "gpu",
        "match": match,
        "recorded": {**smi, **host_recorded()},
    }


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def torch_software(matmul_precision: bool = True) -> dict[str, Any]:
    """torch, the libraries it dispatches CPU kernels to, the CPU capability ATen chose and (`matmul_precision`) the
    fp32 matmul mode torch-cpu sets."""
    import torch

    config = torch.__config__.show()
    onednn = re.search(r"MKL-DNN v([\w.]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    return {
        "torch": torch.__version__,
        "onednn": onednn.group(1) if onednn else None,
        "mkl": mkl.group(1) if mkl else None,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **({"float32_matmul_precision": torch.get_float32_matmul_precision()} if matmul_precision else {}),
    }


def software(match: Mapping[str, Any], recorded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from profiler.environment import package_version

    return {
        "match": dict(match),
        "recorded": {
            "python": platform.python_version(),
            "vitlut": package_version("vitlut"),
            "numpy": package_version("numpy"),
            **(recorded or {}),
        },
    }


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted paths: {"cpu": {"isa": {"avx2": True}}} -> {"cpu.isa.avx2": True}."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def fingerprint_mismatches(table: Mapping[str, Any], here: Mapping[str, Any], recorded_only: bool = False) -> list[str]:
    """Every field of the compatibility key in which a table and this machine differ, one line each
    ("device.match.cpu.isa.avx512_bf16: table False, here True"); `here` holds this machine's `device` and
    `software` (a backend's `environment()`). A table without a fingerprint gets one line saying so.
    `recorded_only`: compare only the fields the table records (`here` describes more than the table's backend)."""
    if not (table.get("device") or {}).get("match"):
        return [f"device: the table records no fingerprint (only {(table.get('device') or {}).get('name')!r})"]
    on_this_machine = {**table, "device": here.get("device"), "software": here.get("software")}
    return compatibility_mismatches(table, on_this_machine, fields_of_a_only=recorded_only)


def summary_mismatches(summary: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """`fingerprint_mismatches` for a served table, known only by its summary (`GET /v1/tables/{id}/summary`)."""
    fingerprint = summary.get("fingerprint") or {}
    served = {
        "device": {
            "name": summary.get("device"),
            "kind": here["device"].get("kind"),
            "match": fingerprint.get("device"),
        },
        "software": {"match": fingerprint.get("software") or {}},
    }
    this_machine = {"device": {**here["device"], "name": summary.get("device")}, "software": here["software"]}
    return fingerprint_mismatches(served, this_machine)
