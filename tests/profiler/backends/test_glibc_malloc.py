"""The steady allocator: a batch-64 block stops re-faulting its activations, and the choice is recorded."""

import json
import subprocess
import sys

import pytest

from profiler.backends import create_backend
from profiler.backends.glibc_malloc import glibc_available

FAULTS_PER_CALL = """
import json, resource, sys
from lut_server.dims import BlockDims
from profiler.backends import create_backend
from profiler.workload import Workload, build_pipeline, model_config_for_tokens
backend = create_backend("torch-cpu", "fp32", 1, allocator=sys.argv[1])
workload = Workload(64, 17, model_config_for_tokens(17, patch_size=2, in_chans=1, num_classes=10))
faults = []
for mlp in (384, 512, 448, 640):  # activations of 1.7-2.8 MB: above glibc's initial 128 KiB mmap threshold
    names, stages, inputs = build_pipeline(BlockDims(48, 2, 16, 16, mlp), workload, with_model_parts=True)
    run = backend.prepare_pipeline(stages, inputs)
    run(20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run(50)
    faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50)
print(json.dumps({"faults_per_call": faults, "malloc": backend.environment()["device"]["recorded"]["malloc"]}))
"""


def _faults(allocator: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_CALL, allocator], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not glibc_available(), reason="mallopt is glibc's")
def test_steady_allocator_keeps_activations_mapped():
    steady = _faults("steady")
    assert steady["malloc"] == "steady"
    # each call allocates ~10 MB of activations (~2,500 pages); steady reuses them all
    assert max(steady["faults_per_call"]) < 50, steady  # glibc defaults: 800-1,300 here


def test_backend_options_are_checked_and_recorded():
    with pytest.raises(ValueError, match="allocator must be one of"):
        create_backend("torch-cpu", "fp32", 1, allocator="jemalloc")
    with pytest.raises(ValueError, match="no option"):
        create_backend("torch-cpu", "fp32", 1, cuda_graphs=True)
    backend = create_backend("torch-cpu", "fp32", 1, allocator="system")
    assert backend.settings()["options"] == {"allocator": "system"}


RECORDED_MALLOC = """
import json
from profiler.backends import create_backend
recorded = []
for allocator in ("system", "steady", "system"):
    backend = create_backend("torch-cpu", "fp32", 1, allocator=allocator)
    recorded.append(backend.environment()["device"]["recorded"]["malloc"])
print(json.dumps(recorded))
"""


@pytest.mark.skipif(not glibc_available(), reason="mallopt is glibc's")
def test_a_table_records_the_allocator_the_process_has_not_the_one_asked_for():
    out = subprocess.run([sys.executable, "-c", RECORDED_MALLOC], capture_output=True, text=True, check=True)
    # a fresh process starts with glibc's defaults; steady thresholds cannot be undone, so a later 'system' backend
    # still times under them and says so
    assert json.loads(out.stdout) == ["system", "steady", "steady"]
