"""Work of the workflow's DAG against a naive design that reruns the online phase for every variant.

In the DAG each (environment, seed) cell has one online SAC run to T, and every variant branches
from its pause points. A naive design gives each variant its own online run up to the variant's
pause: every offline learner (cell x dataset x algorithm) reruns SAC to its dataset's pause, every
fine-tuning method reruns it to the fine-tuning pause, and the SAC baseline runs to T. Newdata,
offline training and fine-tuning cost the same in both, so they are counted once for both.
Counts come from the grid (``replication.plan.workflow.jobs``) and ``replication.plan.estimate``; nothing runs.

    .venv/bin/python benchmarks/bench_dag.py --configfile config/paper.yaml
"""

from __future__ import annotations

import argparse

from replication.plan import config
from replication.plan.config import finetune_pause_step
from replication.plan.estimate import estimate, sac_gradient_steps
from replication.plan.workflow import jobs, parse_cell, parse_dataset_key


def online_work(cfg: dict, env: str, steps: int) -> tuple[int, float]:
    """(env steps, SAC gradient steps) of an online run to ``steps``."""
    return steps, sac_gradient_steps(cfg, env, steps)


def compare(cfg: dict) -> dict[str, tuple[float, float]]:
    """Per design: (env steps, gradient steps) of the whole grid, training steps only."""
    total = cfg["budget"]["total_steps"]
    stages, _ = estimate(cfg)
    shared_env = sum(s.env_steps for name, s in stages.items() if name != "online")
    shared_grad = sum(s.gradient_steps for name, s in stages.items() if name != "online")
    dag_env = dag_grad = naive_env = naive_grad = 0.0
    for job in jobs(cfg):
        env = parse_cell(job.env).env
        if job.rule == "online":
            e, g = online_work(cfg, env, total)
            dag_env, dag_grad = dag_env + e, dag_grad + g
            naive_env, naive_grad = naive_env + e, naive_grad + g  # the SAC baseline itself
        elif job.rule == "offline":
            pause = parse_dataset_key(cfg, job.dataset).pause
            for _ in job.algos:
                e, g = online_work(cfg, env, pause)
                naive_env, naive_grad = naive_env + e, naive_grad + g
        elif job.rule == "finetune":
            e, g = online_work(cfg, env, finetune_pause_step(cfg))
            naive_env, naive_grad = naive_env + e, naive_grad + g
    return {
        "online, DAG": (dag_env, dag_grad),
        "online, naive": (naive_env, naive_grad),
        "everything else (both)": (shared_env, shared_grad),
        "total, DAG": (dag_env + shared_env, dag_grad + shared_grad),
        "total, naive": (naive_env + shared_env, naive_grad + shared_grad),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/paper.yaml")
    args = parser.parse_args()
    cfg = config.load(args.configfile)
    rows = compare(cfg)
    print(f"config {cfg['name']}: {len(cfg['envs'])} environments x {len(cfg['seeds'])} seeds")
    print(f"{'':<24}{'env steps':>18}{'gradient steps':>18}")
    for name, (e, g) in rows.items():
        print(f"{name:<24}{e:>18,.0f}{g:>18,.0f}")
    (de, dg), (ne, ng) = rows["total, DAG"], rows["total, naive"]
    (oe, og), (noe, nog) = rows["online, DAG"], rows["online, naive"]
    print(f"online phase: naive / DAG = {noe / oe:.1f}x env steps, {nog / og:.1f}x gradient steps")
    print(f"whole grid:   naive / DAG = {ne / de:.2f}x env steps, {ng / dg:.2f}x gradient steps")


if __name__ == "__main__":
    main()
