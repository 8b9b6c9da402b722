# The two entry points of the README. Both build the same pinned environment (.venv) first.
VENV ?= .venv
CONFIG ?= config/config.yaml
CORES ?= all
CI_CONFIG ?= config/ci.yaml

.PHONY: env run test lint check-figures reference clean-env

env:
	@bash scripts/setup-env.sh

run: env
	$(VENV)/bin/snakemake --cores $(CORES) --configfile $(CONFIG) --profile profiles/local

test: env
	$(VENV)/bin/python -m pytest

lint: env
	VENV=$(VENV) bash scripts/lint.sh

# CI: a fresh run of the CI config, its tables and figures compared with results/reference/ci/.
check-figures: env
	rm -rf results/ci
	$(VENV)/bin/snakemake --cores $(CORES) --configfile $(CI_CONFIG) --profile profiles/local
	$(VENV)/bin/python -m replication reference check --config $(CI_CONFIG)

# On purpose, after a change that alters results: a fresh run of the CI config becomes the reference.
reference: env
	rm -rf results/ci
	$(VENV)/bin/snakemake --cores $(CORES) --configfile $(CI_CONFIG) --profile profiles/local
	$(VENV)/bin/python -m replication reference refresh --config $(CI_CONFIG)

clean-env:
	rm -rf $(VENV)
