"""Provenance: git state, config hash, machine, run times, and where the report shows them."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from replication.analysis.report import write_report
from replication.plan import provenance as prov

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@needs_git
def test_git_state_names_the_commit_and_sees_a_dirty_tree(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    clean = prov.git_state(tmp_path)
    assert clean == {"commit": head.strip(), "dirty": False, "changed_files": 0}
    (tmp_path / "a.txt").write_text("two\n")
    assert prov.git_state(tmp_path)["dirty"] is True
    not_a_checkout = prov.git_state(tmp_path.parent / "nowhere")
    assert not_a_checkout["commit"] is None and "not a git checkout" in not_a_checkout["reason"]


def test_collect_records_config_hash_times_command_and_machine(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("name: tiny\ndevice: cpu\n")
    environ = {}
    prov.mark_start(environ, ["snakemake", "--configfile", "my config.yaml"])
    assert environ[prov.COMMAND_VARIABLE] == "snakemake --configfile 'my config.yaml'"
    record = prov.collect(config, {"name": "tiny", "device": "cpu"}, environ)
    assert record["config"]["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert record["run"]["command"] == environ[prov.COMMAND_VARIABLE]
    assert record["run"]["start"] == environ[prov.START_VARIABLE]
    assert 0 <= record["run"]["wall_seconds"] < 60
    machine = record["machine"]
    assert machine["cpu_cores"] >= 1 and machine["cpu_model"]
    assert machine["gpu"] == {"used": False, "reason": "the config's device is cpu"}
    assert record["software"]["snakemake"] == record["packages"]["snakemake"] != "not installed"
    json.dumps(record)  # serialisable as it is
    unknown = prov.collect(config, {"name": "tiny", "device": "cpu"}, {})
    assert unknown["run"]["start"] is None and unknown["run"]["wall_seconds"] is None


def test_the_command_line_writes_provenance_and_a_stamped_caption(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("name: tiny\ndevice: cpu\n")
    source = tmp_path / "figures.rst"
    source.write_text("Figures of the run.\n")
    out, caption = tmp_path / "provenance.json", tmp_path / "captions" / "figures.rst"
    cmd = [sys.executable, "-m", "replication", "provenance", "--config", str(config), "--out", str(out)]
    subprocess.run([*cmd, "--caption", str(source), str(caption)], check=True, capture_output=True)
    record = json.loads(out.read_text())
    assert record["config"]["file"] == str(config)
    assert caption.read_text() == f"Figures of the run.\n\n{prov.stamp(record)}\n"
    if record["git"]["commit"]:  # the project checkout
        assert record["git"]["commit"][:12] in prov.stamp(record)
    missing = subprocess.run(
        [*cmd[:-4], "--config", str(tmp_path / "none.yaml"), "--out", str(out)], text=True, capture_output=True
    )
    assert missing.returncode != 0 and "no such file" in missing.stderr


def test_report_has_a_provenance_section_and_stamped_captions(tmp_path):
    record = {
        "run": {"command": "snakemake --cores 2", "start": "2026-01-01T00:00:00+00:00", "end": "x", "wall_seconds": 5},
        "git": {"commit": "0123456789abcdef0123", "dirty": True},
        "config": {"file": "results/tiny/config.yaml", "sha256": "ab" * 32},
        "software": {"python": "3.11", "snakemake": "9"},
        "packages": {"torch": "2"},
        "machine": {"cpu_model": "Some CPU", "cpu_cores": 2, "gpu": {"used": False, "reason": "cpu"}},
    }
    provenance = tmp_path / "provenance.json"
    provenance.write_text(json.dumps(record))
    figure = tmp_path / "figures" / "F1.png"
    figure.parent.mkdir()
    figure.write_bytes(b"png")
    report = write_report(tmp_path / "report.md", {"name": "tiny"}, figures=[figure], provenance=provenance)
    text = report.read_text()
    assert "## Provenance" in text and "Some CPU, 2 cores" in text and "`snakemake --cores 2`" in text
    caption = next(line for line in text.splitlines() if line.startswith("*F1."))
    assert "commit 0123456789ab (tree dirty) with config config.yaml (sha256 abababababab)" in caption


def test_git_state_is_the_one_at_the_start_and_a_change_during_the_run_is_flagged(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("name: tiny\ndevice: cpu\n")
    environ: dict[str, str] = {}
    prov.mark_start(environ, ["snakemake"])
    start = json.loads(environ[prov.GIT_VARIABLE])
    assert start == prov.git_state()
    record = prov.collect(config, {"device": "cpu"}, environ)
    assert record["git"] == start  # nothing changed in between
    environ[prov.GIT_VARIABLE] = json.dumps({"commit": "0" * 40, "dirty": False, "changed_files": 0})
    changed = prov.collect(config, {"device": "cpu"}, environ)
    assert changed["git"]["commit"] == "0" * 40 and changed["git"]["changed_during_run"] is True
    assert changed["git"]["at_end"] == prov.git_state()


def test_container_state_reads_the_marker_and_the_image(tmp_path):
    assert prov.container_state({}, tmp_path) == {"in_container": False}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".containerenv").write_text("")
    environ = {"REPLICATION_IMAGE_ID": "sha256:" + "1" * 64, "REPLICATION_IMAGE_REVISION": "abc"}
    assert prov.container_state(environ, tmp_path) == {
        "in_container": True,
        "marker": "/run/.containerenv",
        "image_id": "sha256:" + "1" * 64,
        "image_revision": "abc",
    }


# --- the jobs' own provenance and the run's history of invocations


def test_job_record_names_package_commit_config_host_and_times(monkeypatch):
    record = prov.job_record({"name": "tiny", "seeds": [0]}, "2026-01-01T00:00:00+00:00", 12.34, environ={})
    assert record["package"] and record["host"] and record["start"] == "2026-01-01T00:00:00+00:00"
    assert record["wall_seconds"] == 12.3
    assert record["git"] == prov.git_state()
    assert record["config_sha256"] == prov.config_digest({"seeds": [0], "name": "tiny"})  # key order is no matter
    assert record["config_sha256"] != prov.config_digest({"name": "tiny", "seeds": [1]})
    # outside a checkout (the container has no .git): the commit is unknown, or the image's when it names one
    monkeypatch.setattr(prov, "git_state", lambda root=None: {"commit": None, "dirty": None, "reason": "no .git"})
    bare = prov.job_record({}, "t", 1.0, environ={})
    assert bare["git"]["commit"] is None and prov.code_commit(bare["git"]) == "unknown"
    image = prov.job_record({}, "t", 1.0, environ={prov.IMAGE_REVISION_VARIABLE: "abc123"})
    assert prov.code_commit(image["git"]) == "abc123"


@needs_git
def test_git_state_names_a_few_changed_files_and_counts_them_all(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty")
    for i in range(prov.MAX_FILES + 3):
        (tmp_path / f"f{i}.txt").write_text("x\n")
    state = prov.git_state(tmp_path)
    assert state["dirty"] is True and state["changed_files"] == prov.MAX_FILES + 3
    assert len(state["files"]) == prov.MAX_FILES and all(f.startswith("f") for f in state["files"])


def _job(commit, dirty=False, files=()):
    git = {"commit": commit, "dirty": dirty, "changed_files": len(files), **({"files": list(files)} if files else {})}
    return {"git": git, "start": "2026-01-01T00:00:00+00:00", "wall_seconds": 1.0}


def test_training_summary_counts_jobs_per_commit_and_the_dirty_ones():
    records = [_job("a" * 40), _job("a" * 40), _job("b" * 40, True, ["x.py"]), None]
    summary = prov.training_summary(records)
    assert summary["jobs"] == 4 and summary["not_recorded"] == 1 and summary["dirty"] is True
    assert summary["commits"] == [
        {"commit": "a" * 40, "jobs": 2, "dirty_jobs": 0, "files": []},
        {"commit": "b" * 40, "jobs": 1, "dirty_jobs": 1, "files": ["x.py"]},
    ]


def test_the_stamp_says_trained_by_and_regenerated_by_with_the_training_trees_state():
    base = {"config": {"file": "results/tiny/config.yaml", "sha256": "ab" * 32}}
    clean = {**base, "git": {"commit": "c" * 40, "dirty": True}, "training": prov.training_summary([_job("a" * 40)])}
    text = prov.stamp(clean)
    assert text.startswith(f"Trained by commit {'a' * 12} (1 jobs); regenerated by commit {'c' * 12} (tree dirty)")
    assert text.count("tree dirty") == 1  # the regenerating invocation's tree, not the training's
    dirty = {**clean, "training": prov.training_summary([_job("a" * 40, True, ["agents/online.py"])])}
    assert f"commit {'a' * 12} (1 jobs, tree dirty); regenerated" in prov.stamp(dirty)
    section = prov.markdown(dirty)
    assert "agents/online.py" in section and "trained by" in section
    assert prov.stamp({**base, "git": {"commit": "c" * 40}}).startswith("Made by commit")  # an older record


def test_provenance_keeps_every_invocation_although_the_file_is_deleted_between(tmp_path, monkeypatch):
    """Snakemake deletes provenance.json before its job runs: the invocations live on beside it."""
    config = tmp_path / "config.yaml"
    config.write_text("name: tiny\ndevice: cpu\n")
    out = tmp_path / "provenance.json"
    legacy = {"run": {"command": "snakemake (before)", "start": "2025-01-01T00:00:00+00:00"}, "git": {}}
    out.write_text(json.dumps(legacy))  # a file written before invocations were kept
    prov.keep_earlier(out)  # the Snakefile, when it is read
    out.unlink()
    monkeypatch.setenv(prov.START_VARIABLE, "2026-01-01T00:00:00+00:00")
    for command in ("snakemake --cores 2", "snakemake --forcerun tables"):
        monkeypatch.setenv(prov.COMMAND_VARIABLE, command)
        record = prov.write(config, out)
        prov.keep_earlier(out)  # a second reading changes nothing
        out.unlink()
    commands = [i["run"]["command"] for i in record["invocations"]]
    assert commands == ["snakemake (before)", "snakemake --cores 2", "snakemake --forcerun tables"]
    assert record["run"]["command"] == "snakemake --forcerun tables"  # the top level: the regenerating one
    assert json.loads(prov.history_file(out).read_text()) == record["invocations"]
    assert record["training"]["jobs"] > 0 and record["training"]["not_recorded"] == record["training"]["jobs"]


def test_job_records_read_every_jobs_summary_of_the_plan(tmp_path, monkeypatch):
    """Where the workflow writes them (results/<name> under the working directory), and in a study that
    replication assemble wrote elsewhere (``run``)."""
    from replication.plan import config as rconfig
    from replication.plan.plan import Plan

    cfg = rconfig.resolve({"name": "tiny", "envs": ["hopper"], "seeds": [0], "finetune": {"methods": ["iql"]}})
    plan = Plan.build(cfg)
    files = prov._job_summaries(plan)
    rules = {p.job.rule for p in (*plan.jobs, *plan.controls)}
    assert len(files) == len(plan.jobs) + len(plan.controls) and {"online", "control", "offline"} <= rules
    for path, kind in files:
        summary = {"summaries": {"iql": {"provenance": _job("a" * 40)}, "cql": {}}} if kind == "offline" else {}
        if "online.json" in str(path):
            summary = {"provenance": _job("b" * 40)}
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(summary))
    monkeypatch.chdir(tmp_path)
    assembled = tmp_path / "elsewhere" / "study"
    shutil.copytree(tmp_path / plan.layout.results, assembled)
    offline = sum(kind == "offline" for _, kind in files)
    for records in (prov.job_records(cfg), prov.job_records(cfg, assembled)):
        assert len(records) == len(files) + offline  # one per offline learner
        assert sum(r is not None for r in records) == offline + 1
    assert not any(prov.job_records(cfg, tmp_path / "elsewhere"))  # not a run directory: no record found
