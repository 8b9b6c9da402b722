"""Provenance of a run: which code, config, software and machine made its results, and when.

``results/<name>/provenance.json`` is written by the workflow's ``provenance`` rule after every
result (tables, statistics, figures, scorecard, videos) and before the report, which shows it as a
section and stamps every figure caption with its commit and config hash. It holds:

- ``git``: the commit of the project checkout and whether its tree was dirty (changed or untracked,
  not ignored, files) when the run started, or why there is none (no git, not a checkout); if
  either changed before the provenance job, also ``changed_during_run`` and the state ``at_end``;
- ``config``: the resolved config file every job read and its SHA-256;
- ``software``: Python, Snakemake and the key packages' versions;
- ``machine``: CPU model and core count, and the GPU (model, driver) when the run's device uses one;
- ``run``: the exact Snakemake command, start (when Snakemake read the workflow), end (when the
  ``provenance`` job ran: every result was made, only the report was left) and the wall time between.

Start, command and the git state at the start come from the Snakemake process through the environment of its local jobs
(:data:`START_VARIABLE`, :data:`COMMAND_VARIABLE`, set by :func:`mark_start` in the Snakefile); a
rerun of the ``provenance`` job outside such a process records them as unknown.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from replication.io import PROJECT_ROOT, read_json, write_json, write_text
from replication.runinfo import KEY_PACKAGES

START_VARIABLE = "REPLICATION_RUN_START"
COMMAND_VARIABLE = "REPLICATION_RUN_COMMAND"
GIT_VARIABLE = "REPLICATION_RUN_GIT"  # the checkout's git state when the run started (JSON)
PACKAGES = (*KEY_PACKAGES, "rliable", "seaborn", "minari", "imageio", "imageio-ffmpeg")


def now() -> str:
    """The current time, ISO 8601 in UTC with seconds."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def mark_start(environ: os._Environ[str] | dict[str, str] = os.environ, argv: Sequence[str] = sys.argv) -> None:
    """Record the run's start and command for its jobs (the Snakefile calls this once, when it is read)."""
    environ.setdefault(START_VARIABLE, now())
    environ.setdefault(COMMAND_VARIABLE, shlex.join(argv))
    environ.setdefault(GIT_VARIABLE, json.dumps(git_state()))


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


def git_state(root: Path | str = PROJECT_ROOT) -> dict[str, Any]:
    """Commit and dirtiness of the checkout at ``root``; ``commit`` None and a ``reason`` without one."""
    root = Path(root)
    if shutil.which("git") is None:
        return {"commit": None, "dirty": None, "reason": "git is not installed"}
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changed = [line for line in _git(root, "status", "--porcelain").splitlines() if line]
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        return {"commit": None, "dirty": None, "reason": f"{root} is not a git checkout ({detail.strip()})"}
    return {"commit": commit, "dirty": bool(changed), "changed_files": len(changed)}


def sha256_of(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_state(device: str) -> dict[str, Any]:
    """The GPU the run's ``device`` setting uses: model and driver, or why none was used."""
    if device == "cpu":
        return {"used": False, "reason": "the config's device is cpu"}
    import torch

    if not torch.cuda.is_available():
        return {"used": False, "reason": f"device {device}: no CUDA device visible"}
    gpu: dict[str, Any] = {
        "used": True,
        "model": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
    }
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=30)
        gpu["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    else:
        gpu["driver"] = None
    return gpu


def container_state(environ: Mapping[str, str] = os.environ, root: Path | str = "/") -> dict[str, Any]:
    """Whether the run is inside a container (Docker's ``/.dockerenv``, Podman's ``/run/.containerenv``)
    and, inside one, the image id the run command passed (``REPLICATION_IMAGE_ID``, README) and the
    commit the image was built from (``REPLICATION_IMAGE_REVISION``, set by the Dockerfile)."""
    root = Path(root)
    markers = [name for name in (".dockerenv", "run/.containerenv") if (root / name).exists()]
    if not markers:
        return {"in_container": False}
    return {
        "in_container": True,
        "marker": "/" + markers[0],
        "image_id": environ.get("REPLICATION_IMAGE_ID") or None,
        "image_revision": environ.get("REPLICATION_IMAGE_REVISION") or None,
    }


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _seconds_between(start: str | None, end: str) -> float | None:
    if not start:
        return None
    try:
        began = datetime.datetime.fromisoformat(start)
    except ValueError:
        return None
    return round((datetime.datetime.fromisoformat(end) - began).total_seconds(), 1)


def collect(config_file: Path | str, cfg: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict:
    """The provenance record of a run whose resolved config is ``config_file`` (``cfg`` its content)."""
    end = now()
    start = environ.get(START_VARIABLE)
    git_end = git_state()
    git = json.loads(environ[GIT_VARIABLE]) if environ.get(GIT_VARIABLE) else git_end  # what the jobs ran
    if git != git_end:
        git = {**git, "changed_during_run": True, "at_end": git_end}
    return {
        "run": {
            "name": cfg.get("name"),
            "command": environ.get(COMMAND_VARIABLE),
            "start": start,
            "end": end,
            "wall_seconds": _seconds_between(start, end),
        },
        "git": git,
        "config": {"file": str(config_file), "sha256": sha256_of(config_file)},
        "software": {"python": platform.python_version(), "snakemake": versions(("snakemake",))["snakemake"]},
        "packages": versions(),
        "machine": {
            "host": platform.node(),
            "platform": platform.platform(),
            "cpu_model": cpu_model(),
            "cpu_cores": os.cpu_count(),
            "device": cfg.get("device", "auto"),
            "gpu": gpu_state(str(cfg.get("device", "auto"))),
            "container": container_state(environ),
        },
    }


def stamp(record: Mapping[str, Any]) -> str:
    """One line naming the commit and config that made a run's figures, for captions."""
    git = record.get("git", {})
    if git.get("commit"):
        code = f"commit {git['commit'][:12]}" + (" (tree dirty)" if git.get("dirty") else "")
    else:
        code = "no git commit recorded"
    config = record.get("config", {})
    return f"Made by {code} with config {Path(config.get('file', '?')).name} (sha256 {config.get('sha256', '?')[:12]})."


def _cell(value: Any) -> str:
    return "unknown" if value is None else str(value).replace("|", "\\|")


def _container_text(container: Mapping[str, Any]) -> str | None:
    if not container:
        return None
    if not container.get("in_container"):
        return "no"
    return f"yes: image {container.get('image_id')} (built from {container.get('image_revision')})"


def markdown(record: Mapping[str, Any]) -> str:
    """The report's provenance section body: a two-column table."""
    run, git, machine = record.get("run", {}), record.get("git", {}), record.get("machine", {})
    gpu = machine.get("gpu", {})
    rows = [
        ("command", f"`{run.get('command')}`" if run.get("command") else None),
        ("start (UTC)", run.get("start")),
        ("end (UTC; every result made, before the report)", run.get("end")),
        ("wall time (s)", run.get("wall_seconds")),
        ("git commit", git.get("commit") or git.get("reason")),
        ("tree dirty", None if git.get("dirty") is None else ("yes" if git["dirty"] else "no")),
        ("checkout changed during the run", "yes" if git.get("changed_during_run") else "no"),
        ("config", f"{record.get('config', {}).get('file')} (sha256 {record.get('config', {}).get('sha256')})"),
        ("Snakemake", record.get("software", {}).get("snakemake")),
        ("Python", record.get("software", {}).get("python")),
        ("CPU", f"{machine.get('cpu_model')}, {machine.get('cpu_cores')} cores"),
        ("host", f"{machine.get('host')} ({machine.get('platform')})"),
        ("container", _container_text(machine.get("container", {}))),
        ("device setting", machine.get("device")),
        (
            "GPU",
            f"{gpu.get('model')} x{gpu.get('count')}, driver {gpu.get('driver')}, CUDA {gpu.get('cuda')}"
            if gpu.get("used")
            else f"not used: {gpu.get('reason')}",
        ),
    ]
    lines = ["| | |", "|---|---|", *(f"| {key} | {_cell(value)} |" for key, value in rows)]
    packages = ", ".join(f"{name} {version}" for name, version in record.get("packages", {}).items())
    return "\n".join([*lines, "", f"Packages: {packages}." if packages else ""]).rstrip() + "\n"


def write_caption(source: Path | str, record: Mapping[str, Any], out: Path | str) -> None:
    """An HTML-report caption file: ``source`` (reStructuredText) with the run's stamp appended."""
    write_text(out, Path(source).read_text().rstrip() + "\n\n" + stamp(record) + "\n")


def write(config_file: Path | str, out: Path | str, captions: Sequence[Sequence[str]] = ()) -> dict[str, Any]:
    """Write ``out`` (provenance.json) of the run configured in ``config_file``, and each caption
    ``(source, out)`` stamped with it; returns the record."""
    from replication.plan.config import read_yaml

    if not Path(config_file).is_file():
        raise ValueError(f"--config {config_file}: no such file")
    record = collect(config_file, read_yaml(config_file))
    write_json(out, record)
    for source, caption in captions:
        write_caption(source, record, caption)
    return record


def load(path: Path | str) -> dict[str, Any]:
    """A provenance.json; a missing or unreadable file is an error naming it."""
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read provenance file {path}: {error}") from error
