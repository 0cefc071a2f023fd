# Two entry points: `make demo` and `make test`. Both create (or reuse) .venv and install into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The torch pair this project is tested with. On a machine with a GPU-less
# network install you may prefer the CPU wheels:
#   make TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu demo
TORCH ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=

.PHONY: install demo test test-fast lint bench-search docker-test clean

# Some shells set this (CI containers, sandboxes); it stops pytest caching its rewritten test modules,
# which made every worker recompile ~500 of them (hypothesis's and schemathesis's included): 6 s a worker.
unexport PYTHONDONTWRITEBYTECODE

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_INDEX) $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# clip-retrieval's ClipClient and built front end, for the compatibility tests (its own deps are its server's)
	$(BIN)/python -m pip install -q --no-deps clip-retrieval==2.45.0
	@touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/crossmodal demo

# Spread over the cores (pytest-xdist); whole files stay on one worker, so module fixtures are built once,
# handed out longest first (tests/helpers/durations.py; xdist's own reorder is by test count).
PYTEST_PARALLEL ?= -n auto --dist loadfile --no-loadscope-reorder

test: install
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

# The edit-test loop: the unmarked tests (no real model, no processes that each load torch, no PostgreSQL,
# no browser): 2 min 8 s on this session's 2-core machine (3 min 52 s on a slower one, before its collection
# and imports were cut). `make test` and CI run every test.
test-fast: install
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not slow and not postgres and not browser"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench-search: install
	$(BIN)/python benchmarks/bench_search.py

# Builds both images and runs the demo flow and the compose stack (20-30 minutes; needs Docker).
docker-test:
	bash docker/test.sh

clean:
	rm -rf $(VENV) data .pytest_cache
