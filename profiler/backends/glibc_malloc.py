"""Fixed glibc malloc thresholds, so an eager-torch inference reuses its activation memory instead of re-faulting it.

glibc serves large blocks with mmap below a threshold that it raises as blocks are freed, and returns the top of the
heap to the kernel once more than a trim threshold is free there. Which of those a run lands on depends on what the
process allocated before, so the same block can take a page fault on every 4 KiB of its activations on every call
or none at all: at batch 64 a block takes about 1,000 minor faults per call and up to 2x the stage time, switching
from one measurement to the next and between a pipeline and the whole model. Fixing both thresholds (the largest
mmap threshold glibc accepts, and a trim threshold it never reaches) keeps every activation below 32 MiB on the heap
and the heap mapped, which is the steady state a long-running CPU inference server reaches with jemalloc or
tcmalloc. PyTorch's CPU allocator is plain malloc, so this is the only knob short of preloading another allocator.
The settings are process-wide and cannot be undone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

ALLOCATORS = ("system", "steady")
"""`system`: glibc's defaults (dynamic thresholds) or whatever the platform does; `steady`: the fixed thresholds."""

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""glibc's upper limit for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); mallopt refuses more."""
TRIM_THRESHOLD_BYTES = 1 << 30
"""mallopt takes an int; 1 GiB of free heap top is never reached by the workloads a table times."""

_applied = False


def glibc_available() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def default_allocator() -> str:
    """What a new profile uses unless told otherwise: steady wherever glibc lets us set it."""
    return "steady" if glibc_available() else "system"


def make_malloc_steady() -> None:
    """Fix the thresholds for this process (idempotent); a clear error where it is not glibc."""
    global _applied
    if _applied:
        return
    if not glibc_available():
        raise ValueError(f"allocator 'steady' needs glibc's mallopt; this is {platform.system()} — use 'system'")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    for option, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        if libc.mallopt(ctypes.c_int(option), ctypes.c_int(value)) != 1:
            raise RuntimeError(f"glibc mallopt({option}, {value}) failed")
    _applied = True


def malloc_state() -> str:
    """What this process's allocator is now (recorded with the device facts of a table)."""
    return "steady" if _applied else "system"
