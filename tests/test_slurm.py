"""The cluster path: a workflow run with `--profile profiles/slurm-test` on a real single-node
SLURM (munge + slurmctld + slurmd on 127.0.0.1, started by scripts/slurm/up.sh) submits every
job with sbatch and produces complete outputs.

Needs root and apt-get (Debian/Ubuntu); skipped otherwise. About a minute, most of it the SLURM
plugin's status polling. Run alone with:  pytest -m slurm -v -s
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

try:
    from slurm_helpers import SlurmUnavailable, local_slurm, run_workflow_on_slurm, slurm_command
    from test_workflow import TINY
except ImportError:  # tests/ imported as a package
    from tests.slurm_helpers import SlurmUnavailable, local_slurm, run_workflow_on_slurm, slurm_command
    from tests.test_workflow import TINY

pytestmark = pytest.mark.slurm

# A small self-contained workflow: two independent jobs and one that needs both. Each job writes
# the SLURM job id it ran under, so the outputs themselves show where they were made. Rule names
# are the project's, so the profile's set-resources entries are exercised too.
SNAKEFILE = textwrap.dedent(
    """
    import sys

    PY = sys.executable
    STAMP = (
        "import os, sys; "
        "parts = [open(p).read() for p in sys.argv[2:]]; "
        "parts.append(sys.argv[1].rsplit('/', 1)[-1] + ' ' + os.environ.get('SLURM_JOB_ID', 'none') + chr(10)); "
        "open(sys.argv[1], 'w').write(''.join(parts))"
    )

    rule all:
        input: "out/aggregate.txt"

    rule online:
        output: "out/online.txt"
        shell: '"{PY}" -c "{STAMP}" {output}'

    rule newdata:
        output: "out/newdata.txt"
        shell: '"{PY}" -c "{STAMP}" {output}'

    rule aggregate:
        input: "out/online.txt", "out/newdata.txt"
        output: "out/aggregate.txt"
        shell: '"{PY}" -c "{STAMP}" {output} {input}'
    """
)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running local SLURM for this module; stops only what it started."""
    if os.geteuid() != 0:
        pytest.skip("needs root: scripts/slurm/up.sh installs packages and starts SLURM daemons")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no apt-get to install SLURM (and SLURM is not installed)")
    scratch = tmp_path_factory.mktemp("slurm")
    try:
        with local_slurm(scratch):
            yield scratch
    except SlurmUnavailable as exc:
        pytest.skip(f"cannot bring up a local SLURM: {exc}")


def read_stamps(path: Path) -> list[tuple[str, str]]:
    """(output name, SLURM job id) for each line a job appended to `path`."""
    return [tuple(line.split()) for line in path.read_text().splitlines()]


def test_every_job_goes_through_slurm(slurm_cluster: Path, tmp_path: Path) -> None:
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(SNAKEFILE)
    workdir = tmp_path / "work"

    run = run_workflow_on_slurm(snakefile, None, ["all"], workdir, timeout_s=600)
    print(run.tail(3000))

    run.assert_ok()
    run.assert_all_jobs_on_slurm(allowed_local={"all"})
    assert run.job_counts == {"aggregate": 1, "all": 1, "newdata": 1, "online": 1}
    assert sorted(run.submitted.values()) == ["aggregate", "newdata", "online"]

    # Outputs are complete, and each was written inside the SLURM job Snakemake submitted for it.
    job_of = {rule: jobid for jobid, rule in run.submitted.items()}
    assert read_stamps(workdir / "out/online.txt") == [("online.txt", job_of["online"])]
    assert read_stamps(workdir / "out/newdata.txt") == [("newdata.txt", job_of["newdata"])]
    assert read_stamps(workdir / "out/aggregate.txt") == [
        ("online.txt", job_of["online"]),
        ("newdata.txt", job_of["newdata"]),
        ("aggregate.txt", job_of["aggregate"]),
    ]
    if run.jobcomp is not None:  # the slurmctld job-completion log agrees
        assert {jobid: run.jobcomp.get(jobid) for jobid in run.submitted} == dict.fromkeys(run.submitted, "COMPLETED")

    # A second run finds everything done and submits nothing.
    again = run_workflow_on_slurm(snakefile, None, ["all"], workdir, timeout_s=300)
    again.assert_ok()
    assert "Nothing to be done" in again.output, again.tail()
    assert again.submitted == {}


def test_project_workflow_runs_on_slurm(slurm_cluster: Path, tmp_path: Path) -> None:
    """The project's own Snakefile, on a tiny config: online, control, offline and collect jobs go through sbatch."""
    import yaml

    root = Path(__file__).resolve().parent.parent
    config = {
        "name": "slurmtiny",
        "envs": ["hopper"],
        "seeds": [0],
        "device": "cpu",
        "env_options": {"hopper": {"max_episode_steps": 50}},
        "budget": {"total_steps": 600, "pause_fractions": [1.0], "finetune_pause": 0.5},
        "online": {"learning_starts": 200, "batch_size": 32, "net_arch": [32, 32], "snapshot_interval": 200},
        "evaluation": {"interval": 300, "episodes": 1},
        "validation": {"episodes": 1, "online_fraction": 0.1, "offline_fraction": 0.1},
        "offline": {"algos": ["iql"], "datasets": ["buffer"], "iql": {"gradient_steps": 20, "batch_size": 32}},
        "finetune": {"methods": []},
        "analysis": {"c4": {"enabled": False}, "c5": {"enabled": False}},
    }
    configfile = tmp_path / "slurmtiny.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work"
    target = "results/slurmtiny/tidy.csv"

    run = run_workflow_on_slurm(root / "Snakefile", configfile, [target], workdir, timeout_s=900)
    print(run.tail(3000))
    run.assert_ok()
    run.assert_all_jobs_on_slurm()
    assert sorted(run.submitted.values()) == ["collect", "control", "offline", "online"]
    tidy = (workdir / target).read_text()
    assert "online,sac" in tidy and "recommend,iql" in tidy
    if run.jobcomp is not None:
        assert {jobid: run.jobcomp.get(jobid) for jobid in run.submitted} == dict.fromkeys(run.submitted, "COMPLETED")


KILL_CONFIG = {
    **TINY,
    "name": "slurmkill",
    "envs": ["hopper"],
    "env_options": {"hopper": TINY["env_options"]["hopper"]},
    # long enough that a resumed online job still runs (some 10 s) when the workflow is started again
    "budget": {**TINY["budget"], "total_steps": 3000},
    # the first checkpoint falls on the first pause
    "online": {**TINY["online"], "snapshot_interval": 500, "checkpoint_interval": 1500},
    "evaluation": {"interval": 500, "episodes": 1},
    "offline": {
        "algos": ["iql"],
        "datasets": ["buffer"],
        "iql": {"gradient_steps": 300, "batch_size": 32, "hidden_units": [32, 32]},
    },
    "videos": {"enabled": False},
}


def job_pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def wait_for(ready, what: str, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the workflow ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def test_killed_jobs_and_a_killed_workflow_resume_on_slurm(slurm_cluster: Path, tmp_path: Path) -> None:
    """With the SLURM profile's retries: the online job killed on its node once it has checkpointed
    past its first pause point (Snakemake deletes its outputs and submits it again; the retry resumes
    past the pause and still writes them), then the workflow itself killed while that retry runs under
    SLURM (the retry goes on; the same command started again submits the job anew, and the new
    instance waits for the old one to end). The finished run equals an uninterrupted local run byte
    for byte."""
    import yaml

    root = Path(__file__).resolve().parent.parent
    configfile = tmp_path / "slurmkill.yaml"
    configfile.write_text(yaml.safe_dump(KILL_CONFIG))
    target = "results/slurmkill/tidy.csv"
    local = tmp_path / "local"
    subprocess.run(
        [sys.executable, "-m", "snakemake", target, "--snakefile", str(root / "Snakefile"), "--directory", str(local),
         "--cores", "2", "--configfile", str(configfile)],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip

    workdir = (tmp_path / "work").resolve()
    workdir.mkdir()
    results = workdir / "results" / "slurmkill"
    cmd, env = slurm_command(root / "Snakefile", configfile, [target], workdir, extra_args=["--retries", "1"])
    log = workdir / "killed-workflow.log"
    online = "replication online --config results/slurmkill/"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        meta = results / "cells/hopper/seed0/online/checkpoint/meta.json"
        wait_for(lambda: meta.exists() and json.loads(meta.read_text() or "{}").get("num_timesteps") == 1500,
                 "online checkpoint at the first pause", proc, log)  # fmt: skip
        first = job_pids(online)
        assert first, "the online job is not running"
        for pid in first:
            os.kill(pid, signal.SIGKILL)  # the job dies on its node (an out-of-memory kill, a node lost)
        wait_for(lambda: bool(set(job_pids(online)) - set(first)), "the online job's retry", proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the workflow dies; the retry goes on under SLURM
        proc.wait(timeout=60)
    assert "Trying to restart job" in log.read_text(), log.read_text()[-3000:]

    run = run_workflow_on_slurm(root / "Snakefile", configfile, [target], workdir, extra_args=["--retries", "1"])
    print(run.tail(3000))
    run.assert_ok()
    online_log = (results / "cells/hopper/seed0/logs/online.log").read_text(errors="replace")
    assert "waiting for another instance of this job" in online_log, online_log[-2000:]
    reference = local / "results" / "slurmkill"
    files = sorted(
        p.relative_to(reference)
        for p in reference.rglob("*")
        if p.suffix in {".csv", ".h5", ".d3"} or p.name in {"validation.json", "records.json"}
    )
    assert len(files) > 10
    differ = [
        str(f)
        for f in files
        if not (results / f).exists() or (results / f).read_bytes() != (reference / f).read_bytes()
    ]
    assert not differ, differ
