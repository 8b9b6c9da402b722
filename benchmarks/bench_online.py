"""Throughput of replication.agents.online against a bare SB3 ``SAC.learn`` on the same env and settings.

    .venv/bin/python benchmarks/bench_online.py [--env hopper] [--steps 6000]

Prints env steps/s of the bare loop, of replication.agents.online's training (its ``learn`` calls), and
of replication.agents.online as a whole (evaluations, snapshots, validation and datasets included), and
their ratios. Target: training ratio >= 0.95. ``--repeats`` alternates the two loops and keeps each
one's best run, so that load on the machine during one run does not bias the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from replication.agents.online import build_sac, run_online
from replication.plan import config
from replication.plan.settings import online_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--episode-steps", type=int, default=200)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = config.resolve(
        {
            "name": "bench",
            "envs": [args.env],
            "device": "cpu",
            "budget": {"total_steps": args.steps, "pause_fractions": [0.5, 1.0], "finetune_pause": 0.5},
            "online": {
                "learning_starts": args.learning_starts,
                "net_arch": args.hidden,
                "snapshot_interval": 500,
                "checkpoint_interval": 10**9,
            },
            "evaluation": {"interval": 1000, "episodes": 5},
            "validation": {"online_fraction": 0.2, "offline_fraction": 0.1, "episodes": 1},
            "env_options": {args.env: {"max_episode_steps": args.episode_steps}},
            "offline": {"datasets": ["buffer"]},
            "finetune": {"methods": []},
            "analysis": {"c4": {"enabled": False}, "c5": {"enabled": False}},
        }
    )
    bare = whole = train = 0.0
    for _ in range(args.repeats):
        model = build_sac(online_settings(cfg, args.env), 0)
        start = time.perf_counter()
        model.learn(args.steps)
        bare = max(bare, args.steps / (time.perf_counter() - start))
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            s = run_online(cfg, args.env, 0, out, progress=False)
            if s["timings"]["train_steps_per_second"] > train:
                summary, train = s, s["timings"]["train_steps_per_second"]
            whole = max(whole, args.steps / (time.perf_counter() - start))
    t = summary["timings"]
    hidden = "x".join(map(str, args.hidden))
    print(f"env {args.env}, {args.steps} steps, {hidden} SAC, 1 thread, best of {args.repeats} alternated runs")
    print(f"{'loop':<36}{'env steps/s':>12}{'ratio':>8}")
    print(f"{'bare SAC.learn':<36}{bare:>12.1f}{1.0:>8.3f}")
    print(f"{'replication.agents.online (training)':<36}{train:>12.1f}{train / bare:>8.3f}")
    print(f"{'replication.agents.online (whole job)':<36}{whole:>12.1f}{whole / bare:>8.3f}")
    print(
        f"time outside training: eval {t['eval_seconds']:.1f} s, validation {t['validation_seconds']:.1f} s, "
        f"datasets {t['dataset_seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
