# Two entry points: `make demo` (the main job) and `make test`. Both create or reuse .venv/ and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitlut-installed

.PHONY: setup browser timm-venv demo test check lint bench clean

# Exact pins for this environment (the package itself states ranges). torch is the CPU wheel this environment
# provides, so that nothing pulls the registry's CUDA build into .venv; torch, onnxruntime and onnx are the versions
# the shipped tables were measured with, which their fingerprints match (`profiler check` calls a table measured
# under another onnxruntime `different`). Installed first, so the package's ranges keep them.
PINS := torch==2.13.0 onnxruntime==1.31.1 onnx==1.23.2

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(PINS)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium for the server page's screenshot test.
browser:
	sh scripts/install-browser.sh

# A second venv with the registry's torch + timm, only for the real-timm round-trip test (see scripts/).
timm-venv:
	bash scripts/setup_timm_venv.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint browser timm-venv
	$(PY) -m pytest -q

# The developer's loop: ruff and the tests not marked slow (no browser, no second venv).
check: setup lint
	$(PY) -m pytest -q -m "not slow"

# Profile this machine for the demo model (if not yet), serve it, prune a digits ViT against it over HTTP.
demo: setup
	PY=$(PY) bash scripts/demo.sh

bench: setup
	$(PY) -m bench.interpolation_throughput
	$(PY) -m bench.server_load --duration 3
	$(PY) -m bench.pruner_accumulate_overhead
	$(PY) -m bench.pruner_eta

clean:
	rm -rf $(VENV) .venv-timm .venv-timm.unavailable demo-out .pytest_cache .ruff_cache
