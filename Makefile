# Threadline: every command sets up its own virtual environment on a fresh machine.
#   make serve   the main job: the server with the embedded defaults (SQLite, local model)
#   make test    the whole test suite (what CI runs)
#   make check   format, lint, types, tests
#   make bench   the benchmarks in bench/

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install serve test check lint types bench bench-quick services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# llama-cpp-python compiles from source once (about 8-25 minutes on 2 cores, longer on a busy machine). It is built
# with portable x86-64 flags, never -march=native: a native build on a Xeon with AMX turns
# on the AMX repacking kernel, which crashes (docs/models.md). The wheel is kept in a
# cache folder named after the version and the flags, so a wheel built with other flags
# (pip's own cache of a native build, say) is never picked up, and later installs reuse it.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE   := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
                 -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_KEY     := $(shell echo '$(LLAMA_VERSION) $(LLAMA_CMAKE) $(shell uname -m)' | cksum | cut -d' ' -f1)
WHEELS        := $(HOME)/.cache/threadline/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_KEY)

$(WHEELS)/.built: | $(BIN)/python
	mkdir -p $(WHEELS)
	@echo "building llama-cpp-python $(LLAMA_VERSION) (portable flags; once per machine)"
	CMAKE_ARGS="$(LLAMA_CMAKE)" FORCE_CMAKE=1 $(BIN)/pip wheel --no-deps --no-cache-dir \
		--progress-bar off -w $(WHEELS) 'llama-cpp-python==$(LLAMA_VERSION)'
	touch $@

$(STAMP): pyproject.toml Makefile $(WHEELS)/.built | $(BIN)/python
	$(BIN)/pip install --progress-bar off --find-links $(WHEELS) -e '.[all,dev]' \
		'llama-cpp-python==$(LLAMA_VERSION)'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

serve: install
	$(BIN)/threadline serve

# System services and tools the tests use for real: PostgreSQL and Debian's Chromium.
services:
	@bash scripts/services.sh

# Two pytest-xdist workers: most tests wait on processes, servers and the disk, and on a
# slow 2-core machine the suite took about 40 minutes one test at a time, 20 in two.
test: install services
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2

lint: install
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/ruff check src tests bench examples

types: install
	$(BIN)/mypy

check: lint types test

bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py

# A smoke run of the loop, growth, storage and concurrency figures (a minute or two).
bench-quick: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/overhead.py --quick

clean:
	rm -rf $(VENV) .threadline .pytest_cache .mypy_cache .ruff_cache
