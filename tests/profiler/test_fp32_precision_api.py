"""torch-cuda sets and records TF32 through torch's per-backend `fp32_precision` API where torch has it.

Once that API has been used in a process (`torch.backends.fp32_precision = "tf32"` by a training script, say),
reading the legacy flags (`cudnn.allow_tf32`, `get_float32_matmul_precision`) raises "mix of the legacy and new
APIs". The settings are process-wide flags that CPU torch holds too, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from profiler.backends.torch_cuda import fp32_precision_api

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys, torch
from profiler.backends.torch_cuda import apply_torch_cuda_math_modes, cuda_software, torch_cuda_math_modes
exec(sys.argv[1])
recorded = {}
for tf32 in (False, True):
    apply_torch_cuda_math_modes(torch_cuda_math_modes(tf32))
    recorded[str(tf32)] = cuda_software()
print(json.dumps(recorded))
"""


@pytest.mark.skipif(not fp32_precision_api(), reason=f"torch {torch.__version__} has no fp32_precision API")
@pytest.mark.parametrize(
    "preset",
    [
        'torch.backends.fp32_precision = "tf32"',
        'torch.backends.cudnn.fp32_precision = "tf32"',
        'torch.set_float32_matmul_precision("high"); torch.backends.cudnn.allow_tf32 = True',
    ],
)
def test_torch_cuda_math_modes_apply_and_record_after_either_api(preset: str) -> None:
    run = subprocess.run([sys.executable, "-c", SCRIPT, preset], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-1500:]
    recorded = json.loads(run.stdout.splitlines()[-1])
    for tf32, mode in (("False", "ieee"), ("True", "tf32")):
        assert recorded[tf32]["cuda_matmul_fp32_precision"] == mode
        assert recorded[tf32]["cudnn_conv_fp32_precision"] == mode
        assert "cudnn_allow_tf32" not in recorded[tf32] and "float32_matmul_precision" not in recorded[tf32]
