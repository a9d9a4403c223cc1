"""from_timm against REAL timm: identical logits for ViT, DeiT-distilled and a LayerScale ViT.

timm needs torchvision, which does not load with the CPU torch build of .venv, so this test runs its check in
.venv-timm (registry torch + timm, created by scripts/setup_timm_venv.sh) with this repository on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMM_VENV = ROOT / os.environ.get("VITLUT_TIMM_VENV", ".venv-timm")
TIMM_PYTHON = TIMM_VENV / "bin" / "python"

CHECK = r"""
import json, sys, timm, torch
from pruner.timm_import import from_timm
from pruner import Pruner
torch.manual_seed(0)
results = {"timm": timm.__version__}
cases = {
    "deit_tiny": dict(model_name="deit_tiny_patch16_224", img_size=32, num_classes=7),
    "deit_tiny_distilled": dict(model_name="deit_tiny_distilled_patch16_224", img_size=32, num_classes=7),
    "vit_layerscale": dict(model_name="vit_small_patch16_224", img_size=48, num_classes=5, init_values=0.1, depth=3),
}
for name, kw in cases.items():
    theirs = timm.create_model(pretrained=False, **kw).eval()
    with torch.no_grad():  # random, non-trivial weights everywhere (timm zero-inits some biases)
        for p in theirs.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ours = from_timm(theirs)
    x = torch.randn(3, 3, kw["img_size"], kw["img_size"])
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    results[name] = {"max_abs_diff": float((a - b).abs().max()), "scale": float(ours.config.attn_scale),
                     "distilled": ours.config.distilled, "shape": list(b.shape), "logit_std": float(a.std())}
try:
    from_timm(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, global_pool="avg"))
except ValueError as exc:
    results["avg_pool_error"] = str(exc)
print(json.dumps(results))
"""


@pytest.mark.slow
def test_from_timm_gives_identical_logits_with_real_timm():
    if not TIMM_PYTHON.exists():
        reason = TIMM_VENV.with_name(TIMM_VENV.name + ".unavailable")
        why = reason.read_text().strip() if reason.exists() else "run scripts/setup_timm_venv.sh (make test does)"
        pytest.skip(f"{TIMM_VENV.name} is missing: {why}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(TIMM_PYTHON), "-c", CHECK], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["timm"] >= "1.0"
    for name in ("deit_tiny", "deit_tiny_distilled", "vit_layerscale"):
        r = results[name]
        assert r["logit_std"] > 1e-2, name  # the comparison is not between two near-zero outputs
        assert r["max_abs_diff"] < 1e-4, (name, r)
    assert results["deit_tiny_distilled"]["distilled"] is True
    assert results["deit_tiny"]["scale"] == pytest.approx(64**-0.5)
    assert results["deit_tiny"]["shape"] == [3, 7]
    assert "global_pool" in results["avg_pool_error"]
