#!/usr/bin/env bash
# The GPU path in one command: build the environment, then time SAC, IQL, CQL, Cal-QL (d3rlpy
# compile_graph on) and PEX fine-tuning updates on CUDA and on one CPU thread, and check that both
# devices agree on a fixed seed (replication/gpucheck.py says how). Prints a table; writes
# results/gpu-check/gpu-check.json. Exit status 1 when a learner disagrees.
#
#   scripts/gpu-check.sh                      # on a CUDA machine (aims at well under 8 minutes on one GPU)
#   scripts/gpu-check.sh --device cpu --steps 5 --cpu-steps 5 --check-steps 2   # smoke test, any machine
#
# Other options go to `replication gpu-check` (--steps, --cpu-steps, --warmup, --check-steps,
# --learners, --out). Needs Python 3.11 and pip; on CUDA an NVIDIA driver for CUDA 12 (nvidia-smi).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

device=cuda given=no
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --device) device=${args[i + 1]:-} given=yes ;;
        --device=*) device=${args[i]#--device=} given=yes ;;
    esac
done
[ $given = yes ] || args=(--device "$device" "${args[@]}")

# .venv from requirements.lock (reused when up to date); SETUP_ENV=0 uses $VENV as it is
[ "${SETUP_ENV:-1}" = 0 ] || VENV=$VENV bash scripts/setup-env.sh

if [[ $device == cuda* ]]; then
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
        echo "gpu-check: no NVIDIA GPU or driver here (nvidia-smi fails); run with --device cpu for the smoke test" >&2
        exit 2
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    # PyPI's Linux torch wheel of the locked version is the CUDA build; a local wheel mirror may have
    # put a CPU build in .venv instead: then install PyPI's, ignoring local pip settings.
    if [ "$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda or "")')" = "" ]; then
        torch_pin=$(grep '^torch==' requirements.lock)
        echo "gpu-check: $VENV has a CPU-only torch; installing $torch_pin from ${TORCH_INDEX:-https://pypi.org/simple}"
        "$VENV/bin/python" -m pip uninstall --quiet --yes torch
        "$VENV/bin/python" -m pip install --isolated --quiet --index-url "${TORCH_INDEX:-https://pypi.org/simple}" \
            -c requirements.lock "$torch_pin"
    fi
    "$VENV/bin/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu-check: torch sees no CUDA device")'
fi

exec "$VENV/bin/python" -m replication gpu-check "${args[@]}"
