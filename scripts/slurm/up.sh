#!/usr/bin/env bash
# Bring up a real single-node SLURM (munge + slurmctld + slurmd) on 127.0.0.1, for testing the
# cluster path of the workflow (profiles/slurm-test). Needs root and Debian/Ubuntu (apt-get).
#
#   scripts/slurm/up.sh [SCRATCH]        # or: LOCAL_SLURM_DIR=SCRATCH scripts/slurm/up.sh
#   scripts/slurm/down.sh [SCRATCH]      # cancels jobs, stops what this script started
#
# SCRATCH (default /tmp/local-slurm) holds SLURM's state, spool, logs and pid files. The config
# itself must live at /etc/slurm/slurm.conf: the Snakemake SLURM plugin clears SLURM_* variables
# (SLURM_CONF included) before its inner srun.
#
# Idempotent: if a SLURM controller already answers and has a usable node, nothing is done (and
# nothing is recorded, so down.sh with the same SCRATCH stops nothing). Every daemon this script
# starts gets a pid file in SCRATCH/pids/; down.sh stops exactly those.
#
# Exit status: 0 up; 1 failed to start (logs are printed); 2 cannot install the packages
# (not root, no apt-get, or no network); 3 /etc/slurm/slurm.conf exists and was not written by
# this script (left untouched); 4 a slurmctld/slurmd not started here runs but does not answer.
set -euo pipefail

SCRATCH=${1:-${LOCAL_SLURM_DIR:-/tmp/local-slurm}}
CONF=/etc/slurm/slurm.conf
MARKER="# Written by scripts/slurm/up.sh (local single-node test cluster)."
PACKAGES=(slurmctld slurmd slurm-client munge)
WAIT_S=${LOCAL_SLURM_WAIT_S:-60}

log() { echo "slurm-up: $*" >&2; }

slurm_answers() {
    # The controller answers and at least one node is in a state that can run jobs.
    [ -f "$CONF" ] || return 1
    command -v sinfo >/dev/null 2>&1 || return 1
    timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
    timeout 10 sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)'
}

if slurm_answers; then
    log "SLURM is already up; nothing to do."
    sinfo >&2
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (installs packages, writes $CONF, starts daemons)."
    exit 2
fi

# --- 1. packages --------------------------------------------------------------------------------
missing=0
for bin in slurmctld slurmd sinfo srun munged; do
    command -v "$bin" >/dev/null 2>&1 || missing=1
done
if [ "$missing" -eq 1 ]; then
    command -v apt-get >/dev/null 2>&1 || { log "apt-get not found; install ${PACKAGES[*]} by hand."; exit 2; }
    log "installing ${PACKAGES[*]}"
    # Keep the packages' maintainer scripts from starting services (the standard policy-rc.d
    # trick); only if the machine has no policy of its own, and removed again afterwards.
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # also if interrupted mid-install
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
    }
    status=0
    if ! apt_install >&2; then
        apt-get update -q >&2 && apt_install >&2 || status=$?
    fi
    if [ "$policy_added" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
    if [ "$status" -ne 0 ]; then
        log "apt-get install ${PACKAGES[*]} failed (exit $status)."
        exit 2
    fi
fi

# --- 2. config ----------------------------------------------------------------------------------
if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    log "$CONF exists and was not written by this script; refusing to overwrite it."
    exit 3
fi
for daemon in slurmctld slurmd; do
    if pgrep -x "$daemon" >/dev/null; then
        pidfile="$SCRATCH/pids/$daemon.pid"
        if [ -f "$pidfile" ] && pgrep -x "$daemon" | grep -qx "$(cat "$pidfile")"; then
            continue  # ours, from an earlier call with this SCRATCH: reused below
        fi
        log "a $daemon not started by this script (for $SCRATCH) runs but SLURM does not answer."
        log "stop it first (scripts/slurm/down.sh with its scratch folder), then retry."
        exit 4
    fi
done

mkdir -p "$SCRATCH"
SCRATCH=$(cd "$SCRATCH" && pwd)
mkdir -p "$SCRATCH"/{pids,state,spool,log}
HOST=$(hostname -s)

# Node line from `slurmd -C` (first line), with RealMemory a little under what it reports, so
# the node is not drained for "low RealMemory".
node_line=$(slurmd -C | head -n 1)
real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
use_mem=$(( real_mem * 95 / 100 ))
node_line=${node_line/RealMemory=$real_mem/RealMemory=$use_mem}

mkdir -p /etc/slurm
tmp_conf=$(mktemp /etc/slurm/slurm.conf.XXXXXX)
cat > "$tmp_conf" <<EOF
$MARKER
# Scratch folder: $SCRATCH
ClusterName=localcluster
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# squeue forgets finished jobs after MinJobAge seconds; keep it >= 3x the plugin's
# --slurm-init-seconds-before-status-checks (no slurmdbd here, so no sacct).
MinJobAge=300
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SCRATCH/log/jobcomp.txt
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$SCRATCH/pids/slurmctld.pid
SlurmdPidFile=$SCRATCH/pids/slurmd.pid
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
chmod 644 "$tmp_conf"
mv "$tmp_conf" "$CONF"

# --- 3. daemons ---------------------------------------------------------------------------------
alive() {  # alive NAME PIDFILE: the pid file names a running process called NAME
    [ -s "$2" ] && pgrep -x "$1" | grep -qx "$(cat "$2")"
}

show_logs() {
    for f in /var/log/munge/munged.log "$SCRATCH"/log/slurmctld.log "$SCRATCH"/log/slurmd.log; do
        [ -f "$f" ] && { echo "==> $f" >&2; tail -n 30 "$f" >&2; }
    done
    return 0
}

if timeout 10 munge -n 2>/dev/null | timeout 10 unmunge >/dev/null 2>&1; then
    log "munged already runs (not started here; left alone)."
else
    [ -s /etc/munge/munge.key ] || { log "no /etc/munge/munge.key; creating one"; runuser -u munge -- /usr/sbin/mungekey --create; }
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    log "starting munged"
    rm -f /run/munge/munged.pid
    # munged runs as user munge, which may not be able to enter SCRATCH (pytest's tmp folders
    # are 0700), so its log stays at the package default, /var/log/munge/munged.log.
    # --force: a stale socket from an unclean stop would otherwise block the start.
    runuser -u munge -- /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
    for _ in $(seq 50); do
        [ -s /run/munge/munged.pid ] && break
        sleep 0.1
    done
    [ -s /run/munge/munged.pid ] || { log "munged did not start"; show_logs; exit 1; }
    cp /run/munge/munged.pid "$SCRATCH/pids/munged.pid"
    timeout 10 munge -n | timeout 10 unmunge >/dev/null || { log "munge does not work"; show_logs; exit 1; }
fi

if alive slurmctld "$SCRATCH/pids/slurmctld.pid"; then
    log "slurmctld (ours) already runs"
else
    log "starting slurmctld"
    slurmctld  # daemonizes; writes SlurmctldPidFile
fi
if alive slurmd "$SCRATCH/pids/slurmd.pid"; then
    log "slurmd (ours) already runs"
else
    log "starting slurmd -N $HOST"
    slurmd -N "$HOST"  # daemonizes; writes SlurmdPidFile
fi

log "waiting up to ${WAIT_S}s for node $HOST to be idle"
deadline=$(( SECONDS + WAIT_S ))
until timeout 10 sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; do
    if (( SECONDS >= deadline )); then
        log "SLURM did not come up in ${WAIT_S}s"
        timeout 10 sinfo -N -l >&2 || true
        show_logs
        exit 1
    fi
    sleep 0.5
done
sinfo >&2
log "up (scratch: $SCRATCH; stop with scripts/slurm/down.sh $SCRATCH)"
