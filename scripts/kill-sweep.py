#!/usr/bin/env python3
"""Kill the workflow at many moments, rerun the same command, and check that the run still finishes
with an uninterrupted run's results.

Each *sequence* starts from an empty results directory and runs the README's command
(``snakemake --profile profiles/local --configfile CONFIG``) in a directory of its own. Every
attempt but the last is SIGKILLed, as a whole process group (a preempted job, a node lost), a
given number of seconds after it started; the last runs to the end. The finished run must then
(1) have exited 0, (2) match ``results/reference/<name>/`` (``replication reference check``) and
(3) have every tidy CSV byte-identical to an uninterrupted run of the same config on this machine.

Sequences (each may be given several times):

* ``--kills 40,70,100``: kill the attempts at these seconds, then run to the end;
* ``--every 30``: kill every attempt 30 s after its start until one finishes by itself (kills
  spread over the whole run, every stage, several in a row);
* ``--random N``: N kills at seeded random moments (``--seed``) within the uninterrupted run's time;
* ``--disk-full 8``: the results on a filesystem of 8 MB (a tmpfs; root only), run until it fails
  for lack of space, then the filesystem grown to 512 MB and the same command run again.

Prints (and with ``--out`` writes) a Markdown table: per kill, the attempt, the moment and the jobs
that were running; per sequence, the final result. Exits non-zero if any sequence failed.

    .venv/bin/python scripts/kill-sweep.py --workdir /tmp/sweep --kills 40,70,100 --kills 60 --every 30
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Attempt:
    number: int
    kill_at: float | None  # seconds after the start; None: run to the end
    seconds: float = 0.0
    status: str = ""
    running: list[str] = field(default_factory=list)  # jobs started but not finished at the kill


@dataclass
class Sequence:
    name: str
    attempts: list[Attempt] = field(default_factory=list)
    result: str = ""
    ok: bool = False


def command(workdir: Path, configfile: Path, extra: list[str]) -> list[str]:
    """The README's command, run in ``workdir``."""
    return [
        PYTHON,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(ROOT / "profiles" / "local"),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        *extra,
    ]


def running_jobs(log: str) -> list[str]:
    """Jobs Snakemake started and did not report finished: '<rule> <first output>'."""
    started: dict[str, str] = {}
    for block in re.split(r"\n(?=\[|rule |localrule )", log):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        jobid = re.search(r"jobid: (\d+)", block)
        output = re.search(r"output: ([^,\s]+)", block)
        if rule and jobid:
            started[jobid[1]] = f"{rule[1]} {output[1] if output else ''}".strip()
    for done in re.findall(r"Finished jobid: (\d+)|Finished job (\d+)\.", log):
        started.pop(done[0] or done[1], None)
    return [short(j) for j in started.values()]


def short(job: str) -> str:
    return re.sub(r"\S*/cells/", "", job)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise RuntimeError(f"processes of group {proc.pid} still alive 60 s after SIGKILL")


def attempt(cmd: list[str], log: Path, number: int, kill_at: float | None, timeout: float) -> Attempt:
    """Run ``cmd``; SIGKILL its process group ``kill_at`` seconds after the start (if still running)."""
    a = Attempt(number, kill_at)
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        limit = timeout if kill_at is None else kill_at
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            a.seconds = time.monotonic() - start
            a.status = "killed" if kill_at is not None else "timed out"
            a.running = running_jobs(log.read_text())
            return a
    a.seconds = time.monotonic() - start
    a.status = f"exit {proc.returncode}"
    return a


def tidy_files(results: Path) -> list[Path]:
    return sorted(p.relative_to(results) for p in results.rglob("*.csv") if "reference-diff" not in p.parts)


def compare(results: Path, baseline: Path, reference: Path) -> tuple[bool, str]:
    """Reference check and byte equality of the tidy CSVs with the uninterrupted run."""
    check = subprocess.run(
        [PYTHON, "-m", "replication", "reference", "check", "--run", str(results), "--reference", str(reference)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    files = tidy_files(baseline)
    missing = [str(f) for f in files if not (results / f).exists()]
    differ = [
        str(f) for f in files if (results / f).exists() and (results / f).read_bytes() != (baseline / f).read_bytes()
    ]
    ok = check.returncode == 0 and not missing and not differ
    last = (check.stdout + check.stderr).strip().splitlines()[-1:] or ["(no output)"]
    text = f"reference check: {last[0]}; tidy CSVs: {len(files) - len(missing) - len(differ)} of {len(files)} identical"
    if missing or differ:
        text += f" (missing {missing[:3]}, differ {differ[:3]})"
    return ok, text


def run_sequence(
    seq: Sequence, workdir: Path, configfile: Path, kills: list[float] | None, every: float | None, timeout: float
) -> Path:
    """Attempts killed at ``kills`` (or every ``every`` s until one ends), then one to the end."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    cmd = command(workdir, configfile, [])
    moments = list(kills or [])
    n = 0
    while True:
        n += 1
        kill_at = moments.pop(0) if moments else (every if every else None)
        a = attempt(cmd, workdir / f"attempt-{n}.log", n, kill_at, timeout)
        seq.attempts.append(a)
        print(f"  {seq.name} attempt {n}: {a.status} after {a.seconds:.0f} s; running: {', '.join(a.running) or '-'}")
        if a.status != "killed":
            break
        if n > 200:
            raise RuntimeError("more than 200 attempts: the run makes no progress between kills")
    return workdir


def disk_full_sequence(seq: Sequence, workdir: Path, configfile: Path, small_mb: int, timeout: float) -> Path:
    """The results on a ``small_mb`` tmpfs: run until it fails, grow it to 512 MB, run again."""
    shutil.rmtree(workdir, ignore_errors=True)
    mount = workdir / "results"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={small_mb}m", "tmpfs", str(mount)], check=True)
    try:
        cmd = command(workdir, configfile, ["--config", "check_disk=False"])
        a = attempt(cmd, workdir / "attempt-1.log", 1, None, timeout)
        full = "No space left on device" in (workdir / "attempt-1.log").read_text() or any(
            "No space left" in p.read_text(errors="replace") for p in mount.rglob("*.log")
        )
        a.status += ", out of space" if full else ", NOT out of space"
        seq.attempts.append(a)
        print(f"  {seq.name} attempt 1 ({small_mb} MB): {a.status}")
        subprocess.run(["mount", "-o", "remount,size=512m", str(mount)], check=True)
        b = attempt(cmd, workdir / "attempt-2.log", 2, None, timeout)
        b.status += " (512 MB)"
        seq.attempts.append(b)
        print(f"  {seq.name} attempt 2 (512 MB): {b.status}")
        results = workdir / "results" / config_name(configfile)
        kept = workdir / "kept"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(results, kept / config_name(configfile), symlinks=True)
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    shutil.rmtree(mount, ignore_errors=True)
    kept.rename(mount)
    return workdir


def config_name(configfile: Path) -> str:
    return yaml.safe_load(configfile.read_text())["name"]


def table(sequences: list[Sequence]) -> str:
    lines = [
        "| sequence | attempt | killed at (s) | ran (s) | outcome | jobs running at the kill |",
        "|---|---|---|---|---|---|",
    ]
    for seq in sequences:
        for a in seq.attempts:
            at = "-" if a.kill_at is None else f"{a.kill_at:.0f}"
            lines.append(
                f"| {seq.name} | {a.number} | {at} | {a.seconds:.0f} | {a.status} | {'; '.join(a.running) or '-'} |"
            )
        lines.append(f"| **{seq.name}** | | | | **{'finished, matches' if seq.ok else 'FAILED'}** | {seq.result} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "ci.yaml")
    parser.add_argument("--workdir", type=Path, required=True, help="where the runs go (one folder each)")
    parser.add_argument("--baseline", type=Path, help="an uninterrupted run's workdir (default: made here)")
    parser.add_argument("--kills", action="append", default=[], help="a sequence: comma-separated seconds")
    parser.add_argument("--every", action="append", type=float, default=[], help="a sequence: kill every S s")
    parser.add_argument("--random", type=int, default=0, help="a sequence of N kills at seeded random moments")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--disk-full", type=int, metavar="MB", help="a sequence on a MB-sized tmpfs (root)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds an attempt may run to its end")
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    args = parser.parse_args()

    configfile = args.configfile.resolve()
    name = config_name(configfile)
    reference = ROOT / "results" / "reference" / name
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.baseline is None:
        print("uninterrupted run ...")
        args.baseline = args.workdir / "baseline"
        base = Sequence("uninterrupted")
        run_sequence(base, args.baseline, configfile, None, None, args.timeout)
        if base.attempts[-1].status != "exit 0":
            raise SystemExit(f"the uninterrupted run failed: {args.baseline}/attempt-1.log")
        (args.baseline / "seconds").write_text(f"{base.attempts[-1].seconds:.0f}\n")
    baseline = args.baseline / "results" / name
    seconds_file = args.baseline / "seconds"
    base_seconds = float(seconds_file.read_text()) if seconds_file.exists() else 300.0

    plans: list[tuple[str, list[float] | None, float | None]] = []
    for text in args.kills:
        plans.append((f"kills at {text} s", [float(x) for x in text.split(",")], None))
    for every in args.every:
        plans.append((f"every {every:g} s", None, every))
    if args.random:
        rng = random.Random(args.seed)
        moments = [round(rng.uniform(5, base_seconds), 1) for _ in range(args.random)]
        plans.append((f"random (seed {args.seed})", moments, None))

    sequences = []
    for i, (title, kills, every) in enumerate(plans):
        seq = Sequence(title)
        print(f"{title} ...")
        workdir = run_sequence(seq, args.workdir / f"seq-{i}", configfile, kills, every, args.timeout)
        sequences.append(finish(seq, workdir / "results" / name, baseline, reference))
    if args.disk_full:
        seq = Sequence(f"disk full ({args.disk_full} MB, then 512 MB)")
        print(f"{seq.name} ...")
        workdir = disk_full_sequence(seq, args.workdir / "disk-full", configfile, args.disk_full, args.timeout)
        sequences.append(finish(seq, workdir / "results" / name, baseline, reference))

    text = table(sequences)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if all(s.ok for s in sequences) else 1


def finish(seq: Sequence, results: Path, baseline: Path, reference: Path) -> Sequence:
    last = seq.attempts[-1]
    if not last.status.startswith("exit 0"):
        seq.result = f"the last run ended with {last.status}"
        return seq
    seq.ok, seq.result = compare(results, baseline, reference)
    return seq


if __name__ == "__main__":
    sys.exit(main())
