# Threadline: every command sets up its own virtual environment on a fresh machine.
#   make serve   the main job: the server with the embedded defaults (SQLite, local model)
#   make test    the whole test suite (what CI runs)
#   make check   format, lint, types, tests
#   make bench   the benchmarks in bench/

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install serve test check lint types bench services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# llama-cpp-python compiles from source once (about 8 minutes on 2 cores); pip keeps the
# built wheel in its cache, so later installs reuse it.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --progress-bar off -e '.[all,dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

serve: install
	$(BIN)/threadline serve

# System services and tools the tests use for real: PostgreSQL and Debian's Chromium.
services:
	@bash scripts/services.sh

test: install services
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/ruff check src tests bench examples

types: install
	$(BIN)/mypy

check: lint types test

bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .threadline .pytest_cache .mypy_cache .ruff_cache
