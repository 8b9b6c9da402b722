# The two entry points of the README. Both build the same pinned environment (.venv) first.
VENV ?= .venv
CONFIG ?= config/config.yaml
CORES ?= all

.PHONY: env run test lint clean-env

env:
	@bash scripts/setup-env.sh

run: env
	$(VENV)/bin/snakemake --cores $(CORES) --configfile $(CONFIG) --profile profiles/local

test: env
	$(VENV)/bin/python -m pytest

lint: env
	$(VENV)/bin/ruff check replication tests
	$(VENV)/bin/ruff format --check replication tests

clean-env:
	rm -rf $(VENV)
