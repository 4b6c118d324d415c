# infotok developer commands. `make install` then `make test` set up and check a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: install test lint samples bench glance train clean fuzz fuzz-weights

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned requirement would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'

test:
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check infotok_cli tests scripts examples

samples:
	$(BIN)/python scripts/make_samples.py --out samples

# The bench (infotok_cli/bench/) writes docs/BENCHMARKS.md and its plots, nothing else; `make glance` then
# rewrites the README's at-a-glance table from that report. The default keeps a bench run near 30 minutes on
# 2 CPU cores; `make bench BENCH_ARGS=` runs the full plan.
BENCH_ARGS ?= --rd-frames 17 --max-val-clips 4 --rates 0.25,0.5,0.75

bench:
	$(BIN)/python -m infotok_cli.bench --out docs/BENCHMARKS.md $(BENCH_ARGS)

glance:
	$(BIN)/python -m infotok_cli.bench.glance --bench docs/BENCHMARKS.md --readme README.md

# Retrains the shipped model in the paper's stages (configs/train-*.json; training clips not included, pass
# DATA=folder): the base tokenizer at full rate, then the adaptive path with the Flex objective (base
# frozen), then everything. Each stage starts from the previous stage's EMA weights; `minutes` in a config
# is a training-time budget for its cosine schedule. WARM=1 continues the shipped weights instead: a base
# stage with a fixed step count (configs/train-base-warm.json), then the full stage (the shipped weights
# already carry a trained adaptive path, so the frozen-base adaptive stage is skipped).
DATA ?= ../shared/data/train
MODEL_OUT ?= infotok_cli/weights/infotok-m.safetensors
WARM ?=
ifeq ($(WARM),)
train:
	$(BIN)/infotok train $(DATA) --config configs/train-base.json --steps 100000 \
		--out runs/base/base.safetensors --run-dir runs/base --force
	$(BIN)/infotok train $(DATA) --config configs/train-adaptive.json --steps 100000 \
		--init-from runs/base/base.safetensors --out runs/adaptive/adaptive.safetensors --run-dir runs/adaptive --force
	$(BIN)/infotok train $(DATA) --config configs/train-full.json --steps 100000 \
		--init-from runs/adaptive/adaptive.safetensors --out $(MODEL_OUT) --run-dir runs/full --force
else
train:
	$(BIN)/infotok train $(DATA) --config configs/train-base-warm.json --init-from $(MODEL_OUT) \
		--out runs/base-warm/base.safetensors --run-dir runs/base-warm --force
	$(BIN)/infotok train $(DATA) --config configs/train-full.json --steps 100000 \
		--init-from runs/base-warm/base.safetensors --out $(MODEL_OUT) --run-dir runs/full --force
endif

# Coverage-guided fuzzing of the .itok reader (scripts/fuzz_itok.py; not part of `make test`). atheris is
# installed by this target only. Stops at the first crash, hang (-timeout, seconds) or memory blow-up and
# leaves the input in $(FUZZ_DIR)/; the corpus grows in $(FUZZ_DIR)/corpus between runs.
FUZZ_RUNS ?= 100000
FUZZ_DIR ?= .fuzz
FUZZ_ARGS ?= -max_len=16384
fuzz:
	$(BIN)/pip install --quiet 'atheris>=2.3,<4'
	mkdir -p $(FUZZ_DIR)/corpus
	$(BIN)/python scripts/fuzz_itok.py -runs=$(FUZZ_RUNS) -timeout=1 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_ARGS) $(FUZZ_DIR)/corpus

# Hostile model configurations and weights files (tests/fuzz_weights.py, the generators of
# tests/test_model_untrusted.py at a larger count): exits 1 on any internal error, a case over 10 s, or a
# peak over 1 GiB.
FUZZ_WEIGHTS_CASES ?= 2000
fuzz-weights:
	$(BIN)/python tests/fuzz_weights.py --cases $(FUZZ_WEIGHTS_CASES) --hang 10 --max-rss-mb 1024

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
