#!/usr/bin/env bash
# Stop the local test SLURM that scripts/slurm/up.sh started with the same scratch folder:
# cancel leftover jobs, then stop slurmd, slurmctld and munged -- only those whose pid files
# up.sh recorded in SCRATCH/pids/ and that still run under that name, and remove the
# /etc/slurm/slurm.conf that up.sh wrote for them. Nothing else is touched (a SLURM that up.sh
# found already running is left alone). Safe to call twice.
#
# Why the config goes too: with SLURM's tools installed and a config naming a controller that is
# down, every Snakemake start waits 10 s (its SLURM plugin runs `scontrol show config` on import,
# and scontrol retries the controller); with no config scontrol fails at once.
#
#   scripts/slurm/down.sh [SCRATCH]      # or: LOCAL_SLURM_DIR=SCRATCH scripts/slurm/down.sh
set -euo pipefail

SCRATCH=${1:-${LOCAL_SLURM_DIR:-/tmp/local-slurm}}
PIDS="$SCRATCH/pids"

log() { echo "slurm-down: $*" >&2; }

# ours NAME: print the pid from PIDS/NAME.pid if it is a running process called NAME.
ours() {
    local pidfile="$PIDS/$1.pid" pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    pgrep -x "$1" | grep -qx "$pid" || return 1
    echo "$pid"
}

stop() {  # stop NAME: SIGTERM, wait up to 15 s, then SIGKILL
    local name=$1 pid
    if ! pid=$(ours "$name"); then
        rm -f "$PIDS/$name.pid"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDS/$name.pid"
}

CONF=/etc/slurm/slurm.conf
MARKER="# Written by scripts/slurm/up.sh (local single-node test cluster)."

# remove_config: up.sh's config for this scratch folder, once no slurmctld runs on it.
remove_config() {
    [ -f "$CONF" ] && [ "$(head -n 1 "$CONF")" = "$MARKER" ] || return 0
    grep -qxF "# Scratch folder: $SCRATCH" "$CONF" || return 0
    pgrep -x slurmctld >/dev/null && return 0
    rm -f "$CONF"
    log "removed $CONF (written by up.sh for $SCRATCH)"
}

if [ ! -d "$PIDS" ]; then
    log "no $PIDS: nothing was started by up.sh with this scratch folder."
    remove_config
    exit 0
fi

# Cancel leftover jobs only on a controller we started (it is a private cluster then) and let
# slurmd clean up their steps before it is stopped.
if ours slurmctld >/dev/null && ours slurmd >/dev/null; then
    jobs=$(timeout 10 squeue -h -o '%A' 2>/dev/null || true)
    if [ -n "$jobs" ]; then
        log "cancelling leftover jobs: $(echo "$jobs" | tr '\n' ' ')"
        # shellcheck disable=SC2086  # one job id per word
        timeout 10 scancel $jobs || true
        for _ in $(seq 60); do
            [ -z "$(timeout 10 squeue -h -o '%A' 2>/dev/null || true)" ] && break
            sleep 0.5
        done
    fi
fi

stop slurmd
stop slurmctld
stop munged
rmdir "$PIDS" 2>/dev/null || true
remove_config
log "done"
