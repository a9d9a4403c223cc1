"""`python -m pruner prune`: snapshots at each target, exact resume after SIGKILL, identical decisions under DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lut_server.dims import ModelDims
from lut_server.latency_table import LatencyTable
from tests.pruner.image_folder_data import IMAGE_SIZE, MODEL, PATCH_SIZE, make_image_folder, write_small_table

ROOT = Path(__file__).resolve().parents[2]


def subprocess_env() -> dict[str, str]:
    """This environment with one thread per process and the checkout first on the import path (kept: a
    PYTHONPATH that provides the dependencies stays behind it)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def prune_args(data: Path, table: Path, out: Path, *extra: str) -> list[str]:
    return [
        "prune", "--model", MODEL, "--data", str(data), "--out", str(out), "--table-file", str(table),
        "--image-size", str(IMAGE_SIZE), "--patch-size", str(PATCH_SIZE), "--batch-size", "8", "--epochs", "20",
        "--prune-every", "2", "--eval-images", "8", "--no-progress", "--seed", "3", *extra,
    ]  # fmt: skip


def run_pruner(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = subprocess_env()
    return subprocess.run(
        [sys.executable, "-m", "pruner", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    return make_image_folder(root / "data"), write_small_table(root / "table.json"), root


@pytest.fixture(scope="module")
def uninterrupted(workspace):
    data, table, root = workspace
    out = root / "full"
    result = run_pruner(prune_args(data, table, out, "--targets", "0.7,0.5"))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), out


@pytest.mark.slow
def test_two_targets_give_two_snapshots_that_load_in_a_fresh_process(workspace, uninterrupted):
    _, table, _ = workspace
    report, out = uninterrupted
    assert report["complete"] and report["targets"] == [0.7, 0.5]
    assert report["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert [s["target"] for s in report["snapshots"]] == [0.7, 0.5]
    assert report["steps"] >= 2 and report["original_predicted_ms"] > 0
    latency = LatencyTable.load(table)
    original = latency.model_latency(ModelDims.from_dict(report["original_dims"]))
    assert report["original_predicted_ms"] == pytest.approx(original)
    for snap in report["snapshots"]:
        assert snap["predicted_ms"] <= snap["target"] * report["original_predicted_ms"] * (1 + 1e-9)
        assert snap["predicted_ms"] == pytest.approx(latency.model_latency(ModelDims.from_dict(snap["dims"])))
        code = (
            "import json, sys; from pruner import load_compact; m = load_compact(sys.argv[1]); "
            "print(json.dumps(m.model_dims.as_dict()))"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", code, snap["path"]], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert loaded.returncode == 0, loaded.stderr
        assert json.loads(loaded.stdout) == snap["dims"]
    assert report["snapshots"][1]["predicted_ms"] < report["snapshots"][0]["predicted_ms"]
    assert (out / "latency_accuracy_dims.png").stat().st_size > 0


@pytest.mark.slow
def test_sigkill_after_two_steps_then_resume_ends_like_an_uninterrupted_run(workspace, uninterrupted):
    data, table, root = workspace
    full, _ = uninterrupted
    out = root / "killed"
    env = subprocess_env()
    args = prune_args(data, table, out, "--targets", "0.7,0.5")
    proc = subprocess.Popen([sys.executable, "-m", "pruner", *args], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    steps = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            steps = json.loads((out / "report.json").read_text())["steps"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            steps = 0
        if steps >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((out / "report.json").read_text())
    assert not killed_at["complete"] and killed_at["steps"] >= 2
    resumed = run_pruner([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_at_step"] >= 2
    assert report["final_dims"] == full["final_dims"]
    assert report["original_predicted_ms"] == full["original_predicted_ms"]
    assert [h["removed"] for h in report["history"]] == [h["removed"] for h in full["history"]]


def test_each_rank_takes_its_local_gpu_and_a_rank_beyond_the_nodes_gpus_is_refused_by_name(monkeypatch):
    from types import SimpleNamespace

    from pruner.prune_run import rank_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device(SimpleNamespace(device=None)) == torch.device("cuda", 1)
    assert rank_device(SimpleNamespace(device="cpu")) == torch.device("cpu")
    assert rank_device(SimpleNamespace(device="cuda")) == torch.device("cuda", 1)  # the rank's, not GPU 0 for all
    assert rank_device(SimpleNamespace(device="cuda:0")) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match=r"local rank 2 has no GPU: this node has 2; .*--nproc_per_node"):
        rank_device(SimpleNamespace(device=None))


@pytest.mark.slow
def test_torchrun_two_ranks_decide_identically_and_match_one_process(workspace):
    data, table, root = workspace
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    # two ranks need two GPUs; on a node with fewer, both runs train on the CPU (gloo), so they stay comparable
    on = () if torch.cuda.device_count() >= 2 else ("--device", "cpu")
    single, double = root / "one-process", root / "two-ranks"
    one = run_pruner(prune_args(data, table, single, "--target", "0.6", *on))
    assert one.returncode == 0, one.stderr[-3000:]
    env = subprocess_env()
    two = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "pruner",
         *prune_args(data, table, double, "--target", "0.6", *on)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    rank0 = json.loads((double / "decisions-rank0.json").read_text())
    rank1 = json.loads((double / "decisions-rank1.json").read_text())
    assert len(rank0) >= 2 and rank0 == rank1  # the same groups and gate checksums at every step
    report_two = json.loads((double / "report.json").read_text())
    report_one = json.loads((single / "report.json").read_text())
    assert report_two["world_size"] == 2
    assert report_two["final_dims"] == report_one["final_dims"]


@pytest.mark.slow
def test_torchrun_with_a_target_not_reached_lets_rank0_finish_its_files(workspace):
    """Rank 1 must not exit 3 (and have torchrun stop rank 0) before rank 0 has written its report and plots."""
    data, table, root = workspace
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    out = root / "two-ranks-short"
    args = prune_args(data, table, out, "--target", "0.05", "--device", "cpu")
    args[args.index("--epochs") + 1] = "1"
    env = subprocess_env()
    two = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29519", "--monitor-interval", "0.02",  # notice soon
         "-m", "pruner", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode != 0 and "exitcode  : 3" in two.stderr, two.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] and report["targets_reached"] == [] and report["world_size"] == 2
    assert (out / "latency_accuracy_dims.png").stat().st_size > 0
    assert (out / "pruned_dims.png").stat().st_size > 0
