"""Wall time of a whole run of the workflow from scratch, and its parallel efficiency across core counts.

For each ``--cores`` value, runs ``snakemake --cores N`` on the config in a fresh scratch
directory (nothing reused) and prints the wall time, the CPU time of Snakemake and its jobs, and
the summed job wall times (the jobs' benchmark files); with 1 among the values, the speed-up and
parallel efficiency ``T(1 core) / (N x T(N cores))`` of the others.

    .venv/bin/python benchmarks/bench_workflow.py --configfile config/config.yaml --cores 2 1
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def job_seconds(workdir: Path) -> float:
    total = 0.0
    for bench in workdir.glob("results/*/**/benchmarks/*.tsv"):
        with bench.open() as f:
            total += float(next(csv.DictReader(f, delimiter="\t"))["s"])
    return total


def run(configfile: str, cores: int) -> tuple[float, float, float]:
    """(wall seconds, Snakemake's own CPU seconds, summed job seconds) of one run from scratch."""
    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as tmp:
        workdir = Path(tmp)
        cmd = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
        cmd += ["--configfile", str(ROOT / configfile), "--cores", str(cores), "--quiet", "all"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        # the package must import from this checkout inside the scratch directory
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        jobs = job_seconds(workdir)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--cores", type=int, nargs="+", default=[2, 1])
    args = parser.parse_args()
    results = {}
    print(f"{'cores':>6}{'wall s':>10}{'wall min':>10}{'CPU s':>10}{'job wall s':>12}")
    for cores in args.cores:
        wall, cpu, jobs = run(args.configfile, cores)
        results[cores] = wall
        print(f"{cores:>6}{wall:>10.0f}{wall / 60:>10.1f}{cpu:>10.0f}{jobs:>12.0f}")
    if 1 in results:
        for cores, wall in results.items():
            if cores != 1:
                speedup = results[1] / wall
                print(f"{cores} cores: speed-up {speedup:.2f}x over 1 core, parallel efficiency {speedup / cores:.2f}")


if __name__ == "__main__":
    main()
