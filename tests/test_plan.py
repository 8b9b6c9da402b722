"""The study plan: pauses, dataset keys, the learners' names, and the command lines the rules run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from replication import cli
from replication.plan import config, vocabulary, workflow
from replication.plan.plan import Plan

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def load(name: str, **update) -> dict:
    return config.resolve(config.deep_merge(config.read_yaml(ROOT / "config" / f"{name}.yaml"), update))


def test_pauses_are_computed_once():
    cfg = load("config")
    plan = Plan.build(cfg)
    total = cfg["budget"]["total_steps"]
    assert plan.pauses == tuple(round(f * total) for f in cfg["budget"]["pause_fractions"])
    assert plan.newdata_pause == round(cfg["newdata"]["pause"] * total)
    assert plan.finetune_pause == round(cfg["budget"]["finetune_pause"] * total)
    assert plan.online_pauses == tuple(sorted({*plan.pauses, plan.newdata_pause, plan.finetune_pause}))
    online = plan.job_for("online", cfg["envs"][0], cfg["seeds"][0])
    assert online.outputs["datasets"] == [
        f"{plan.layout.cell(cfg['envs'][0], cfg['seeds'][0])}/online/pause_{p}/dataset_buffer.h5"
        for p in plan.online_pauses
    ]


def test_dataset_keys_round_trip():
    cfg = load("config", newdata={"epsilon": [0.0, 0.1]})
    plan = Plan.build(cfg)
    keys = [workflow.dataset_key(d) for d in plan.datasets]
    assert len(set(keys)) == len(keys)
    for key, dataset in zip(keys, plan.datasets, strict=True):
        assert plan.dataset(key) == dataset == workflow.parse_dataset_key(cfg, key)
    newdata = {(d.label, d.collector, d.epsilon) for d in plan.datasets if d.is_newdata}
    labels = (("newdata", 0.0), ("newdata-eps0.1", 0.1))
    assert newdata == {(label, c, eps) for label, eps in labels for c in ("best", "last")}
    assert all(d.pause == plan.newdata_pause for d in plan.datasets if d.is_newdata)
    with pytest.raises(ValueError, match="unknown dataset"):
        plan.dataset("buffer-p7")


def test_one_vocabulary_of_learners():
    from replication.agents import finetune, learners
    from replication.analysis import selection as aggregate

    assert learners.ALGOS == aggregate.OFFLINE_ALGOS == vocabulary.OFFLINE_ALGOS
    assert tuple(vocabulary.FINETUNE_METHODS) == aggregate.FINETUNE_METHODS
    assert set(finetune.METHODS) == set(vocabulary.FINETUNE_METHODS)  # the registry: one module per method
    assert workflow.FINETUNE_SOURCES is vocabulary.FINETUNE_METHODS
    assert set(vocabulary.FINETUNE_METHODS.values()) <= set(vocabulary.OFFLINE_ALGOS)
    subcommands = next(a for a in cli.build_parser()._actions if a.choices and "finetune" in a.choices).choices
    method = next(a for a in subcommands["finetune"]._actions if a.dest == "method")
    assert tuple(method.choices) == tuple(vocabulary.FINETUNE_METHODS)


def test_every_command_line_is_one_the_command_line_accepts():
    plan = Plan.build(load("config"))
    parser = cli.build_parser()
    for job in plan.jobs:
        args = parser.parse_args(list(job.argv))
        assert (args.env, args.seed) == (job.job.env, job.job.seed)
        assert job.argv[0] == job.job.rule and shlex.split(job.command_line()) == list(job.argv)


def test_planning_imports_no_training_code():
    code = (
        "import sys; from replication.plan import config; from replication.plan.plan import Plan; "
        "Plan.build(config.load('config/paper.yaml')); "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('replication.agents.online', "
        "'replication.agents.offline', 'replication.agents.finetune', 'replication.agents.datasets'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def dry_run_shells(workdir: Path, configfile: Path) -> dict[str, str]:
    """log file -> shell command of every job of a dry run (``--printshellcmds``)."""
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", "-n", "-p", "--configfile", str(configfile)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
    shells = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        log, shell = re.search(r"^    log: (\S+)", block, re.M), re.search(r"^Shell command: (.*)$", block, re.M)
        if log and shell:
            shells[log[1]] = shell[1]
    return shells


def expected_shells(plan: Plan) -> dict[str, str]:
    """The shell command of every job the plan makes: its own command line, or its cell's batch."""
    out: dict[str, str] = {}
    for job in (*plan.jobs, *plan.controls):
        env, seed = job.job.env, job.job.seed
        if job.in_cell or job.batched:
            rule = workflow.CELL_RULE if job.in_cell else job.job.rule
            cell = f"--cell {rule} --config {plan.layout.config_file} --env {env} --seed {seed}"
            out[job.log] = f"replication batch {cell} > {job.log} 2>&1"
        else:
            out[job.log] = f"replication {job.command_line()} > {job.log} 2>&1"
    return out


def test_a_batch_job_runs_the_command_lines_its_cell_has_in_the_plan(tmp_path, capsys):
    """`replication batch --cell RULE` (the shell of every batch job) lists the plan's command lines of
    that cell's job, read from the run's config when it runs; with claims, those the cut keeps."""
    for name, claims in (("config", None), ("ci", None), ("ci", ["C3"])):
        cfg = load(name) if claims is None else load(name, claims=claims)
        configfile = tmp_path / f"{name}-{claims}.yaml"
        configfile.write_text(yaml.safe_dump(cfg))
        plan = Plan.build(cfg)
        rules = [workflow.CELL_RULE] if plan.whole_cells else [r for r in workflow.BATCHED_RULES if plan.batches[r]]
        assert rules
        for rule in rules:
            jobs = plan.batch_jobs(rule, cfg["envs"][0], cfg["seeds"][-1])
            args = ["batch", "--cell", rule, "--config", str(configfile), "--env", cfg["envs"][0]]
            assert cli.main([*args, "--seed", str(cfg["seeds"][-1]), "--print"]) == 0
            assert capsys.readouterr().out.splitlines() == [job.command_line() for job in jobs]
    assert cli.main(["batch", "--cell", "offline", "--env", "hopper", "--seed", "0"]) == 1
    assert "--cell takes --config, --env and --seed" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["paper", "config"])
def test_rules_run_the_command_lines_of_the_plan(tmp_path, name):
    """Every cell job of a dry run runs the plan's command line (per variant, or its cell's batch)."""
    configfile = ROOT / "config" / f"{name}.yaml"
    plan = Plan.build(config.load(configfile))
    shells = dry_run_shells(tmp_path, configfile)
    cells = {log: shell for log, shell in shells.items() if "/cells/" in log}
    assert cells == expected_shells(plan)
    if name == "config":  # batch_jobs: cell: the cells of envs are one job each, C5's analysis cells a job per variant
        whole = [job for job in plan.jobs if job.in_cell]
        assert whole and len(whole) < len(plan.jobs) and not any(job.batched for job in plan.jobs)
        assert len({job.log for job in whole}) == len({(job.job.env, job.job.seed) for job in whole})
