"""The container's recipe and entrypoint, checked outside the container (no Docker engine needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DOCKERFILE = ROOT / "Dockerfile"


def run(*cmd: str | Path, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_hadolint_finds_nothing():
    result = run(VENV_BIN / "hadolint", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_from_is_pinned_by_digest(tmp_path):
    check = ROOT / "scripts" / "check-dockerfile-pins.py"
    assert run(sys.executable, check, DOCKERFILE).returncode == 0
    tagged = tmp_path / "Dockerfile"
    digest = "sha256:" + "0" * 64
    tagged.write_text(f"FROM python:3.11@{digest} AS build\nFROM build\nFROM --platform=linux/amd64 debian:12\n")
    result = run(sys.executable, check, tagged)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"{tagged}:3: image not pinned by digest (@sha256:...): FROM --platform=linux/amd64 debian:12"
    )


def test_arg_base_is_checked_with_its_default(tmp_path):
    check = ROOT / "scripts" / "check-dockerfile-pins.py"
    pinned, tagged = tmp_path / "pinned", tmp_path / "tagged"
    pinned.write_text(f"ARG BASE=debian:bookworm-slim@sha256:{'a' * 64}\nFROM ${{BASE}}\n")
    tagged.write_text("ARG BASE=debian:bookworm-slim\nFROM ${BASE}\n")
    assert run(sys.executable, check, pinned).returncode == 0
    result = run(sys.executable, check, tagged)
    assert result.returncode == 1 and "FROM ${BASE}" in result.stderr


def test_image_is_bookworm_and_everything_comes_from_the_lock():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE=debian:bookworm-slim@sha256:[0-9a-f]{64}$", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{BASE\}$", text, re.MULTILINE)
    assert "pip install -r requirements.lock" in text  # torch included: the lock, exactly
    assert re.search(r"^LABEL org.opencontainers.image.revision=", text, re.MULTILINE)
    assert "org.replication.lock-sha256" in text
    assert re.search(r"^USER 1000:1000$", text, re.MULTILINE), "the image must not run as root"


def test_snakemake_lint_is_clean(tmp_path):
    result = run(VENV_BIN / "snakemake", "--lint", "--directory", tmp_path, "--snakefile", ROOT / "Snakefile")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize(
    ("args", "config"),
    [((), "config/paper.yaml"), (("--configfile", "config/ci.yaml"), "config/ci.yaml")],
)
def test_entrypoint_runs_the_paper_config_unless_told_otherwise(tmp_path, args, config):
    """Outside the container the entrypoint finds .venv's Snakemake and passes arguments through."""
    result = run(ROOT / "scripts" / "entrypoint.sh", *args, "-n", "--directory", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    first = result.stdout.splitlines()[0]
    assert first.startswith("entrypoint: ") and f"--configfile {config}" in first
    name = "paper" if config.endswith("paper.yaml") else "ci"
    assert (tmp_path / "results" / name / "config.yaml").exists()
    assert "This was a dry-run" in result.stdout
