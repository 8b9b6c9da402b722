"""Provenance: git state, config hash, machine, run times, and where the report shows them."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from replication import provenance as prov
from replication.analysis.report import write_report

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
