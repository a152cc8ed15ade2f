# Two commands set up a fresh machine: `make run` (index the bundled corpus) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= configs/default.yaml
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := true
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup run index test test-gpu bench lint clean

setup: $(STAMP)

# torch first and pinned: 2.13.0 is the CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

run: index

index: setup
	$(VENV)/bin/rayrag index --config $(CONFIG)

test: setup
	$(PY) -m pytest -m "unit or contract or integration" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

test-gpu: setup
	$(PY) -m pytest -m gpu $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

bench: setup
	$(PY) bench/index_throughput.py

lint: setup
	$(VENV)/bin/ruff check rayrag pipelines indexes serving bench tests

clean:
	rm -rf .rayrag .pytest_cache
