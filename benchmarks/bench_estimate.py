"""The cost model of ``replication estimate`` against a finished run: predicted vs measured job wall times.

For every cell job of the run (with ``batch_jobs``, a batch job and all the variants it ran), the
model's seconds (start-up + environment steps + gradient steps, with the gradient-step throughput
this run's own jobs measured) are set against the job's wall time in its Snakemake benchmark
file. Per rule, the fitted start-up is the mean of (measured - the model's work), which is where
``JOB_OVERHEAD_SECONDS`` comes from (fit it on a run with one job per variant); the error column
is the mean absolute error of single jobs once the fitted start-up is used, relative to their mean.

    .venv/bin/python benchmarks/bench_estimate.py --configfile config/config.yaml   # after the run
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from bench_stages import wall  # this folder: the script's own directory is on sys.path

from replication.plan import config
from replication.plan.estimate import JOB_OVERHEAD_SECONDS, JobCost, job_costs
from replication.plan.workflow import CELL_RULE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    args = parser.parse_args()
    cfg = config.load(args.configfile)
    costs, source = job_costs(cfg)
    processes: dict[Path, list[JobCost]] = defaultdict(list)  # a batch job runs several variants
    for c in costs:
        processes[Path(c.process)].append(c)
    by_rule: dict[str, list[tuple[float, float, float]]] = defaultdict(list)  # (model s, work s, measured s)
    overhead: dict[str, float] = {}
    missing = 0
    for bench, members in processes.items():
        if not bench.exists():
            missing += 1
            continue
        first = members[0]  # pays the job's start-up (a cell's one job: its online run)
        rule = CELL_RULE if first.in_cell else first.job.rule
        overhead[rule] = JOB_OVERHEAD_SECONDS[first.job.rule]
        model = sum(c.cpu_seconds for c in members)
        by_rule[rule].append((model, model - overhead[rule], wall(bench)))
    if not by_rule:
        raise SystemExit(f"no finished jobs of config {cfg['name']} (benchmark files); run it first")
    print(f"config {cfg['name']}: {sum(map(len, by_rule.values()))} finished cell jobs ({missing} not run)")
    print(f"throughput: {source}")
    print(
        f"{'rule':<10}{'jobs':>6}{'model s':>10}{'measured s':>12}{'ratio':>8}"
        f"{'start-up now':>14}{'fitted':>9}{'job error':>11}"
    )
    for rule, rows in by_rule.items():
        model, work, measured = (np.array(x) for x in zip(*rows, strict=True))
        fitted = float(np.mean(measured - work))
        error = float(np.mean(np.abs(work + fitted - measured)) / np.mean(measured))
        print(
            f"{rule:<10}{len(rows):>6}{model.sum():>10.0f}{measured.sum():>12.0f}{model.sum() / measured.sum():>8.2f}"
            f"{overhead[rule]:>14.1f}{fitted:>9.2f}{100 * error:>10.0f}%"
        )
    print("ratio: model / measured (sums); fitted: start-up s per job; job error: single jobs with the fitted start-up")


if __name__ == "__main__":
    main()
