"""Run a Snakemake workflow on a real (local, single-node) SLURM cluster and collect the evidence
that every job went through SLURM.

Used by tests/test_slurm.py; reusable with the project's own Snakefile and a tiny config:

    with local_slurm(tmp_path / "slurm"):
        run = run_workflow_on_slurm(REPO / "Snakefile", tiny_config, ["all"], tmp_path / "wd")
        run.assert_ok()
        run.assert_all_jobs_on_slurm(allowed_local={"all"})

`local_slurm` starts SLURM with scripts/slurm/up.sh and always stops what it started with
scripts/slurm/down.sh. See scripts/slurm/up.sh for what it needs (root, apt-get, Debian).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UP_SH = REPO / "scripts" / "slurm" / "up.sh"
DOWN_SH = REPO / "scripts" / "slurm" / "down.sh"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
TEST_PROFILE = REPO / "profiles" / "slurm-test"

# up.sh exit codes that mean "this machine cannot host the test cluster" (skip, not fail).
UP_SH_UNAVAILABLE = {
    2: "cannot install slurmctld/slurmd/slurm-client/munge (not root, no apt-get, or no network)",
    3: "/etc/slurm/slurm.conf exists and was not written by scripts/slurm/up.sh",
    4: "a slurmctld/slurmd not started by scripts/slurm/up.sh runs but does not answer",
}

_JOB_STATS_ROW = re.compile(r"^(\S+)\s+(\d+)$")
_LOCALRULE = re.compile(r"^localrule (\S+):$", re.MULTILINE)


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be brought up on this machine (the caller should skip, not fail)."""


@contextmanager
def local_slurm(scratch: Path, up_timeout_s: int = 600) -> Iterator[Path]:
    """Bring up the local test SLURM in `scratch`, yield `scratch`, and stop what was started.

    Raises SlurmUnavailable when up.sh reports that the machine cannot host it. down.sh always
    runs (it stops only daemons whose pid files up.sh recorded, so it is a no-op when SLURM was
    already up before), and must take away the config up.sh wrote for this scratch folder: left
    behind, it makes every later Snakemake start wait 10 s (down.sh says why).
    """
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        up = subprocess.run(["bash", str(UP_SH), str(scratch)], capture_output=True, text=True, timeout=up_timeout_s)
        sys.stderr.write(up.stderr[-4000:])
        if up.returncode in UP_SH_UNAVAILABLE:
            raise SlurmUnavailable(f"{UP_SH_UNAVAILABLE[up.returncode]}:\n{up.stderr[-2000:]}")
        if up.returncode != 0:
            raise RuntimeError(f"scripts/slurm/up.sh failed (exit {up.returncode}):\n{up.stderr[-6000:]}")
        yield scratch
    finally:
        down = subprocess.run(["bash", str(DOWN_SH), str(scratch)], capture_output=True, text=True, timeout=120)
        sys.stderr.write(down.stderr[-4000:])
        left = SLURM_CONF.is_file() and f"# Scratch folder: {scratch}\n" in SLURM_CONF.read_text()
        if left and subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode != 0:
            raise AssertionError(f"scripts/slurm/down.sh left {SLURM_CONF}, written for {scratch}, behind")


@dataclass
class SlurmRun:
    """What one Snakemake run on SLURM did, as evidence for assertions."""

    returncode: int
    output: str  # Snakemake's stdout and stderr, interleaved
    workdir: Path
    job_counts: dict[str, int]  # rule -> jobs, from Snakemake's "Job stats" table
    submitted: dict[str, str]  # SLURM job id -> rule, from the plugin's per-job log files
    local_rules: list[str]  # rules Snakemake ran itself ("localrule NAME:"), one entry per job
    jobcomp: dict[str, str] | None = field(default=None)  # SLURM job id -> final state, if filetxt

    def tail(self, n: int = 6000) -> str:
        return self.output[-n:]

    def assert_ok(self) -> None:
        timed_out = " (timed out)" if self.returncode in (124, 137) else ""
        assert self.returncode == 0, f"snakemake exited {self.returncode}{timed_out}:\n{self.tail()}"

    def assert_all_jobs_on_slurm(self, allowed_local: Iterable[str] = ("all",)) -> None:
        """Every job Snakemake planned ran as a SLURM job, except target-only rules in
        `allowed_local`; every SLURM job completed (when the cluster logs job completions)."""
        allowed = set(allowed_local)
        assert self.job_counts, f"no 'Job stats' table in the Snakemake output:\n{self.tail()}"
        per_rule = Counter(self.submitted.values())
        local = Counter(self.local_rules)
        assert set(local) <= allowed, f"rules run outside SLURM: {sorted(set(local) - allowed)}"
        for rule, count in self.job_counts.items():
            if rule in allowed and per_rule[rule] == 0:
                continue
            assert per_rule[rule] == count, (
                f"rule {rule}: {count} jobs planned, {per_rule[rule]} SLURM jobs found "
                f"(submitted: {dict(per_rule)}):\n{self.tail()}"
            )
        if self.jobcomp is not None:
            for jobid, rule in self.submitted.items():
                state = self.jobcomp.get(jobid)
                assert state == "COMPLETED", f"SLURM job {jobid} (rule {rule}) ended as {state}"


def slurm_command(
    snakefile: Path,
    configfile: Path | None,
    targets: Sequence[str],
    workdir: Path,
    profile: Path = TEST_PROFILE,
    timeout_s: int = 900,
    extra_args: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a `snakemake --profile <profile>` run in ``workdir``."""
    cmd = [
        "timeout", "-k", "10", str(timeout_s),
        sys.executable, "-m", "snakemake",
        *targets,  # before the options: --configfile takes every word that follows it
        "--snakefile", str(Path(snakefile).resolve()),
        "--directory", str(workdir),
        "--profile", str(Path(profile).resolve()),
        "--nocolor",
        *(["--configfile", str(Path(configfile).resolve())] if configfile else []),
        *extra_args,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PYTHONUNBUFFERED"] = "1"
    return cmd, env


def run_workflow_on_slurm(
    snakefile: Path, configfile: Path | None, targets: Sequence[str], workdir: Path, **options: Any
) -> SlurmRun:
    """Run `snakemake --profile <profile>` (SLURM executor) on `targets` in `workdir`.

    ``options``: those of :func:`slurm_command` (profile, timeout_s, extra_args). The run is wrapped in
    `timeout -k 10 timeout_s` (Snakemake ignores SIGTERM while it believes jobs run). Its output goes
    to workdir/snakemake-slurm-<n>.log (n = 1, 2, ... per call) and into the result.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logdir = workdir / ".snakemake" / "slurm_logs"
    logs_before = set(logdir.rglob("*.log")) if logdir.exists() else set()
    cmd, env = slurm_command(snakefile, configfile, targets, workdir, **options)
    proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    n = 1
    while (workdir / f"snakemake-slurm-{n}.log").exists():
        n += 1
    (workdir / f"snakemake-slurm-{n}.log").write_text(proc.stdout)

    submitted = {}
    for log in sorted(set(logdir.rglob("*.log")) - logs_before) if logdir.exists() else []:
        rule_dir = log.relative_to(logdir).parts[0]  # rule_<name> or group_<name>
        submitted[log.stem] = rule_dir.split("_", 1)[1]
    return SlurmRun(
        returncode=proc.returncode,
        output=proc.stdout,
        workdir=workdir,
        job_counts=parse_job_stats(proc.stdout),
        submitted=submitted,
        local_rules=_LOCALRULE.findall(proc.stdout),
        jobcomp=read_jobcomp(),
    )


def parse_job_stats(output: str) -> dict[str, int]:
    """Rule -> job count from the first "Job stats:" table Snakemake prints (without "total")."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return counts
    for line in lines[start + 1 :]:
        line = line.strip()
        if not line:
            if counts:
                break
            continue
        match = _JOB_STATS_ROW.match(line)
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
        elif match is None and counts:
            break
    return counts


def slurm_config() -> dict[str, str]:
    """`scontrol show config` as a dict (empty if SLURM does not answer)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    config = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def read_jobcomp() -> dict[str, str] | None:
    """SLURM job id -> final state from the jobcomp/filetxt log, or None if not configured."""
    config = slurm_config()
    if config.get("JobCompType") != "jobcomp/filetxt":
        return None
    path = Path(config.get("JobCompLoc", ""))
    if not path.is_file():
        return {}
    states = {}
    for line in path.read_text().splitlines():
        jobid = re.search(r"\bJobId=(\d+)", line)
        state = re.search(r"\bJobState=(\S+)", line)
        if jobid and state:
            states[jobid.group(1)] = state.group(1)
    return states
