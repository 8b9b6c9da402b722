# One-shot replication in a container (README, "The container"):
#   docker build -t replication .
#   docker run --gpus all -v "$PWD/results:/app/results" replication                  # paper config
#   docker run -v "$PWD/results:/app/results" replication --configfile config/ci.yaml
# Arguments are passed to Snakemake (see scripts/entrypoint.sh).
#
# Base: Debian bookworm and its Python 3.11, pinned by digest. The digest was taken from a public
# Dockerfile pinning debian:bookworm-slim and has not been confirmed against a registry here. To
# confirm or refresh it (on a machine with Docker):
#   docker buildx imagetools inspect debian:bookworm-slim --format '{{json .Manifest.Digest}}'
# CI builds from a bookworm base made locally with mmdebstrap (scripts/container-check.sh) and
# passes it with --build-arg BASE=<local name>.
ARG BASE=debian:bookworm-slim@sha256:4b50eb66f977b4062683ff434ef18ac191da862dbe966961bc11990cf5791a8d
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    PATH=/opt/venv/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

# Python 3.11 and headless rendering (EGL, OSMesa) for MuJoCo from the Debian archive.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates git \
       libegl1 libgl1 libgles2 libosmesa6 libglfw3 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Everything from the same lock as .venv. torch==<version> resolves to the index's default wheel
# (CUDA, with its nvidia-* dependencies) on a normal host, to a local CPU wheel where the build
# sees a pip configuration that names one (CI mounts the host's, read-only).
COPY requirements.lock pyproject.toml README.md ./
RUN python3 -m venv /opt/venv \
    && pip install -r requirements.lock \
    && python -c "import re, torch; want = re.search(r'^torch==(\S+)', open('requirements.lock').read(), re.M)[1]; \
assert torch.__version__.split('+')[0] == want, torch.__version__"

COPY . .
# Snakemake's records (.snakemake) live in the mounted results/, so that a killed container's
# run resumes in the next one.
RUN pip install --no-deps --no-build-isolation -e . \
    && useradd --create-home --uid 1000 replicator \
    && mkdir -p /app/results \
    && ln -s results/.snakemake /app/.snakemake \
    && chown -R replicator /app

# What the image was built from (last, so that a new commit reuses the cached layers above).
ARG COMMIT=unknown
ARG LOCK_SHA256=unknown
LABEL org.opencontainers.image.revision="${COMMIT}" \
      org.replication.lock-sha256="${LOCK_SHA256}"
ENV REPLICATION_IMAGE_REVISION=${COMMIT}

USER 1000:1000
ENTRYPOINT ["scripts/entrypoint.sh"]
