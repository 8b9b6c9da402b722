"""`replication estimate`: the work of a config, counted independently, and hours from measured throughput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replication.cli import main as cli
from replication.plan import config, estimate
from replication.plan.plan import Plan

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def paper():
    return config.load("config/paper.yaml")


def test_paper_work_per_stage(paper):
    stages, source = estimate.estimate(paper)
    assert source == "built-in" or source.startswith("measured")
    cells = 12 * 5 + 2 * 5  # twelve environments, plus the two C5 Kitchen reward cells, x 5 seeds
    assert stages["online"].jobs == cells
    assert stages["online"].gradient_steps == cells * (1_000_000 - paper["online"]["learning_starts"])
    algos = paper["offline"]
    # every offline learner of the grid: 12 envs x 5 seeds x (5 buffer pauses + 2 newdata) x 3 algorithms,
    # and Cal-QL on one buffer dataset of each C5 cell
    per_cell = sum(algos[a]["gradient_steps"] for a in ("iql", "cql", "calql"))
    c5 = 2 * 5 * algos["calql"]["gradient_steps"]
    assert stages["offline"].gradient_steps == 12 * 5 * 7 * per_cell + c5
    assert stages["newdata"].env_steps == 12 * 5 * 2 * paper["newdata"]["size"]
    for stage in stages.values():
        assert 0 < stage.gpu_seconds <= stage.seconds


def test_measured_throughput_replaces_the_built_in_figures(tmp_path, monkeypatch, paper):
    monkeypatch.chdir(tmp_path)
    before, _ = estimate.estimate(paper)
    summary = tmp_path / "results" / "paper" / "cells" / "hopper" / "seed0" / "offline" / "buffer-p200000" / "cql"
    summary.mkdir(parents=True)
    timings = {"gradient_steps_per_second": 137.0, "train_seconds": 1.0}
    (summary / "offline.json").write_text(json.dumps({"algo": "cql", "timings": timings}))
    after, source = estimate.estimate(paper)
    assert source == "measured by this config's finished jobs: offline cql"
    assert after["offline"].seconds < before["offline"].seconds  # 137/s instead of 13.7/s for CQL
    assert after["online"].seconds == before["online"].seconds


def test_cli_prints_cpu_and_gpu_hours(capsys):
    assert cli(["estimate", "--configfile", "config/config.yaml"]) == 0
    out = capsys.readouterr().out
    assert "CPU hours" in out and "GPU hours" in out
    assert out.splitlines()[1].split()[:3] == ["stage", "jobs", "env"]


def test_batch_jobs_pay_the_start_up_once_per_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no finished jobs here: built-in figures in both layouts
    default = config.load(ROOT / "config" / "config.yaml")
    assert default["batch_jobs"] == "cell"
    whole, _ = estimate.estimate(default)
    batched, _ = estimate.estimate({**default, "batch_jobs": True})
    single, _ = estimate.estimate({**default, "batch_jobs": False})
    assert {k: s.jobs for k, s in whole.items()} == {"online": 2, "newdata": 0, "offline": 2, "finetune": 2, "cell": 12}
    assert {k: s.jobs for k, s in batched.items()} == {"online": 14, "newdata": 12, "offline": 14, "finetune": 14}
    assert {k: s.jobs for k, s in single.items()} == {"online": 14, "newdata": 24, "offline": 50, "finetune": 50}
    # the same jobs as check-config's grid (replication.plan.plan.Plan.stage_counts)
    assert {k: s.jobs for k, s in whole.items()} == {k: j for k, (j, _) in Plan.build(default).stage_counts().items()}
    # a cell's one job pays one start-up (its online run's), the stage batch jobs one each
    stages = ("newdata", "offline", "finetune")
    saved = sum(batched[s].seconds - whole[s].seconds for s in stages)
    assert saved == pytest.approx(sum(12 * estimate.JOB_OVERHEAD_SECONDS[s] for s in stages))
    for stage in ("newdata", "offline", "finetune"):
        assert batched[stage].gradient_steps == single[stage].gradient_steps
        saved = single[stage].seconds - batched[stage].seconds
        fewer = single[stage].jobs - batched[stage].jobs
        assert saved == pytest.approx(fewer * estimate.JOB_OVERHEAD_SECONDS[stage])


# --- disk -------------------------------------------------------------------------------------------


def test_disk_model_dimensions_are_the_environments_own():
    from replication.agents.envs import env_spaces
    from replication.plan import disk

    for env, (obs, act) in disk.DIMS.items():
        spaces = env_spaces(env)
        assert (spaces[0].shape, spaces[1].shape) == ((obs,), (act,)), env


def test_disk_estimate_of_the_paper_profile(paper, capsys):
    """Datasets dominate: the buffer datasets alone (0.2 + ... + 1.0 = 3 T steps per cell) are counted."""
    from replication.plan import disk

    stages = disk.disk_estimate(paper)
    humanoid = 5 * 3 * 1_000_000 * (348 + 17 + 1) * 4  # float32 observations, actions, rewards
    assert stages["online"].final > humanoid
    final, peak = disk.needs(paper)
    assert 50e9 < final < peak < 500e9
    assert disk.needs(paper, cores=100)[1] > peak  # more jobs at once, more checkpoints at once
    assert cli(["estimate", "--configfile", str(ROOT / "config" / "paper.yaml")]) == 0
    out = capsys.readouterr().out
    assert "disk under results/paper/" in out and f"total{disk.human(final):>17}{disk.human(peak):>12}" in out
