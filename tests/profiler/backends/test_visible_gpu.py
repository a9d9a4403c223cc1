"""The GPU whose clocks and power limit a table records is the one CUDA times on, chosen by identity."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from profiler.backends.cuda_device import SMI_FIELDS, nvidia_smi_facts, parse_nvidia_smi, visible_gpu_row

GPUS = [
    {"index": "0", "uuid": "GPU-aaaaaaaa-0000-0000-0000-000000000000", "power.limit": "300.00", "clocks.sm": "1410"},
    {"index": "1", "uuid": "GPU-bbbbbbbb-1111-1111-1111-111111111111", "power.limit": "250.00", "clocks.sm": "1200"},
    {"index": "2", "uuid": "GPU-cccccccc-2222-2222-2222-222222222222", "power.limit": "400.00", "clocks.sm": "1980"},
]


def _csv() -> str:
    return "\n".join(", ".join(gpu.get(field, "1") for field in SMI_FIELDS) for gpu in GPUS) + "\n"


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An `nvidia-smi` on PATH that prints three GPUs in PCI order, as the real one does for our query."""
    (tmp_path / "gpus.csv").write_text(_csv())
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat '{tmp_path / 'gpus.csv'}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_the_torch_uuid_picks_the_row(fake_nvidia_smi: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    facts = nvidia_smi_facts("cccccccc-2222-2222-2222-222222222222", ordinal=1)  # torch's uuid has no GPU- prefix
    assert facts["index"] == "2" and facts["power.limit"] == "400.00"


def test_cuda_visible_devices_maps_the_ordinal_without_a_uuid(
    fake_nvidia_smi: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    facts = nvidia_smi_facts(None, ordinal=0)
    assert facts["index"] == "2" and facts["clocks.sm"] == "1980"  # not the first GPU in PCI order
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")  # a UUID prefix, as CUDA accepts
    assert nvidia_smi_facts(None, ordinal=0)["index"] == "1"


def test_an_unidentifiable_gpu_records_nothing_rather_than_another_gpus_facts(
    fake_nvidia_smi: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvidia_smi_facts(None, ordinal=0) == {}  # three GPUs, no identity: unknown
    assert nvidia_smi_facts("GPU-dddddddd", ordinal=0) == {}


def test_parsing_and_a_single_gpu() -> None:
    rows = parse_nvidia_smi(_csv())
    assert [r["index"] for r in rows] == ["0", "1", "2"] and rows[1]["power.limit"] == "250.00"
    assert visible_gpu_row(rows[:1], None, 0, None) == rows[0]
    assert visible_gpu_row(rows, None, 1, "0") is None  # ordinal beyond the visible list
