#!/usr/bin/env bash
# Static checks, run by CI before the tests: ruff (lint + format), hadolint, every Dockerfile FROM
# pinned by digest, and Snakemake's own linter on the workflow.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY_DIRS=(replication tests benchmarks scripts)

"$VENV/bin/ruff" check "${PY_DIRS[@]}"
"$VENV/bin/ruff" format --check "${PY_DIRS[@]}"
"$VENV/bin/hadolint" Dockerfile && echo "hadolint: Dockerfile clean"
"$VENV/bin/python" scripts/check-dockerfile-pins.py Dockerfile
# The Snakefile writes the resolved config under its working directory: lint from a scratch one.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$VENV/bin/snakemake" --lint --directory "$scratch" --snakefile Snakefile
