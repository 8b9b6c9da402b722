# One-shot replication in a pinned GPU container:
#   docker build -t replication .
#   docker run --gpus all -v "$PWD/results:/app/results" replication                  # paper config
#   docker run --gpus all -v "$PWD/results:/app/results" replication --configfile config/config.yaml
# Arguments are passed to Snakemake (see scripts/entrypoint.sh).
#
# The base image is pinned by digest. To confirm or refresh the digest (on a machine with Docker):
#   docker buildx imagetools inspect pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime --format '{{json .Manifest.Digest}}'
FROM pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime@sha256:6acf597eeb8e376a96580dde4952f37cc017fef732bb40bfc73f28f25e3f64b4

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl

# Headless rendering (EGL, OSMesa) for MuJoCo; no display in the container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libgl1 libgles2 libosmesa6 libglfw3 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# The CUDA torch of the base image stays; everything else comes from the same lock as .venv.
COPY requirements.lock pyproject.toml README.md ./
RUN grep -v '^torch==' requirements.lock > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

COPY . .
RUN pip install --no-deps --no-build-isolation -e . \
    && useradd --create-home --uid 1000 replicator \
    && mkdir -p /app/results \
    && chown -R replicator /app

USER 1000:1000
ENTRYPOINT ["scripts/entrypoint.sh"]
