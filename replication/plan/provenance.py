"""Provenance of a run: which code, config, software and machine made its results, and when.

``results/<name>/provenance.json`` is written by the workflow's ``provenance`` rule after every
result (tables, statistics, figures, scorecard, videos) and before the report, which shows it as a
section and stamps every figure caption with the commits that trained the agents and the one that
regenerated the outputs, and the config hash. Its top-level keys describe the invocation that wrote
it (the regenerating one):

- ``git``: the commit of the project checkout and whether its tree was dirty (changed or untracked,
  not ignored, files) when the run started, or why there is none (no git, not a checkout); if
  either changed before the provenance job, also ``changed_during_run`` and the state ``at_end``;
- ``config``: the resolved config file every job read and its SHA-256;
- ``software``: Python, Snakemake and the key packages' versions;
- ``machine``: CPU model and core count, and the GPU (model, driver) when the run's device uses one;
- ``run``: the exact Snakemake command, start (when Snakemake read the workflow), end (when the
  ``provenance`` job ran: every result was made, only the report was left) and the wall time between;
- ``invocations``: every invocation that wrote the file, oldest first (each with the keys above),
  kept across runs in ``provenance-invocations.json`` beside it (:func:`remember`);
- ``training``: the commits of the jobs that made the results (:func:`training_summary`), read
  from the ``provenance`` block each job writes into its summary (:func:`job_record`): online
  ``online.json``, control ``control.json``, newdata the dataset's ``.h5.json``, each offline learner
  in ``offline.json``, fine-tuning ``finetune.json``.

A job's block is no part of its key or of any result: it changes no rerun decision and no tidy row.

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
from replication.runinfo import KEY_PACKAGES, package_version

START_VARIABLE = "REPLICATION_RUN_START"
COMMAND_VARIABLE = "REPLICATION_RUN_COMMAND"
GIT_VARIABLE = "REPLICATION_RUN_GIT"  # the checkout's git state when the run started (JSON)
IMAGE_REVISION_VARIABLE = "REPLICATION_IMAGE_REVISION"  # the commit a container image was built from
HISTORY_NAME = "provenance-invocations.json"  # beside provenance.json: every invocation, kept across runs
INVOCATION_KEYS = ("run", "git", "config", "software", "packages", "machine")
MAX_FILES = 5  # changed files named in a git state (all are counted)
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
    return out.stdout.rstrip()


def git_state(root: Path | str = PROJECT_ROOT) -> dict[str, Any]:
    """Commit and dirtiness of the checkout at ``root``; ``commit`` None and a ``reason`` without one."""
    root = Path(root)
    if shutil.which("git") is None:
        return {"commit": None, "dirty": None, "reason": "git is not installed"}
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        changed = [line[3:] for line in _git(root, "status", "--porcelain").splitlines() if line.strip()]
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        return {"commit": None, "dirty": None, "reason": f"{root} is not a git checkout ({detail.strip()})"}
    state: dict[str, Any] = {"commit": commit, "dirty": bool(changed), "changed_files": len(changed)}
    if changed:
        state["files"] = changed[:MAX_FILES]
    return state


def code_commit(git: Mapping[str, Any]) -> str:
    """The commit of a git state, else the container image's (``image_revision``), else ``unknown``."""
    return git.get("commit") or git.get("image_revision") or "unknown"


def job_record(
    cfg: Mapping[str, Any], start: str, wall_seconds: float, environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """The provenance block of a job's summary: package version, git state (outside a checkout, the
    container image's commit when the image names it), the config's digest, host, start and wall time."""
    git = git_state()
    if git["commit"] is None and environ.get(IMAGE_REVISION_VARIABLE):
        git["image_revision"] = environ[IMAGE_REVISION_VARIABLE]
    return {
        "package": package_version(),
        "git": git,
        "config_sha256": config_digest(cfg),
        "host": platform.node(),
        "start": start,
        "wall_seconds": round(wall_seconds, 1),
    }


def config_digest(cfg: Mapping[str, Any]) -> str:
    """SHA-256 of a config as canonical JSON (sorted keys): the same settings give the same digest."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


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


def _code(git: Mapping[str, Any]) -> str:
    if git.get("commit"):
        return f"commit {git['commit'][:12]}" + (" (tree dirty)" if git.get("dirty") else "")
    return "no git commit recorded"


def trained_text(training: Mapping[str, Any]) -> str:
    """The commits that trained a run's agents, e.g. ``commit 0123456789ab (54 jobs, tree dirty)``."""
    parts = []
    for entry in training.get("commits", []):
        commit = entry["commit"]
        name = "an unknown commit" if commit == "unknown" else f"commit {commit[:12]}"
        dirty = ", tree dirty" if entry.get("dirty_jobs") else ""
        parts.append(f"{name} ({entry['jobs']} jobs{dirty})")
    if training.get("not_recorded"):
        parts.append(f"{training['not_recorded']} jobs without a record")
    return ", ".join(parts) or "no job recorded"


def stamp(record: Mapping[str, Any]) -> str:
    """One line naming the commits that trained and regenerated a run's figures, and its config, for
    captions; "(tree dirty)" follows each commit whose tree was dirty."""
    config = record.get("config", {})
    made = f"with config {Path(config.get('file', '?')).name} (sha256 {config.get('sha256', '?')[:12]})."
    regenerated = _code(record.get("git", {}))
    if "training" not in record:  # a record written before jobs recorded their commit
        return f"Made by {regenerated} {made}"
    return f"Trained by {trained_text(record['training'])}; regenerated by {regenerated} {made}"


# --- the jobs' records, summarised for the run


def _job_summaries(plan: Any) -> list[tuple[Path, str]]:
    """(summary file, kind) of every job of ``plan`` (:class:`replication.plan.plan.Plan`)."""
    files = []
    for planned in (*plan.jobs, *plan.controls):
        rule, outputs = planned.job.rule, planned.outputs
        if rule == "control":
            files.append((Path(plan.layout.control_summary(planned.job.env, planned.job.seed)), "job"))
        elif rule == "newdata":
            files.append((Path(outputs["meta"]), "job"))
        else:
            files.append((Path(outputs["summary"]), "offline" if rule == "offline" else "job"))
    return files


def job_records(cfg: dict[str, Any], run: Path | str | None = None) -> list[dict[str, Any] | None]:
    """The provenance block of every job of the run configured by ``cfg`` (one per offline learner),
    ``None`` for a job whose summary has none (made before jobs recorded it) or is missing. ``run``: the
    run's directory (default: ``results/<name>`` under the working directory, where the workflow puts it;
    an assembled study lies wherever ``replication assemble`` wrote it)."""
    from replication.plan import config
    from replication.plan.plan import Plan

    plan = Plan.build(config.resolve(cfg))
    records: list[dict[str, Any] | None] = []
    for path, kind in _job_summaries(plan):
        if run is not None:
            path = Path(run) / path.relative_to(plan.layout.results)
        try:
            summary = read_json(path)
        except (OSError, ValueError):
            records.append(None)
            continue
        parts = list(summary.get("summaries", {}).values()) if kind == "offline" else [summary]
        records += [part.get("provenance") for part in parts] or [None]
    return records


def training_summary(records: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """The commits that made a run's results: per commit its jobs, how many ran in a dirty tree and
    which files were changed (at most :data:`MAX_FILES`); most jobs first."""
    by_commit: dict[str, dict[str, Any]] = {}
    for record in filter(None, records):
        git = record.get("git", {})
        entry = by_commit.setdefault(code_commit(git), {"jobs": 0, "dirty_jobs": 0, "files": []})
        entry["jobs"] += 1
        if git.get("dirty"):
            entry["dirty_jobs"] += 1
            entry["files"] = list(dict.fromkeys([*entry["files"], *git.get("files", [])]))[:MAX_FILES]
    commits = [{"commit": c, **e} for c, e in sorted(by_commit.items(), key=lambda item: -item[1]["jobs"])]
    starts = sorted(r["start"] for r in records if r and r.get("start"))
    return {
        "jobs": len(records),
        "not_recorded": sum(r is None for r in records),
        "commits": commits,
        "dirty": any(c["dirty_jobs"] for c in commits),
        "first_start": starts[0] if starts else None,
        "last_start": starts[-1] if starts else None,
    }


# --- the invocations, kept across runs


def history_file(out: Path | str) -> Path:
    """Where the invocations of the run whose provenance is ``out`` are kept (Snakemake deletes ``out``
    before its job runs)."""
    return Path(out).with_name(HISTORY_NAME)


def _invocation(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in INVOCATION_KEYS if key in record}


def _identity(invocation: Mapping[str, Any]) -> str:
    return json.dumps(invocation.get("run", {}), sort_keys=True)


def remember(history: Path | str, invocations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Append ``invocations`` not yet in ``history`` (written atomically); returns every one, oldest first."""
    history = Path(history)
    kept: list[dict[str, Any]] = read_json(history) if history.exists() else []
    known = {_identity(i) for i in kept}
    added = [dict(i) for i in invocations if _identity(i) not in known]
    if added or not history.exists():
        kept += added
        write_json(history, kept)
    return kept


def keep_earlier(out: Path | str) -> list[dict[str, Any]]:
    """Keep the invocations of an existing ``out`` (provenance.json) in its history before a run may
    delete it: also those of a file written before the history existed (the Snakefile calls this)."""
    if not Path(out).is_file():
        return []
    try:
        record = read_json(out)
    except (OSError, ValueError):
        return []
    return remember(history_file(out), record.get("invocations") or [_invocation(record)])


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
        ("git commit (this invocation)", git.get("commit") or git.get("reason")),
        ("tree dirty (this invocation)", None if git.get("dirty") is None else ("yes" if git["dirty"] else "no")),
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
    if "training" in record:
        rows.insert(0, ("trained by (the jobs' own records)", trained_text(record["training"])))
        files = [f for c in record["training"]["commits"] for f in c["files"]]
        rows.insert(1, ("files changed when trained", ", ".join(files) if files else "none"))
    lines = ["| | |", "|---|---|", *(f"| {key} | {_cell(value)} |" for key, value in rows)]
    packages = ", ".join(f"{name} {version}" for name, version in record.get("packages", {}).items())
    text = [*lines, "", f"Packages: {packages}." if packages else ""]
    if len(record.get("invocations", [])) > 1:
        text += ["", *invocations_table(record["invocations"])]
    return "\n".join(text).rstrip() + "\n"


def invocations_table(invocations: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every invocation that wrote the run's provenance, oldest first (Markdown lines)."""
    lines = ["Invocations (oldest first; the last one regenerated this report):", ""]
    lines += ["| start (UTC) | wall time (s) | commit | command |", "|---|---|---|---|"]
    for inv in invocations:
        run = inv.get("run", {})
        command = f"`{run['command']}`" if run.get("command") else None
        cells = (run.get("start"), run.get("wall_seconds"), _code(inv.get("git", {})), command)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def write_caption(source: Path | str, record: Mapping[str, Any], out: Path | str) -> None:
    """An HTML-report caption file: ``source`` (reStructuredText) with the run's stamp appended."""
    write_text(out, Path(source).read_text().rstrip() + "\n\n" + stamp(record) + "\n")


def write(
    config_file: Path | str, out: Path | str, captions: Sequence[Sequence[str]] = (), run: Path | str | None = None
) -> dict[str, Any]:
    """Write ``out`` (provenance.json) of the run configured in ``config_file``: this invocation, every
    earlier one kept in the history, and the training jobs' commits (read under ``run``, see
    :func:`job_records`); also each caption ``(source, out)`` stamped with it. Returns the record."""
    from replication.plan.config import read_yaml

    if not Path(config_file).is_file():
        raise ValueError(f"--config {config_file}: no such file")
    cfg = read_yaml(config_file)
    invocation = collect(config_file, cfg)
    record = {
        **invocation,
        "invocations": remember(history_file(out), [invocation]),
        "training": training_summary(job_records(cfg, run)),
    }
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
