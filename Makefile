# Two entry points: `make demo` (the main job) and `make test`. Both create or reuse .venv/ and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitlut-installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint
	$(PY) -m pytest -q

demo: setup
	$(PY) -m profiler profile --grid tiny --quick --out demo-out/tiny-cpu.json --batch 1 --tokens 197
	$(PY) -m profiler validate demo-out/tiny-cpu.json --points 20 --models 5 --depth 4 --quick

bench: setup
	$(PY) bench/interpolation_throughput.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
