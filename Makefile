# infotok developer commands. `make install` then `make test` set up and check a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: install test lint samples bench train clean

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned requirement would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'

test:
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check infotok_cli tests scripts

samples:
	$(BIN)/python scripts/make_samples.py --out samples

bench:
	$(BIN)/python scripts/bench.py --out docs/BENCHMARKS.md

train:
	$(BIN)/python -m infotok_cli.train ../shared/data/train --out infotok_cli/weights/infotok-s.safetensors

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
