"""A graph at an opset the installed onnx does not know is refused in one line before anything is exported.

bf16 graphs are converted to opset 22, which onnx 1.17 is the first release to know (1.16 stops at 21): with an
older onnx the version converter fails mid-sweep. Every place that installs onnx asks for 1.17 or later, and the
refusal names that requirement. An older onnx is simulated by what `onnx.defs.onnx_opset_version` reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import onnx.defs
import onnx.helper
import pytest
import torch

from profiler.backends import create_backend
from profiler.backends.tensorrt_backend import TensorRtBackend
from profiler.cli import main
from profiler.onnx_export import BF16_MIN_OPSET, ONNX_REQUIREMENT, export_onnx, resolve_opset
from tests.pruner.small_models import CONFIG, small_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def onnx_1_16(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnx 1.16's newest opset, as onnx.helper.VERSION_TABLE lists it."""
    monkeypatch.setattr(onnx.defs, "onnx_opset_version", lambda: 21)


def test_onnx_1_17_is_the_first_release_that_knows_the_bf16_opset() -> None:
    opsets = {release: opset for release, _ir, opset, *_ in onnx.helper.VERSION_TABLE}
    assert ONNX_REQUIREMENT == "onnx>=1.17"
    assert opsets["1.17.0"] == BF16_MIN_OPSET and opsets["1.16.2"] == BF16_MIN_OPSET - 1


def test_every_install_of_onnx_asks_for_1_17_or_later() -> None:
    sources = [ROOT / "pyproject.toml", *sorted((ROOT / "docker").glob("*.Dockerfile"))]
    found = {path.name: re.findall(r'"onnx(>=[^"]*)"', path.read_text()) for path in sources}
    assert found["pyproject.toml"] == [">=1.17"]  # the profiler extra, which the Volta image installs
    assert found["profiler-gpu.Dockerfile"] == [">=1.17"]  # the NVIDIA image installs its packages by hand
    assert all(spec == ">=1.17" for specs in found.values() for spec in specs)


def test_a_bf16_export_is_refused_in_one_line_by_an_onnx_that_stops_below_22(onnx_1_16) -> None:
    model = small_model(dtype=torch.bfloat16).eval()
    images = torch.zeros(1, CONFIG.in_chans, CONFIG.image_size, CONFIG.image_size, dtype=torch.bfloat16)
    with pytest.raises(ValueError) as refused:
        export_onnx(model, (images,))
    message = str(refused.value)
    assert "\n" not in message and "up to 21" in message and "opset 22" in message and ONNX_REQUIREMENT in message
    fp32 = small_model(dtype=torch.float32).eval()
    assert export_onnx(fp32, (images.float(),)).opset == 17  # opset 17 is known: exported as before


def test_tensorrt_bf16_is_refused_before_any_gpu_is_looked_for(onnx_1_16) -> None:
    assert resolve_opset(torch.float16, None) == 17
    with pytest.raises(ValueError, match=re.escape(ONNX_REQUIREMENT)):
        resolve_opset(torch.bfloat16, None)
    with pytest.raises(ValueError, match=f"knows ONNX opsets up to 21.*{re.escape(ONNX_REQUIREMENT)}"):
        TensorRtBackend("bf16")


def test_onnxruntime_refuses_an_opset_the_installed_onnx_does_not_know(onnx_1_16) -> None:
    with pytest.raises(ValueError, match="exported at opset 23: upgrade onnx"):
        create_backend("onnxruntime", "fp32", 1, provider="cpu", opset=23)
    assert create_backend("onnxruntime", "fp32", 1, provider="cpu", opset=21).opset == 21


def test_the_cli_exits_2_in_one_line_without_a_traceback(onnx_1_16, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t.json"
    code = main(["profile", "--backend", "tensorrt", "--precision", "bf16", "--grid", "tiny", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert len(err.splitlines()) == 1 and ONNX_REQUIREMENT in err and "Traceback" not in err
