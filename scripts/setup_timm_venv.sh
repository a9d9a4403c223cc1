#!/usr/bin/env bash
# Creates (or reuses) .venv-timm: the registry's torch + torchvision + timm, used only by the timm round-trip test.
# Why a second venv: timm imports torchvision, and the registry's torchvision does not load with the local CPU
# torch 2.13.0 build that .venv uses ("operator torchvision::nms does not exist"). The registry's default torch
# build (with CUDA libraries) runs on the CPU and loads its matching torchvision, so real timm runs there.
# The test runs this repository from source in that venv (PYTHONPATH), so vitlut itself is not installed into it;
# numpy, scipy, pydantic and httpx are there because importing pruner imports the latency table, its format and
# the latency client.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VITLUT_TIMM_VENV:-.venv-timm}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.timm-installed-3"  # bumped when the list below changes, so an older venv is completed
if [ -f "$STAMP" ]; then
    exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
start=$(date +%s)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check 'timm>=1.0,<2' 'numpy>=1.26' 'scipy>=1.11' 'pydantic>=2.6' 'httpx>=0.27'
"$VENV/bin/python" -c 'import timm, torch; print(f"timm {timm.__version__} with torch {torch.__version__}")'
echo "installed $VENV in $(( $(date +%s) - start )) s"
touch "$STAMP"
