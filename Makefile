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

# The default keeps a bench run near 30 minutes on 2 CPU cores; `make bench BENCH_ARGS=` runs the full plan.
BENCH_ARGS ?= --rd-frames 17 --max-val-clips 4 --rates 0.25,0.5,0.75

bench:
	$(BIN)/python scripts/bench.py --out docs/BENCHMARKS.md $(BENCH_ARGS)

# Retrains the shipped model (training clips not included; pass DATA=folder). Resumable with RESUME=--resume.
DATA ?= ../shared/data/train
train:
	$(BIN)/infotok train $(DATA) --out infotok_cli/weights/infotok-s.safetensors --steps 5000 $(RESUME) --force

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
