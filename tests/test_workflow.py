"""The Snakemake workflow, run for real on a tiny config, and dry runs of the paper grid."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from replication.plan import config, workflow

try:
    from test_benchmarks import benchmark
except ImportError:  # run as a package module
    from tests.test_benchmarks import benchmark

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]

TINY = {
    "name": "tiny",
    "envs": ["hopper", "sawyer-push"],
    "seeds": [0],
    "device": "cpu",
    "env_options": {"hopper": {"max_episode_steps": 50}, "sawyer-push": {"max_episode_steps": 50}},
    "budget": {"total_steps": 1000, "pause_fractions": [0.5, 1.0], "finetune_pause": 0.5},
    "online": {
        "learning_starts": 200,
        "batch_size": 32,
        "net_arch": [32, 32],
        "snapshot_interval": 250,
        "checkpoint_interval": 500,
    },
    "evaluation": {"interval": 250, "episodes": 2},
    "validation": {"episodes": 1, "online_fraction": 0.1, "offline_fraction": 0.1},
    "newdata": {"size": 200, "pause": 0.5, "epsilon": [0.0]},
    "offline": {
        "iql": {"gradient_steps": 40, "batch_size": 32, "hidden_units": [32, 32]},
        "cql": {"gradient_steps": 20, "batch_size": 32, "hidden_units": [32, 32]},
        "calql": {"gradient_steps": 20, "batch_size": 32, "hidden_units": [32, 32]},
    },
    "finetune": {"methods": []},
    "analysis": {"c4": {"enabled": False}, "c5": {"enabled": False}},
    "statistics": {"bootstrap_reps": 500},
    "videos": {"enabled": True, "fps": 10, "size": [64, 48], "max_steps": 10},
}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """Snakemake on the project's Snakefile in ``workdir``, on 2 cores, with ``args``."""
    return [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", *args]


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = snakemake_command(workdir, *args)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake (dry) run."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_paper_dry_run_enumerates_the_full_grid(tmp_path):
    """12 environments x 5 seeds; counted here from docs/protocol.md, independently of the package."""
    result = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config" / "paper.yaml"))
    counts = job_counts(result.stdout)
    cells = 12 * 5
    pauses = 5  # 0.2, 0.4, 0.6, 0.8, 1.0 x T: one buffer dataset each
    newdata = 2 * 1  # collector validated or last, x epsilon in {0}
    c5_cells = 2 * 5  # analysis C5: Kitchen with binary and with accumulated reward, per seed
    assert counts["online"] == cells + c5_cells
    assert counts["newdata"] == cells * newdata
    # one offline job per dataset trains the three learners (IQL, CQL, Cal-QL); C5 cells train Cal-QL once
    assert counts["offline"] == cells * (pauses + newdata) + c5_cells
    assert counts["finetune"] == cells * 4 + c5_cells  # IQL, PEX, Cal-QL, WSRL; C5: Cal-QL


def test_bad_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "envs": ["hopper", "pong"]}))
    result = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "unknown environment 'pong'" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    configfile = workdir / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(TINY))
    start = time.monotonic()
    snakemake(workdir, "--configfile", str(configfile))
    return workdir, configfile, time.monotonic() - start


@pytest.mark.slow
def test_tiny_grid_runs_to_the_end(tiny_run):
    workdir, configfile, _ = tiny_run
    cfg = config.load(configfile)
    os.chdir(workdir)
    try:
        expected = [job.output(cfg) for job in workflow.jobs(cfg)]
    finally:
        os.chdir(ROOT)
    missing = [str(p) for p in expected if not (workdir / p).exists()]
    assert not missing, missing
    tidy = pd.read_csv(workdir / "results" / "tiny" / "tidy.csv", keep_default_na=False)
    assert set(tidy.env) == {"hopper", "sawyer-push"}
    rec = tidy[(tidy.stage == "recommend") & (tidy.metric == "score")]
    control = (rec.algo == "sac") & (rec.selection == "online")  # C1's control, from the online runs
    assert set(rec[control].dataset) == {""} and set(rec[control].validation) == {"full"}
    rec = rec[~control]
    assert set(rec.algo) == {"iql", "cql", "calql"}
    assert set(rec.dataset) == {"buffer", "newdata"}
    assert set(zip(rec.validation, rec.selection, strict=True)) == {
        ("full", "offline"),
        ("full", "best-of"),
        ("none", "offline"),
    }
    best_of = rec[(rec.selection == "best-of") & (rec.dataset == "buffer")]
    paired = best_of.merge(tidy[(tidy.selection == "online") & (tidy.metric == "score")], on=["env", "seed", "pause"])
    assert len(paired) == len(best_of) and (paired.env_step_x == paired.env_step_y).all()  # the same ledger step
    # every job logged and benchmarked
    bench = list((workdir / "results" / "tiny").rglob("benchmarks/*.tsv"))
    assert len(bench) >= len(expected)
    # provenance, and a clip per environment (or the reason there is none) in the report
    results = workdir / "results" / "tiny"
    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["run"]["wall_seconds"] > 0 and "snakemake" in provenance["run"]["command"]
    assert provenance["config"]["sha256"] == hashlib.sha256((results / "config.yaml").read_bytes()).hexdigest()
    videos = json.loads((results / "videos" / "videos.json").read_text())
    assert set(videos["envs"]) == {"hopper", "sawyer-push"}
    assert all(entry["clips"] or entry["reason"] for entry in videos["envs"].values()) or videos["reason"]
    report = (results / "report.md").read_text()
    assert "## Rollout videos" in report and "## Provenance" in report
    # every job recorded the commit it ran; the captions name it apart from the regenerating invocation's
    training = provenance["training"]
    assert training["jobs"] >= len(expected) and training["not_recorded"] == 0
    assert [c["commit"] for c in training["commits"]] == [provenance["git"]["commit"] or "unknown"]
    assert len(provenance["invocations"]) == 1 and provenance["invocations"][0]["run"] == provenance["run"]
    assert "Trained by commit" in report or "Trained by an unknown commit" in report
    assert "; regenerated by " in report


def layout_config(tmp_path: Path, batch_jobs: bool | str) -> Path:
    """TINY with ``batch_jobs`` and no clips (the tiny run's are checked; results do not depend on them); a
    dry run plans the layout's jobs: one per variant (false), one per cell and stage (true), or one per
    cell for online, C1's control, newdata and offline (cell)."""
    configfile = tmp_path / f"tiny-{batch_jobs}.yaml"
    configfile.write_text(yaml.safe_dump({**TINY, "batch_jobs": batch_jobs, "videos": {"enabled": False}}))
    counts = job_counts(snakemake(tmp_path, "--configfile", str(configfile), "--dry-run").stdout)
    if batch_jobs == "cell":
        assert counts["cell"] == 2 and not {"online", "control", "newdata_cell", "offline_cell"} & set(counts)
    elif batch_jobs:
        assert counts["newdata_cell"] == counts["offline_cell"] == 2 and "offline" not in counts
    else:
        assert counts["offline"] == 8 and not {"cell", "offline_cell"} & set(counts)
    return configfile


def assert_same_results(reference: Path, results: Path) -> None:
    """Every result file (tables, datasets, learners, validation, episodes) byte-identical."""
    files = result_files(reference)
    assert len(files) > 50 and files == result_files(results)
    differ = [str(f) for f in files if (reference / f).read_bytes() != (results / f).read_bytes()]
    assert not differ, differ


@pytest.mark.slow
def test_benchmarks_read_the_finished_run(tiny_run):
    """The stage breakdown and the cost model's check against measured job times, on a real run."""
    workdir, configfile, _ = tiny_run
    grid = workflow.counts(config.load(configfile))  # online 2, newdata 4, offline 8
    table = benchmark("bench_stages.py", str(workdir / "results" / "tiny")).splitlines()
    jobs = {line.split()[0]: int(line.split()[1]) for line in table[1:-1]}
    assert jobs == {**grid, "aggregation": 6}  # collect, tables, statistics, figures, scorecard, videos

    out = benchmark("bench_estimate.py", "--configfile", str(configfile), cwd=workdir)
    assert "measured by this config's finished jobs: offline calql, offline cql, offline iql, online sac" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:-1]}
    assert {rule: int(r[1]) for rule, r in rows.items()} == grid
    for r in rows.values():  # measured seconds and a positive fitted start-up per job
        assert float(r[3]) > 0 and float(r[6]) > 0


def started_jobs(log: str) -> dict[str, str]:
    """jobid -> first output, from the blocks Snakemake prints when it starts a job."""
    jobs, output = {}, None
    for line in log.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            output = None
        elif line.startswith("output: "):
            output = line.removeprefix("output: ").split(",")[0].strip()
        elif line.startswith("jobid: ") and output:
            jobs[line.split()[1]] = output
    return jobs


def finished_jobs(log: str) -> tuple[list[str], list[str]]:
    """First outputs of the jobs Snakemake reported finished, and of those it started, from its log."""
    outputs = started_jobs(log)
    finished = [outputs[j] for j in re.findall(r"Finished jobid: (\d+) \(Rule: \w+\)", log) if j in outputs]
    return finished, list(outputs.values())


def wait_for_offline_jobs(proc: subprocess.Popen, log: Path, count: int) -> tuple[list[str], list[str]]:
    """Wait (bounded) until Snakemake reports ``count`` offline jobs finished; (finished, started) then."""
    deadline = time.monotonic() + 600
    finished: list[str] = []
    started: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        # jobs Snakemake itself has reported finished (so it keeps them)
        finished, started = finished_jobs(log.read_text())
        if sum("/offline/" in f for f in finished) >= count:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the workflow finished before it could be stopped; enlarge TINY"
    return finished, started


@pytest.mark.slow
def test_rerun_after_interrupt_keeps_finished_cells(tiny_run, tmp_path):
    """With ``batch_jobs: true`` (one job per cell and stage): interrupt the workflow (SIGINT) mid-run;
    running it again redoes no finished job, and the results equal the per-variant run's byte for byte
    (the batched jobs run the variants' own commands)."""
    workdir, _, _ = tiny_run
    configfile = layout_config(tmp_path, True)
    rerun_args = ["--configfile", str(configfile), "--rerun-triggers", "mtime", "params", "input"]
    first = tmp_path / "first.log"
    with first.open("w") as out:
        proc = subprocess.Popen(
            snakemake_command(tmp_path, *rerun_args),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # a shell running us in the background ignores SIGINT, and children inherit that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    finished, _ = wait_for_offline_jobs(proc, first, 1)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    assert finished
    rerun = snakemake(tmp_path, "--rerun-incomplete", *rerun_args)
    log = rerun.stdout + rerun.stderr
    ran = set(re.findall(r"output: ([^,\s]+)", log))  # first output of every job the second run executed
    assert ran, f"the second run executed nothing; first run:\n{first.read_text()[-3000:]}\nsecond:\n{log[-2000:]}"
    redone = sorted(set(finished) & ran)
    assert not redone, f"finished jobs were recomputed: {redone}"
    batched = tmp_path / "results" / "tiny"
    assert_same_results(workdir / "results" / "tiny", batched)
    assert (batched / "cells" / "hopper" / "seed0" / "benchmarks" / "offline-cell.tsv").exists()


def readme_command(workdir: Path, configfile: Path) -> list[str]:
    """The README's command (`snakemake --profile profiles/local --configfile ...`), run in ``workdir``."""
    return snakemake_command(workdir, "--profile", str(ROOT / "profiles" / "local"), "--configfile", str(configfile))


def wait_until_gone(pgid: int, timeout: float = 60) -> None:
    """Wait (bounded) until no process of group ``pgid`` is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {pgid} still alive {timeout} s after SIGKILL")


def result_files(root: Path) -> list[Path]:
    """The result files compared between runs (tables, datasets, learners, validation, episodes)."""
    return [
        p.relative_to(root)
        for p in sorted(root.rglob("*"))
        if p.suffix in {".csv", ".h5", ".d3"} or p.name in {"validation.json", "records.json"}
    ]


def online_checkpointed_past_a_pause(results: Path, pause: int) -> bool:
    """Some online job has a checkpoint at or after step ``pause`` (so it will not pass that pause again)."""
    for meta in results.glob("cells/*/seed*/online/checkpoint/meta.json"):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(meta.read_text()).get("num_timesteps", 0) >= pause:
                return True
    return False


def start_and_kill(workdir: Path, configfile: Path, log: Path, ready, before_kill=None) -> None:
    """Start the README's command in ``workdir``; SIGKILL its process group once ``ready()`` (bounded),
    after calling ``before_kill()`` if given."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            readme_command(workdir, configfile), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 600
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before its kill:\n{log.read_text()[-3000:]}"
    if before_kill is not None:
        before_kill()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    wait_until_gone(proc.pid)


def second_run_is_refused(workdir: Path, configfile: Path) -> None:
    """The same command, while a run of the config is still running, stops at once and says why."""
    second = subprocess.run(readme_command(workdir, configfile), capture_output=True, text=True, timeout=300)
    assert second.returncode != 0
    assert "another run of this config is still running" in second.stderr + second.stdout


@pytest.mark.slow
@pytest.mark.parametrize("batch_jobs", [False, "cell"])
def test_kills_at_random_moments_then_the_same_command(tiny_run, tmp_path, batch_jobs):
    """Any kill, same command: the whole workflow SIGKILLed as a process group (node loss, OOM kill, hard
    time limit) several times in a row (first once an online job has checkpointed past its first pause
    point, so that Snakemake deletes that job's declared pause outputs before rerunning it; then at
    seeded random moments), the README's command run again after each kill, at once (no --unlock); a
    second run of the same config meanwhile is refused. The finished run reruns no job an earlier
    run finished and equals the uninterrupted one byte for byte. With ``batch_jobs: cell`` (planned
    as one job per cell) a kill lands inside a cell's one job, which reruns from its start."""
    workdir, _, seconds = tiny_run
    configfile = layout_config(tmp_path, batch_jobs)
    results = tmp_path / "results" / "tiny"
    first_pause = int(TINY["budget"]["total_steps"] * TINY["budget"]["pause_fractions"][0])
    logs = [tmp_path / f"kill-{i}.log" for i in range(3)]
    start_and_kill(tmp_path, configfile, logs[0], lambda: online_checkpointed_past_a_pause(results, first_pause))
    finished, started = finished_jobs(logs[0].read_text())
    assert set(started) - set(finished), "no job was running at the kill"
    rng = random.Random(int(os.environ.get("KILL_SEED", "0")))
    for i in (1, 2):
        at = time.monotonic() + rng.uniform(5, max(10, seconds / 3))
        refused = (lambda: second_run_is_refused(tmp_path, configfile)) if i == 1 else None
        start_and_kill(tmp_path, configfile, logs[i], lambda at=at: time.monotonic() >= at, refused)
    rerun = subprocess.run(readme_command(tmp_path, configfile), capture_output=True, text=True, timeout=900)
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, f"rerun failed:\n{log[-4000:]}"
    finished = {f for earlier in logs for f in finished_jobs(earlier.read_text())[0]}
    ran = set(re.findall(r"output: ([^,\s]+)", log))
    assert not sorted(finished & ran), f"finished jobs were recomputed: {sorted(finished & ran)}"
    assert_same_results(workdir / "results" / "tiny", results)
    assert not list(results.glob("cells/*/seed*/*/stage")), "the online stage was not removed at the end"
    if batch_jobs == "cell":
        assert (results / "cells" / "hopper" / "seed0" / "benchmarks" / "cell.tsv").exists()


@pytest.mark.slow
def test_disk_estimate_of_the_tiny_run_is_close(tiny_run):
    """What the finished tiny run really leaves under results/tiny/, against the estimate (within 25%)."""
    from replication.plan import disk

    workdir, configfile, _ = tiny_run
    final, peak = disk.needs(config.load(configfile))
    real = disk.used_bytes(workdir / "results" / "tiny")
    assert abs(final - real) <= 0.25 * real, (final, real)
    assert peak > final


def test_a_run_the_disk_cannot_hold_is_refused(tmp_path):
    """Refused before any job starts, with both figures; --config check_disk=False overrides it."""
    import shutil

    from replication.plan import disk

    # analysis C4 off: its total of fine-tuning steps is fixed and would be below this budget's
    base = {"name": "huge", "envs": ["humanoid"], "seeds": [0], "analysis": {"c4": {"enabled": False}}}
    small = config.resolve(config.deep_merge(base, {"budget": {"total_steps": 1_000_000}}))
    free = shutil.disk_usage(tmp_path).free
    steps = int(1_000_000 * 2 * free / disk.needs(small)[1])  # needs about twice the free space
    configfile = tmp_path / "huge.yaml"
    configfile.write_text(yaml.safe_dump({**base, "budget": {"total_steps": steps}}))
    refused = subprocess.run(readme_command(tmp_path, configfile), capture_output=True, text=True, timeout=300)
    message = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "not enough free disk for results/huge/" in message, message[-3000:]
    assert re.search(r"needs about [\d.]+ [GT]B more \(estimated peak .*has [\d.]+ [GMT]B free", message)
    assert not (tmp_path / "results" / "huge" / "cells").exists()  # no job started
    # the override: the same run goes ahead (--touch: Snakemake only marks the outputs done)
    touched = subprocess.run(
        [*readme_command(tmp_path, configfile), "--config", "check_disk=False", "--touch"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert touched.returncode == 0, (touched.stdout + touched.stderr)[-3000:]


def no_result_settings() -> list[tuple[str, str]]:
    """workflow.NO_RESULT (which rules/common.smk leaves out of every job's params): the (section, key)
    settings that change no result."""
    return [(section, key) for section, keys in workflow.NO_RESULT.items() for key in keys]


# How each key of NO_RESULT is edited: a new checkpoint interval; the same fine-tuning methods in another order
NO_RESULT_EDITS = {"checkpoint_interval": lambda value: int(value) + 7, "methods": lambda value: value[::-1]}


def test_no_result_holds_every_checkpoint_interval_and_every_entry_has_an_edit():
    defaults = config.read_yaml(ROOT / "config" / "defaults.yaml")
    intervals = {
        (s, "checkpoint_interval") for s, v in defaults.items() if isinstance(v, dict) and "checkpoint_interval" in v
    }
    settings = no_result_settings()
    assert intervals <= set(settings), f"checkpoint intervals not in NO_RESULT: {intervals - set(settings)}"
    assert {key for _, key in settings} <= set(NO_RESULT_EDITS), "give each NO_RESULT key an edit in NO_RESULT_EDITS"


@pytest.mark.slow
def test_editing_a_setting_that_changes_no_result_reruns_nothing(tiny_run, tmp_path):
    """Each setting of workflow.NO_RESULT, edited in a finished run's config: a dry run has
    nothing to do. The tiny run, copied, first fine-tunes two methods, so that their order can change."""
    workdir, configfile, _ = tiny_run
    finished = tmp_path / "run"
    shutil.copytree(workdir, finished, symlinks=True)
    cfg = yaml.safe_load(configfile.read_text())
    cfg["finetune"] = {**cfg.get("finetune", {}), "methods": ["iql", "calql"]}
    cfg["videos"] = {"enabled": False}  # clips change no result, and a new fine-tuned policy would remake them
    (finished / "finetune.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(finished, "--configfile", str(finished / "finetune.yaml"))
    resolved = config.load(finished / "finetune.yaml")
    for section, key in no_result_settings():
        edited_cfg = copy.deepcopy(cfg)
        edited_cfg.setdefault(section, {})[key] = NO_RESULT_EDITS[key](resolved[section][key])
        edited = tmp_path / f"{section}-{key}.yaml"
        edited.write_text(yaml.safe_dump(edited_cfg))
        dry = snakemake(finished, "-n", "--configfile", str(edited), "--rerun-triggers", "mtime", "params", "input")
        assert "Nothing to be done" in dry.stdout + dry.stderr, f"editing {section}.{key} reruns:\n{dry.stdout[-2000:]}"
    # one more seed: only the new seed's jobs and the aggregation are planned (the list is no job's param)
    more = tmp_path / "more-seeds.yaml"
    more.write_text(yaml.safe_dump({**cfg, "seeds": [*cfg["seeds"], 7]}))
    dry = snakemake(finished, "-n", "--configfile", str(more), "--rerun-triggers", "mtime", "params", "input")
    planned = set(re.findall(r"wildcards: .*?seed=(\d+)", dry.stdout))
    assert planned == {"7"}, f"adding seed 7 plans jobs of seeds {planned}:\n{dry.stdout[-2000:]}"


def test_a_subset_of_environments_plans_only_those_environments():
    """envs: [hopper], seeds: [0] plans hopper jobs only: analysis C5 (on by default, Kitchen) adds none."""
    cfg = config.resolve({"envs": ["hopper"], "seeds": [0]})
    assert cfg["analysis"]["c5"]["enabled"]  # the default stays on; it acts only where its env runs
    planned = workflow.jobs(cfg)
    assert planned and {job.env for job in planned} == {"hopper"}
    with_kitchen = workflow.jobs(config.resolve({"envs": ["hopper", "kitchen"], "seeds": [0]}))
    assert {"kitchen+reward=binary", "kitchen+reward=accumulated"} <= {job.env for job in with_kitchen}


def test_a_structured_config_value_on_the_command_line_is_typed(tmp_path):
    """--config videos='{"enabled": true}' is videos.enabled: true (Snakemake reads the value's scalars as
    strings), in a dry run of the workflow and in check-config."""
    from replication import cli

    dry = snakemake(
        tmp_path, "-n", "--configfile", str(ROOT / "config" / "ci.yaml"), "--config", 'videos={"enabled": true}'
    )
    assert job_counts(dry.stdout).get("videos") == 1
    written = yaml.safe_load((tmp_path / "results" / "ci" / "config.yaml").read_text())
    assert written["videos"]["enabled"] is True and isinstance(written["videos"]["fps"], int)  # merged
    args = ["check-config", "--configfile", str(ROOT / "config" / "ci.yaml"), "--config", 'videos={"enabled": true}']
    assert cli.main(args) == 0
    assert config.command_line_overrides({"videos": {"enabled": "true", "fps": "10", "size": ["64", "48"]}}) == {
        "videos": {"enabled": True, "fps": 10, "size": [64, 48]}
    }
    # a dotted key nests (check-config and estimate; Snakemake itself takes top-level keys only)
    assert config.parse_overrides(["videos.enabled=true", "videos.fps=10", "offline.iql.gradient_steps=5"]) == {
        "videos": {"enabled": True, "fps": 10},
        "offline": {"iql": {"gradient_steps": 5}},
    }
    assert cli.main([*args, "videos.fps=12"]) == 0
    assert config.parse_overrides(['videos={"enabled": true}', "seeds=[0, 1]"]) == {
        "videos": {"enabled": True},
        "seeds": [0, 1],
    }


@pytest.mark.parametrize("batch_jobs", [True, "cell"])
def test_a_cut_that_unbatches_a_stage_is_counted_as_snakemake_runs_it(tmp_path, batch_jobs):
    """claims [C4, C6] on the default config keeps IQL (C4's extension) and WSRL fine-tuning in Hopper and
    WSRL alone elsewhere, so fine-tuning runs one job per method outside the batch (or cell) jobs:
    check-config's and estimate's job counts are the plan's, those of a dry run."""
    from replication.plan import estimate
    from replication.plan.plan import Plan

    overlay = tmp_path / "cut.yaml"
    overlay.write_text(yaml.safe_dump({"claims": ["C4", "C6"], "batch_jobs": batch_jobs}))
    files = [str(ROOT / "config" / "config.yaml"), str(overlay)]
    cfg = config.load(files)
    plan = Plan.build(cfg)
    assert plan.batches["finetune"] == () and plan.batches["offline"]  # the cut unbatched fine-tuning only
    counts = {rule: jobs for rule, (jobs, _) in plan.stage_counts().items() if jobs}
    stages = ("online", "control", "newdata", "offline", "finetune", workflow.CELL_RULE)
    dry = job_counts(snakemake(tmp_path, "-n", "--configfile", *files).stdout)
    dry = {rule.removesuffix("_cell"): n for rule, n in dry.items()}  # a stage's batch jobs: rule <stage>_cell
    assert counts == {rule: n for rule, n in dry.items() if rule in stages}
    assert {rule: s.jobs for rule, s in estimate.estimate(cfg)[0].items() if s.jobs} == counts
    assert counts["finetune"] == 13  # 12 cells' WSRL and Hopper's IQL, each its own job


def test_several_config_files_merge_as_snakemake_merges_them(tmp_path, capsys):
    """check-config and estimate take --configfile A B as Snakemake does: B merged over A key by key
    (a nested section keeps A's other keys), the config Snakemake writes for the run is the one they read."""
    from replication import cli

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"name": "ci-overlay", "seeds": [3], "online": {"checkpoint_interval": 77}}))
    files = [str(ROOT / "config" / "ci.yaml"), str(overlay)]
    snakemake(tmp_path, "-n", "--configfile", *files)
    written = yaml.safe_load((tmp_path / "results" / "ci-overlay" / "config.yaml").read_text())
    merged = config.load(files)
    assert merged == written
    assert merged["seeds"] == [3] and merged["online"]["checkpoint_interval"] == 77
    assert merged["online"]["snapshot_interval"] == config.load(files[0])["online"]["snapshot_interval"]
    assert cli.main(["check-config", "--configfile", *files]) == 0
    assert "results under results/ci-overlay/" in capsys.readouterr().out
    assert cli.main(["estimate", "--configfile", *files, "--config", "seeds=[3, 4]"]) == 0
    assert "environments x 2 seeds" in capsys.readouterr().out  # the override on top of both files


def _run_tiny(workdir: Path, **overrides) -> Path:
    workdir.mkdir(parents=True)
    configfile = workdir / "tiny.yaml"
    one_env = {"envs": ["hopper"], "env_options": {"hopper": TINY["env_options"]["hopper"]}}
    configfile.write_text(yaml.safe_dump({**TINY, **one_env, "videos": {"enabled": False}, **overrides}))
    snakemake(workdir, "--configfile", str(configfile))
    return workdir / "results" / "tiny"


def _shard_run(whole: Path, workdir: Path, seed: int) -> Path:
    """A run of ``whole``'s config over ``seed`` alone, in a copy of ``whole`` that keeps only that seed's
    cells (trained there; cells repeat byte for byte across runs, as the kill tests show): its Snakemake
    finds them finished and runs the aggregation only."""
    shutil.copytree(whole, workdir, symlinks=True)
    for cell in (workdir / "results" / "tiny" / "cells").glob("*/seed*"):
        if cell.name != f"seed{seed}":
            shutil.rmtree(cell)
    configfile = workdir / "tiny.yaml"
    configfile.write_text(yaml.safe_dump({**yaml.safe_load(configfile.read_text()), "seeds": [seed]}))
    run = snakemake(workdir, "--configfile", str(configfile))
    ran = job_counts(run.stdout + run.stderr)
    assert "collect" in ran and not {"cell", "online"} & set(ran), ran
    return workdir / "results" / "tiny"


@pytest.mark.slow
def test_shards_over_disjoint_seeds_assemble_into_the_whole_study(tmp_path, capsys):
    """Seeds 0 and 1 run as two shards (two runs of the same config), kept and assembled, give the tables,
    statistics and scorecard of one run over both seeds, byte for byte; shards of another config or with
    a shared seed are refused."""
    from replication import cli

    whole = _run_tiny(tmp_path / "whole", seeds=[0, 1], batch_jobs="cell")  # the layout changes no result
    out = benchmark("bench_estimate.py", "--configfile", str(tmp_path / "whole" / "tiny.yaml"), cwd=tmp_path / "whole")
    rows = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[3:-1]}
    assert rows == {workflow.CELL_RULE: 2}  # the cost model's check sees one job per cell, as the plan runs it
    for seed in (0, 1):
        run = _shard_run(tmp_path / "whole", tmp_path / f"run{seed}", seed)
        assert cli.main(["keep-shard", str(run), "--out", str(tmp_path / f"shard{seed}")]) == 0
    kept = sorted(p.name for p in (tmp_path / "shard1").rglob("*") if p.is_file())
    assert "tidy.csv" in kept and not [k for k in kept if k.endswith((".h5", ".d3", ".pt", ".zip"))]
    shards = [str(tmp_path / "shard0"), str(tmp_path / "shard1")]
    assert cli.main(["assemble", *shards, "--results", str(tmp_path / "assembled")]) == 0
    assembled = tmp_path / "assembled" / "tiny"
    compared = [
        "tidy.csv",
        "scorecard/S1.csv",
        "statistics/aggregate.csv",
        *(f"tables/{t}.csv" for t in ("T1", "T2", "L1")),
    ]
    differ = [f for f in compared if (assembled / f).read_bytes() != (whole / f).read_bytes()]
    assert not differ, differ
    assert (assembled / "report.md").is_file() and (assembled / "figures" / "F1.png").is_file()
    training = json.loads((assembled / "provenance.json").read_text())["training"]  # the shards' job records
    assert training["jobs"] > 0 and training["not_recorded"] == 0 and training["commits"], training
    assert yaml.safe_load((assembled / "config.yaml").read_text())["seeds"] == [0, 1]
    capsys.readouterr()
    assert cli.main(["assemble", shards[0], shards[0], "--results", str(tmp_path / "again")]) != 0
    assert "seeds [0] of" in capsys.readouterr().err and not (tmp_path / "again").exists()
    other = tmp_path / "shard1" / "config.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(other.read_text()), "device": "cuda"}))
    assert cli.main(["assemble", *shards, "--results", str(tmp_path / "again")]) != 0
    assert "device differ" in capsys.readouterr().err
