"""Round trips of a pruned, compacted model: save_compact -> load_compact in a fresh process, and ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pruner import Pruner
from pruner.checkpoint import MANIFEST, WEIGHTS, load_compact, save_compact
from pruner.onnx_model import export_model_onnx, onnx_logits
from tests.pruner.small_models import batch, small_model, small_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pruned_small():
    model = small_model()
    p = Pruner(model, latency=small_table(), target_ratio=0.6, groups_per_step=3)
    seed = 0
    while not p.done:
        x, y = batch(seed)
        seed += 1
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        p.accumulate()
        p.step()
    small = p.compact().eval()
    assert small.model_dims != small_model().model_dims
    return small


def test_save_and_load_in_a_fresh_process_gives_the_same_logits(pruned_small, tmp_path):
    save_compact(pruned_small, tmp_path / "model")
    manifest = json.loads((tmp_path / "model" / MANIFEST).read_text())
    assert manifest["dims"] == pruned_small.model_dims.as_dict()
    x, _ = batch(7, n=4)
    np.save(tmp_path / "x.npy", x.numpy())
    script = (
        "import sys, numpy as np, torch; from pruner import load_compact; "
        "m = load_compact(sys.argv[1]); x = torch.from_numpy(np.load(sys.argv[2])); "
        "np.save(sys.argv[3], m(x).detach().numpy()); print(type(m).__module__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "profiler.vit"
    with torch.no_grad():
        expected = pruned_small(x).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-6)


def test_load_refuses_a_corrupted_weights_file(pruned_small, tmp_path):
    save_compact(pruned_small, tmp_path)
    blob = bytearray((tmp_path / WEIGHTS).read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum"):
        load_compact(tmp_path)
    with pytest.raises(FileNotFoundError, match="save_compact"):
        load_compact(tmp_path / "missing")


def test_onnx_export_runs_in_onnxruntime_with_the_same_logits(pruned_small, tmp_path):
    path = export_model_onnx(pruned_small, tmp_path / "model.onnx", batch=4)
    x, _ = batch(11, n=4)
    with torch.no_grad():
        expected = pruned_small(x).numpy()
    got = onnx_logits(path, x.numpy())
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
