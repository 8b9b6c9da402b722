#!/usr/bin/env bash
# CI's container check (README, "The container"): build the image from a locally made Debian
# bookworm base, run the one-shot `docker run` on the CI config, compare with results/reference/ci.
# Also: a bad config fails with its one-line error; files in the bind mount belong to the
# container's user (uid 1000); the image's labels and provenance.json name the commit, the lock
# and the image; a `docker kill` mid-run followed by the same `docker run` resumes and matches.
# For a root Debian 12 machine without a container registry; idempotent (the base is reused).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
WORK=${CONTAINER_WORK:-/var/tmp/replication-container}
IMAGE=replication
BASE=localhost/replication-base:bookworm
KILL_AFTER=${KILL_AFTER:-60}   # seconds into the second run before `docker kill`
start=$(date +%s)
last=$start
stage() {
    local now
    now=$(date +%s)
    echo "container-check: $1 done in $((now - last)) s (total $((now - start)) s)"
    last=$now
}
fail() { echo "container-check: FAIL: $*" >&2; exit 1; }

# 1. Tools, from the Debian archive.
if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null || ! command -v runc >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman buildah mmdebstrap uidmap runc
fi
command -v docker >/dev/null || fail "no docker CLI on PATH"
stage "tools"

# 2. This machine kind's engine settings (crun rejects its hybrid cgroups; the default ulimits
#    exceed its hard limits), in a containers.conf of our own, and the Docker API on a socket.
mkdir -p "$WORK"
cat >"$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
export CONTAINERS_CONF=$WORK/containers.conf
socket=$WORK/podman.sock
rm -f "$socket"
podman system service --time=0 "unix://$socket" &
service=$!
trap 'kill "$service" 2>/dev/null || true' EXIT
export DOCKER_HOST=unix://$socket
for _ in $(seq 50); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
docker version --format 'docker CLI {{.Client.Version}} -> engine {{.Server.Version}}'
stage "engine"

# 3. The base: Debian bookworm from the archive, under a local name given with --build-arg BASE.
if ! podman image exists "$BASE"; then
    rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    mmdebstrap --variant=minbase --mode=root --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    tar -C "$rootfs" -c . | podman import - "$BASE"
    rm -rf "$rootfs"
fi
stage "base"

# 4. The image (README). The host's pip configuration (system and user) and the local wheel folders it names are
#    mounted read-only into the build so that torch resolves to the same CPU wheel as .venv;
#    the CA bundle for a TLS-intercepting proxy likewise. None of it stays in the image.
COMMIT=$(git rev-parse HEAD)
LOCK_SHA256=$(sha256sum requirements.lock | cut -d' ' -f1)
podman build --network host \
    --volume /etc/pip.conf:/etc/pip.conf:ro --volume /etc/xdg/pip:/etc/xdg/pip:ro --volume "$HOME/.config/pip:/root/.config/pip:ro" \
    --volume /opt/wheels:/opt/wheels:ro --volume /opt/pypi:/opt/pypi:ro --volume /opt/pypi-more:/opt/pypi-more:ro \
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --build-arg BASE=localhost/replication-base:bookworm --build-arg COMMIT="$COMMIT" --build-arg LOCK_SHA256="$LOCK_SHA256" \
    -t replication .
id=$(docker image inspect --format '{{.Id}}' $IMAGE)
size=$(docker image inspect --format '{{.Size}}' $IMAGE)
echo "container-check: image $id, $((size / 1000000)) MB, torch" \
    "$(docker run --rm --entrypoint python $IMAGE -c 'import torch; print(torch.__version__)')"
[ "$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' $IMAGE)" = "$COMMIT" ] \
    || fail "the image's revision label is not $COMMIT"
[ "$(docker image inspect --format '{{index .Config.Labels "org.replication.lock-sha256"}}' $IMAGE)" = "$LOCK_SHA256" ] \
    || fail "the image's lock label is not $LOCK_SHA256"
stage "image"

# 5. The one-shot run, from a scratch folder whose results/ belongs to the container's user.
run_dir=$WORK/run
rm -rf "$run_dir"
mkdir -p "$run_dir/results"
chown 1000:1000 "$run_dir/results"
cd "$run_dir"
one_shot() {
    docker run --name replication-ci -e REPLICATION_IMAGE_ID="$(docker image inspect --format '{{.Id}}' replication)" \
        -v "$PWD/results:/app/results" replication --configfile config/ci.yaml "$@"
}
docker rm -f replication-ci >/dev/null 2>&1 || true

# 5a. A bad config: non-zero exit and the one-line error.
set +e
# (No --rm: through Podman's Docker API, `docker run --rm` reports exit status 0 whatever the container's.)
docker rm -f replication-bad >/dev/null 2>&1 || true
bad=$(docker run --name replication-bad -v "$PWD/results:/app/results" replication --configfile config/ci.yaml --config no_such_key=1 2>&1)
status=$?
set -e
docker rm replication-bad >/dev/null
[ $status -ne 0 ] || fail "a bad config exited 0"
echo "$bad" | grep -x "invalid config: config key (top level): unknown key(s) \['no_such_key'\]; valid keys here: .*" \
    || fail "no one-line error for a bad config: $(echo "$bad" | tail -5)"
stage "bad config"

# 5b. Kill the run mid-way, then the same command again: it resumes and finishes.
one_shot >"$WORK/killed.log" 2>&1 &
killed=$!
sleep "$KILL_AFTER"
docker kill replication-ci >/dev/null
wait "$killed" || true
grep -q "steps (100%) done" "$WORK/killed.log" && fail "the run finished before the kill: lower KILL_AFTER"
docker rm replication-ci >/dev/null
echo "container-check: killed after $KILL_AFTER s; $(grep -c '^Finished job' "$WORK/killed.log" || true) jobs had finished"
stage "killed run"
one_shot
docker rm replication-ci >/dev/null
stage "resumed run"

# 6. Ownership, provenance, and the comparison with the checkout's references.
foreign=$(find results -not -uid 1000 | head -5)
[ -z "$foreign" ] || fail "files in the bind mount not owned by uid 1000: $foreign"
"$VENV/bin/python" - "$id" "$COMMIT" <<'EOF'
import json, sys
container = json.load(open("results/ci/provenance.json"))["machine"]["container"]
want = {"in_container": True, "image_id": sys.argv[1], "image_revision": sys.argv[2]}
assert {k: container.get(k) for k in want} == want, container
print("container-check: provenance.json:", container)
EOF
cd "$ROOT"
PYTHONPATH=$ROOT "$VENV/bin/python" -m replication reference check --config config/ci.yaml \
    --run "$run_dir/results/ci" --reference results/reference/ci --diff "$WORK/reference-diff"
stage "checks"
echo "container-check: passed in $(($(date +%s) - start)) s"
