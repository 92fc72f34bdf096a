# The two set-up commands of the README:   make run   (main job)   and   make test   (test suite).
# Both create .venv and install crossgap with its pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: run test install lint clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "setuptools==80.10.2" wheel
	# torch/torchvision first: pip takes both from this machine's local package index
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow

clean-venv:
	rm -rf $(VENV)
