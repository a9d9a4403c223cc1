#!/usr/bin/env bash
# Creates (or reuses) .venv-timm: the registry's torch + torchvision + timm, used only by the timm round-trip test.
# Why a second venv: timm imports torchvision, and the registry's torchvision does not load with the local CPU
# torch 2.13.0 build that .venv uses ("operator torchvision::nms does not exist"). The registry's default torch
# build (with CUDA libraries) runs on the CPU and loads its matching torchvision, so real timm runs there.
# The test runs this repository from source in that venv (PYTHONPATH), so vitlut itself is not installed into it;
# numpy, scipy, pydantic and httpx are there because importing pruner imports the latency table, its format and
# the latency client.
# That CUDA build takes about 5.7 GiB. Where no venv with torch is there yet and the disk has less room than NEED_GIB
# free, or when pip runs out of disk, no venv is left (a half-installed one on a full disk helps nobody), the reason
# is written to $VENV.unavailable and this exits 0: the round-trip test then skips and prints that reason, and the
# rest of `make test` still runs. A venv that already has torch is completed whatever the free space; one that
# fails for another reason is removed only if this run created it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VITLUT_TIMM_VENV:-.venv-timm}"
PYTHON="${PYTHON:-python3}"
NEED_GIB="${VITLUT_TIMM_NEED_GIB:-7}"
STAMP="$VENV/.timm-installed-3"  # bumped when the list below changes, so an older venv is completed
REASON="$VENV.unavailable"
if [ -f "$STAMP" ]; then
    exit 0
fi
rm -f "$REASON"
made_here=0

discard_partial() {
    if [ "$made_here" = 1 ]; then
        rm -rf "$VENV"
    fi
}

unavailable() {
    rm -rf "$VENV"
    echo "$1" >"$REASON" || true
    echo "setup_timm_venv: $VENV not made: $1" >&2
    exit 0
}

if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch' 2>/dev/null; }; then
    mkdir -p "$(dirname "$VENV")"
    free_gib=$(df -Pk "$(dirname "$VENV")" | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }')
    if awk -v free="$free_gib" -v need="$NEED_GIB" 'BEGIN { exit !(free < need) }'; then
        unavailable "only $free_gib GiB free on disk; the registry's torch with its CUDA libraries needs about $NEED_GIB GiB"
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    made_here=1
    "$PYTHON" -m venv "$VENV"
fi
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check \
    'timm>=1.0,<2' 'numpy>=1.26' 'scipy>=1.11' 'pydantic>=2.6' 'httpx>=0.27' 2>"$log"; then
    { grep -v '^WARNING: Location' "$log" || true; } | tail -5 >&2
    if grep -qE 'Errno 28|No space left on device' "$log"; then
        unavailable "the disk filled up while pip installed the registry's torch (about 5.7 GiB)"
    fi
    discard_partial
    exit 1
fi
"$VENV/bin/python" -c 'import timm, torch; print(f"timm {timm.__version__} with torch {torch.__version__}")'
echo "installed $VENV in $(( $(date +%s) - start )) s"
touch "$STAMP"
