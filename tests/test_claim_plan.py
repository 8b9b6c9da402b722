"""A plan cut to some claims (config key ``claims``): complete for their tests, and nothing more."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from replication import cli
from replication.analysis import calibration, scorecard
from replication.analysis.selection import Expected
from replication.plan import claims, config, estimate, workflow
from replication.plan.plan import Plan
from replication.plan.schema import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
CLAIMS = claims.claim_ids()


def load(name: str, **update) -> dict:
    return config.resolve(config.deep_merge(config.read_yaml(ROOT / "config" / f"{name}.yaml"), update))


def planned(plan: Plan) -> list[workflow.Job]:
    return plan.every_job()


def test_claims_is_a_validated_key_and_unset_plans_the_whole_grid() -> None:
    whole = Plan.build(load("config"))
    assert whole.claims is None and not whole.omitted
    assert Plan.build(load("config", claims=None)).jobs == whole.jobs
    assert [j.job for j in whole.jobs] == workflow.jobs(load("config"))
    assert len(whole.controls) == whole.counts()["online"]
    with pytest.raises(ConfigError, match=r"^config key claims: unknown claim\(s\) \['C9'\]; valid: C1, C2, C3"):
        load("config", claims=["C9"])
    with pytest.raises(ConfigError, match="config key claims"):
        load("config", claims="C3")


@pytest.fixture(scope="module")
def study() -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The calibration grid (the paper profile with WSRL) at 5 seeds, its synthetic results and their S1."""
    cfg = calibration.calibration_config(None, 5)
    df, expected = calibration.synthetic_results(cfg, "effect", 0.1, np.random.default_rng(3))
    return cfg, df, scorecard.evaluate_claims(df, expected, reps=200, seed=1)


@pytest.mark.parametrize("cid", CLAIMS)
def test_a_claims_plan_gives_its_scorecard_exactly(study: tuple, cid: str) -> None:
    """S1 of a claim on only the rows its cut plan's jobs write = S1 of that claim on the whole grid."""
    cfg, df, full = study
    cut_cfg = {**cfg, "claims": [cid]}
    plan = Plan.build(cut_cfg)
    rows = claims.rows_of(cut_cfg, planned(plan), df)
    assert 0 < len(rows) < len(df)
    table = scorecard.evaluate_claims(rows, Expected.from_config(cut_cfg), reps=200, seed=1)
    mine, theirs = (t[t["claim"] == cid].reset_index(drop=True) for t in (table, full))
    assert set(mine["verdict"]) - {scorecard.NOT_EVALUATED}, "the claim's tests ran no statistic"
    pd.testing.assert_frame_equal(mine, theirs)
    others = table[table["claim"] != cid]
    assert set(others["verdict"]) == set(others["claim_verdict"]) == {scorecard.NOT_PLANNED}


@pytest.mark.parametrize("cid", CLAIMS)
def test_a_claims_plan_has_no_job_its_tests_do_not_read(cid: str) -> None:
    cfg = {**calibration.calibration_config(None, 2), "claims": [cid]}
    wanted = claims.claim_reads(cfg, [cid])
    plan = Plan.build(cfg)
    jobs = planned(plan)
    needed = {(n.rule, n.env, n.seed, n.variant) for j in jobs for n in claims.needs(cfg, j)}
    for job in jobs:
        assert claims.reads_any(cfg, job, wanted) or (job.rule, job.env, job.seed, job.variant) in needed, job
    assert bool(plan.controls) == any(t.get("compared_with") == "control" for t in claims.load()[cid]["tests"])


def test_rows_of_the_whole_grid_are_every_row(study: tuple) -> None:
    cfg, df, _ = study
    assert len(claims.rows_of(cfg, planned(Plan.build(cfg)), df)) == len(df)


def test_a_dry_run_of_a_claim_plans_only_its_jobs(tmp_path: Path) -> None:
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "--cores", "2", "-n", "--configfile", str(ROOT / "config/ci.yaml")]
    result = subprocess.run([*cmd, "--config", "claims=[C3]"], capture_output=True, text=True, check=True, timeout=600)
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout.split("Job stats:")[1], re.M))
    plan = Plan.build(load("ci", claims=["C3"]))
    assert plan.counts() == {"online": 6, "offline": 6, "finetune": 18}
    cells = {"online": "online", "offline_cell": "offline", "finetune_cell": "finetune"}
    batched = {rule: len({(j.job.env, j.job.seed) for j in plan.jobs if j.job.rule == rule}) for rule in plan.counts()}
    assert {k: int(v) for k, v in stats.items() if k in cells} == {k: batched[r] for k, r in cells.items()}
    assert not {"control", "newdata", "offline", "finetune", "tables", "figures", "statistics"} & set(stats)
    assert "T1 left out: it reads jobs that claims C3 do not need" in result.stdout + result.stderr


def test_estimate_prices_the_claims_beside_the_full_grid(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["estimate", "--configfile", "config/paper.yaml", "--config", "claims=[C3]"]) == 0
    out = capsys.readouterr().out
    assert "claims C3 beside the full grid" in out and "every claim alone" in out
    paper = load("paper")
    mine = estimate.Price.of({**paper, "claims": ["C3"]})
    whole = estimate.Price.of(paper)
    assert mine.gpu_hours <= whole.gpu_hours / 3
    seeds = re.search(r"^C3\s+(\d+)\s+(\d+)\s", out.split("seeds where they matter")[1], re.M)
    assert seeds and seeds.groups() == ("15", "15")  # C3.2 needs 15 seeds (README's power table, Gaussian noise)


def test_every_decisive_test_has_power_seeds() -> None:
    for claim in claims.load().values():
        for test in claim["tests"]:
            assert (test["role"] == "decisive") == ("power_seeds" in test), test["id"]


def test_check_config_prints_the_cut_grid(capsys: pytest.CaptureFixture) -> None:
    """check-config counts the jobs a claims plan runs, as estimate and Snakemake do, and names the claims."""
    assert cli.main(["check-config", "--configfile", "config/ci.yaml", "--config", "claims=[C3]"]) == 0
    out = capsys.readouterr().out
    assert "claims: C3 (only the jobs their tests read)" in out
    total = int(re.search(r"^total\s+(\d+)", out, re.M)[1])
    cfg = config.load("config/ci.yaml", {"claims": ["C3"]})
    assert total == sum(jobs for jobs, _ in Plan.build(cfg).stage_counts().values()) == 18
    assert cli.main(["check-config", "--configfile", "config/ci.yaml"]) == 0
    assert "claims:" not in capsys.readouterr().out


def test_a_study_assembles_from_shards_of_other_cells_and_claims(tmp_path: Path, capsys) -> None:
    """A C3 study of Hopper and HalfCheetah from a whole-grid run of Hopper and a C3 run of HalfCheetah (the
    same settings): its tidy rows are those of its own plan's jobs, as a run of the study would write; a
    shard of other settings, a cell in two shards and a job in no shard are refused with the reason."""
    from synthetic_results import config_file_overrides, make_results

    from replication import tidy
    from replication.analysis.selection import canonical

    off = {"c4": {"enabled": False}, "c5": {"enabled": False}, "reward_granularity": {"enabled": False}}
    envs, seeds = ["hopper", "halfcheetah"], [0, 1, 2]
    study = {
        "envs": envs,
        "seeds": seeds,
        "analysis": off,
        "claims": ["C3"],
        "name": "c3-study",
        "statistics": {"bootstrap_reps": 200},
    }
    study = config.resolve(config.deep_merge(config_file_overrides(), study))
    raw = make_results(envs=envs, seeds=seeds, granularity=False)
    shards = {"mini": ({**study, "name": "mini", "envs": ["hopper"], "claims": None}, "hopper")}
    # a shard may differ in settings that change no result: resume checkpoints, its jobs' layout
    rest = {"online": {**study["online"], "checkpoint_interval": 7}, "batch_jobs": "cell"}
    shards["rest"] = ({**study, **rest, "name": "rest", "envs": ["halfcheetah"]}, "halfcheetah")
    for name, (cfg, env) in shards.items():
        rows = raw[raw["env"] == env].reset_index(drop=True)
        rows = rows.loc[claims.rows_of(cfg, planned(Plan.build(cfg)), canonical(rows)).index]
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(cfg))
        tidy.write(rows, tmp_path / name / "tidy.csv")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    args = ["assemble", str(tmp_path / "mini"), str(tmp_path / "rest"), "--results", str(tmp_path / "out")]
    assert cli.main([*args, "--configfile", str(tmp_path / "study.yaml")]) == 0
    direct = raw.loc[claims.rows_of(study, planned(Plan.build(study)), canonical(raw)).index]
    tidy.write(direct, tmp_path / "direct.csv")
    assembled = tmp_path / "out" / "c3-study"
    mine, theirs = (tidy.read([f]) for f in (assembled / "tidy.csv", tmp_path / "direct.csv"))
    by = list(mine.columns)  # the row order is a run's (its plan's cells); test_workflow's shards test checks it
    pd.testing.assert_frame_equal(*(d.sort_values(by).reset_index(drop=True) for d in (mine, theirs)))
    assert len(direct) < len(raw[raw["env"] == "hopper"]) + len(direct[direct["env"] == "halfcheetah"])
    s1 = pd.read_csv(assembled / "scorecard" / "S1.csv")
    assert set(s1.loc[s1["claim"] != "C3", "verdict"]) == {scorecard.NOT_PLANNED}
    capsys.readouterr()
    refused = {
        "is in no shard": ["assemble", str(tmp_path / "mini"), "--configfile", str(tmp_path / "study.yaml")],
        "one shard per cell": [*args[:2], *args[1:], "--configfile", str(tmp_path / "study.yaml")],
    }
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**study, "threads": 4}))
    refused["threads differ"] = [*args, "--configfile", str(tmp_path / "other.yaml")]
    for reason, argv in refused.items():
        assert cli.main([*argv[:-2], "--results", str(tmp_path / "no"), *argv[-2:]]) != 0
        assert reason in capsys.readouterr().err, reason
