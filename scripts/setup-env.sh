#!/usr/bin/env bash
# Build (or reuse) the project's pinned environment in .venv from requirements.lock.
#
# Idempotent: a second call reuses .venv; if requirements.lock or pyproject.toml changed since
# .venv was built, it is rebuilt from scratch so it always matches the lock exactly.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
STAMP="$VENV/.replication-lock"
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import replication" 2>/dev/null; then
    echo "environment: $VENV is up to date with requirements.lock"
    exit 0
fi
if [ -d "$VENV" ]; then
    echo "environment: requirements.lock or pyproject.toml changed; rebuilding $VENV"
    rm -rf "$VENV"
fi
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]}"'
echo "environment: building $VENV from requirements.lock (a few minutes)"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.lock
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m pip check
echo "$want" > "$STAMP"
echo "environment: ready ($VENV)"
