#!/usr/bin/env bash
# Every GPU path of the project, once, on an NVIDIA machine: doctor, the gpu-marked tests, torch-cuda sweeps (eager
# fp32 and CUDA-graph fp16 at batch 256) with check / measure / validate / calibrate on them, onnxruntime's provider
# choice, and `python -m pruner prune` on the GPU in one process and under torchrun (NCCL). Each step runs under its
# own time limit and the whole under GPU_CHECK_SECONDS, so a hang in one step leaves the others' results; every
# step's output is in OUT/logs and one line per step in OUT/summary.txt.
#
# Usage: bash scripts/gpu_check.sh [OUT]   (PY: the Python that holds a CUDA torch; default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
OUT="${1:-gpu-check-out}"
BUDGET="${GPU_CHECK_SECONDS:-540}"
START=$SECONDS
mkdir -p "$OUT/logs" "$OUT/tables"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

# step NAME LIMIT_S CMD...: run CMD under min(LIMIT_S, time left), log it, record rc and seconds.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START) - 5))
    if ((left < 10)); then
        echo "$name: skipped (budget spent)" | tee -a "$SUMMARY"
        return
    fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$SUMMARY"
}

T="$OUT/tables"
cat > "$OUT/tiny-models.json" <<'EOF'
[{"emb": 64, "blocks": [{"heads": 2, "qk": 16, "v": 8, "mlp": 48}, {"heads": 1, "qk": 12, "v": 16, "mlp": 32}]},
 {"emb": 48, "blocks": [{"heads": 1, "qk": 8, "v": 8, "mlp": 64}, {"heads": 2, "qk": 16, "v": 12, "mlp": 40}]}]
EOF

step env 30 bash -c "nvidia-smi; $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))'"

# eager fp32 at batch 1 (the default settings), quick protocol: the whole table life cycle
step eager-profile 90 "$PY" -m profiler profile --backend torch-cuda --grid tiny --quick --out "$T/eager.json" --no-progress
step eager-check 60 "$PY" -m profiler check "$T/eager.json" --json --record
step eager-measure 60 "$PY" -m profiler measure --table "$T/eager.json" --models "$OUT/tiny-models.json" --no-progress
step eager-validate 90 "$PY" -m profiler validate "$T/eager.json" --points 12 --models 6 --depth 4 --quick --no-progress
step eager-calibrate 60 "$PY" -m profiler calibrate "$T/eager.json"
step eager-check-calibrated 60 "$PY" -m profiler check "$T/eager.json" --json

# CUDA graphs, fp16, batch 256 (the paper's batch), the full protocol
step graphs-profile 120 "$PY" -m profiler profile --backend torch-cuda --cuda-graphs --precision fp16 --batch 256 \
    --grid tiny --out "$T/graphs.json" --no-progress
step graphs-check 60 "$PY" -m profiler check "$T/graphs.json" --json

step doctor 150 "$PY" -m profiler doctor --json
step onnxruntime-auto 60 "$PY" -m profiler profile --backend onnxruntime --grid tiny --quick --out "$T/ort.json" --no-progress
step pytest-gpu 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/profiler tests/pruner

# the pruner on the GPU: one process with bf16 autocast, then torchrun with one rank (NCCL)
step prune-data 60 "$PY" -c "
from pathlib import Path
from tests.pruner.image_folder_data import make_image_folder, write_small_table
make_image_folder(Path('$OUT/prune/data')); write_small_table(Path('$OUT/prune/table.json'))"
PRUNE_ARGS=(--model "custom:emb=64,depth=2,heads=4,head_dim=16,mlp=96" --data "$OUT/prune/data"
    --table-file "$OUT/prune/table.json" --image-size 16 --patch-size 4 --batch-size 8 --epochs 20
    --prune-every 2 --eval-images 8 --no-progress --seed 3 --target 0.6)
step prune-cuda 120 "$PY" -m pruner prune "${PRUNE_ARGS[@]}" --amp bf16 --out "$OUT/prune/one"
step prune-torchrun 150 "$PY" -m torch.distributed.run --nproc_per_node 1 --master_port 29533 -m pruner prune \
    "${PRUNE_ARGS[@]}" --out "$OUT/prune/ddp"

echo "total $((SECONDS - START)) s" | tee -a "$SUMMARY"
