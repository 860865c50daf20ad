# lmforge: two commands on a fresh machine with Python 3.11 and pip.
#   make demo   sets up .venv and runs the whole pipeline on the embedded default
#   make test   sets up .venv with the dev tools and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The PyTorch build to install first. torch==2.13.0 is a CPU build where a local wheel
# exists (as on the project's machines); elsewhere PyPI serves the default (CUDA) build.
# On a GPU machine `make TORCH_SPEC=torch demo` takes whatever is newest.
TORCH_SPEC ?= torch==2.13.0
SRC := lmforge tests benchmarks

.PHONY: install dev demo test lint format clean services

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/lmforge run --config configs/demo.yaml

# tests/test_cluster.py starts a PostgreSQL server (MLflow's backend store, as a team runs
# it): Debian's package, installed here when missing; the test starts and stops the server
services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { S=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$S apt-get update -q && $$S apt-get install -y -q --no-install-recommends postgresql; }

test: dev services
	$(BIN)/pytest

lint: dev
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy

format: dev
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

clean:
	rm -rf lmforge-work .pytest_cache .mypy_cache .ruff_cache
