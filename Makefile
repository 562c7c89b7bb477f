# masklab: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
MASKLAB := $(VENV)/bin/masklab
export MLFLOW_DISABLE_TELEMETRY := true
# Python's own default: keep the bytecode of masklab's modules. A shell with PYTHONDONTWRITEBYTECODE set (this
# machine's has) makes each of the tests' ~200 masklab processes compile the package again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup setup-dev browser postgres demo test lint bench ui

# `setup`: what running masklab needs (`pip install -e .`); `setup-dev`: that plus the `dev` extra the tests use
# (pytest, Playwright, moto, import-linter, mypy and the `team` extra: PostgreSQL drivers, S3, submitit).
setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	@python3 -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), f"masklab needs Python 3.11 or 3.12 (tested on 3.11), found {sys.version.split()[0]}"'
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --no-cache-dir --upgrade pip
	$(PY) -m pip install --no-cache-dir -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --no-cache-dir -e '.[dev]'
	touch $@

demo: setup
	test -d data/synthetic || $(MASKLAB) data synth
	$(MASKLAB) train experiment=unet-resnet18_synthetic-96

# Debian's Chromium for the explorer's browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

# Lint first: a ruff error, an import that breaks the layer contract (.importlinter) or a type error at the task
# seam (mypy over tasks/, workflows/, inference/, tracking/) fails the tests.
# Then every test in one pytest run: two workers, one test file each (--dist loadfile keeps a file's module
# fixtures together), in collection order (--no-loadscope-reorder: the slowest modules first, see
# tests/conftest.py LONGEST_FIRST). The team tests (marker `team`: real PostgreSQL, S3 (moto), MLflow servers, DDP
# and submitit processes) and the slow ones (marker `slow`: trainings killed by real signals and resumed, presets
# in full, DVC's experiment queue) run in the same pass, so neither worker idles at the end of a first pass while
# the other finishes (`-m "not team and not slow"` runs the rest alone).
test: setup-dev browser postgres
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy src/masklab/tasks src/masklab/workflows src/masklab/inference src/masklab/tracking
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Debian's PostgreSQL server binaries for the team tests (they start it as an unprivileged user, on 127.0.0.1).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }

lint: setup-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy src/masklab/tasks src/masklab/workflows src/masklab/inference src/masklab/tracking

bench: setup-dev
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/cli_startup.py
	$(PY) benchmarks/registry.py
	$(PY) benchmarks/boundary_iou.py
	$(PY) benchmarks/dvc_pipeline.py
	$(PY) benchmarks/explorer.py

ui: setup
	$(MASKLAB) ui
