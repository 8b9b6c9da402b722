#!/usr/bin/env bash
# One-shot replication: run the workflow to the end and leave tables, figures and the report
# under results/<name>/. With no arguments it runs the paper config; any arguments are passed
# to Snakemake (e.g. --configfile config/config.yaml, -n, --cores 8). Works outside the
# container too, from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

SNAKEMAKE=${SNAKEMAKE:-snakemake}
if ! command -v "$SNAKEMAKE" >/dev/null 2>&1 && [ -x .venv/bin/snakemake ]; then
    SNAKEMAKE=.venv/bin/snakemake
fi

# In the image .snakemake points into the mounted results/ (Dockerfile): create its target.
if [ -L .snakemake ]; then mkdir -p "$(readlink .snakemake)"; fi

args=("$@")
has_config=false
for a in "${args[@]}"; do
    case "$a" in --configfile|--configfile=*|--configfiles|--configfiles=*) has_config=true ;; esac
done
$has_config || args=(--configfile config/paper.yaml "${args[@]}")

echo "entrypoint: $SNAKEMAKE --profile profiles/local ${args[*]}"
exec "$SNAKEMAKE" --profile profiles/local "${args[@]}"
