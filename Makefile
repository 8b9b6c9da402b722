# The two entry points of the README. Both build the same pinned environment (.venv) first.
VENV ?= .venv
CONFIG ?= config/config.yaml
CORES ?= all
CI_CONFIG ?= config/ci.yaml

.PHONY: env run test test-fast lint ci-run check-figures reference clean-env

env:
	@bash scripts/setup-env.sh

run: env
	$(VENV)/bin/snakemake --cores $(CORES) --configfile $(CONFIG) --profile profiles/local

# Tests run in parallel on every core (pytest-xdist), a module's tests on one worker (--dist loadscope):
# the runs a module trains once (module-scoped fixtures) are trained once. Modules go out in the order
# tests/conftest.py gives (the longest first). The 15 slowest are listed.
PYTEST = $(VENV)/bin/python -m pytest -n auto --dist loadscope --no-loadscope-reorder --durations=15

test: env
	$(PYTEST)

# The tests that train nothing (neither slow nor slurm): a couple of minutes.
test-fast: env
	$(PYTEST) -m "not slow and not slurm"

lint: env
	VENV=$(VENV) bash scripts/lint.sh

# A fresh run of the CI config (results/ci), for the two targets below.
ci-run: env
	rm -rf results/ci
	$(VENV)/bin/snakemake --cores $(CORES) --configfile $(CI_CONFIG) --profile profiles/local

# CI: the fresh run's tables and figures compared with results/reference/ci/.
check-figures: ci-run
	$(VENV)/bin/python -m replication reference check --config $(CI_CONFIG)

# On purpose, after a change that alters results: the fresh run becomes the reference.
reference: ci-run
	$(VENV)/bin/python -m replication reference refresh --config $(CI_CONFIG)

clean-env:
	rm -rf $(VENV)
