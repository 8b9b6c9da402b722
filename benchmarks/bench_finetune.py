"""Fine-tuning curves of IQL, PEX and Cal-QL against SAC continuation, and their throughput.

On one environment with a small budget, the whole branch of one cell: online SAC (which itself
continues to ``T``: the SAC-continuation baseline), offline IQL and Cal-QL on its buffer at the
fine-tuning pause (``replication.agents.offline.run_offline``), then the three fine-tunings
(``replication.agents.finetune``), each for the budget its ledger leaves. Writes under ``--out``:

* ``curves.csv``: tidy rows of the three fine-tuning curves and of the online curve from the pause on;
* ``throughput.csv``: per method, fine-tuning env steps/s and updates/s, and a bare d3rlpy update
  loop (the method's own update, ``learner.update`` or PEX's, on pre-sampled batches from the run's
  final buffers and mixing rule):
  ``ratio`` = updates/s inside the fine-tuning loop (update time alone) over the bare loop's, and
  ``loop_ratio`` = updates per second of the whole loop (acting, env, storing, sampling, updating)
  over the bare loop's;
* ``finetune.png``: the four curves, and everything each job wrote (``cell/``).

    .venv/bin/python benchmarks/bench_finetune.py --out /tmp/finetune-demo [--reuse]

``--reuse`` keeps the online and offline runs already under ``--out`` and reruns the fine-tunings.
Timings on a shared machine are noisy: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def make_config(args: argparse.Namespace):
    from replication.plan import config

    total = args.total_steps
    offline = {
        algo: {"gradient_steps": args.gradient_steps, "hidden_units": args.hidden, "batch_size": args.batch}
        for algo in ("iql", "cql", "calql")
    }
    return config.resolve(
        {
            "name": "bench-finetune",
            "envs": [args.env],
            "seeds": [args.seed],
            "threads": 1,
            "device": "cpu",
            "budget": {"total_steps": total, "pause_fractions": [0.5, 1.0], "finetune_pause": 0.5},
            "online": {
                "learning_starts": args.learning_starts,
                "batch_size": args.batch,
                "net_arch": args.hidden,
                "snapshot_interval": total // 10,
                "checkpoint_interval": total,
            },
            "evaluation": {"interval": args.eval_interval, "episodes": args.eval_episodes},
            "validation": {"episodes": 2, "online_fraction": 0.05, "offline_fraction": 0.05},
            "env_options": {args.env: {"max_episode_steps": args.episode_steps}},
            "newdata": {"size": 1, "pause": 0.5},
            "offline": {"datasets": ["buffer"], **offline},
            "finetune": {"methods": ["iql", "pex", "calql"], "pex_initial_collection_steps": args.pex_collection},
            "analysis": {"c4": {"enabled": False}, "c5": {"enabled": False}},
        }
    )


def bare_updates_per_second(update, batches, repeats: int = 3) -> float:
    """``update`` alone over ``batches``: the median of ``repeats`` passes (the machine is shared)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            update(batch)
        rates.append(len(batches) / (time.perf_counter() - start))
    return float(np.median(rates))


def plot(curves: pd.DataFrame, pause: int, start: int, total: int, env: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = curves[curves["metric"] == "score"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    styles = {
        "sac": ("0.2", "SAC continuation"),
        "iql": ("C0", "IQL FT"),
        "pex": ("C2", "PEX"),
        "calql": ("C3", "Cal-QL FT"),
    }
    for algo, (color, label) in styles.items():
        rows = score[score["algo"] == algo].sort_values("env_step")
        ax.plot(rows["env_step"], rows["value"], color=color, label=label, marker="o", ms=2.5, lw=1.2)
    ax.axvline(pause, color="0.5", ls=":", lw=0.8)
    ax.axvline(start, color="0.5", ls="--", lw=0.8)
    ax.text(pause, ax.get_ylim()[1], " pause", va="top", fontsize=7, color="0.4")
    ax.text(start, ax.get_ylim()[0], " fine-tuning starts", va="bottom", fontsize=7, color="0.4")
    ax.set_xlim(pause - 0.05 * total, total * 1.01)
    ax.set_xlabel("env steps (ledger-true)")
    ax.set_ylabel("return")
    ax.set_title(f"{env}: fine-tuning after the pause at {pause} of T={total} (1 seed)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/finetune-demo"))
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-steps", type=int, default=20000)
    parser.add_argument("--learning-starts", type=int, default=2000)
    parser.add_argument("--episode-steps", type=int, default=200)
    parser.add_argument("--gradient-steps", type=int, default=3000, help="offline gradient steps")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-interval", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--bare-batches", type=int, default=300)
    parser.add_argument("--pex-collection", type=int, default=200, help="PEX's env steps before its first update")
    parser.add_argument("--reuse", action="store_true", help="keep the online and offline runs already under --out")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from replication import tidy
    from replication.agents.finetune import Finetune
    from replication.agents.learners import quiet_d3rlpy
    from replication.agents.offline import run_offline
    from replication.agents.online import run_online
    from replication.io import read_json
    from replication.plan import config
    from replication.plan.variants import finetune_ledger
    from replication.plan.workflow import FINETUNE_SOURCES, finetune_dataset

    quiet_d3rlpy()
    cfg = make_config(args)
    env, seed = args.env, args.seed
    cell = args.out / "cell"
    dataset = finetune_dataset(cfg)
    t0 = time.perf_counter()
    if args.reuse and (cell / "online" / "online.json").exists():
        online = read_json(cell / "online" / "online.json")
    else:
        online = run_online(cfg, env, seed, cell / "online", progress=False)
    print(f"online SAC: {cfg['budget']['total_steps']} steps, {time.perf_counter() - t0:.0f} s", flush=True)
    data = cell / "online" / f"pause_{dataset.pause}" / "dataset_buffer.h5"
    for algo in ("iql", "calql"):
        t0 = time.perf_counter()
        if not (args.reuse and (cell / "offline" / algo / "offline.json").exists()):
            run_offline(cfg, env, seed, algo, data, cell / "online", dataset, cell / "offline" / algo, progress=False)
        print(f"offline {algo}: {args.gradient_steps} gradient steps, {time.perf_counter() - t0:.0f} s", flush=True)

    rows, frames = [], []
    for method in ("iql", "pex", "calql"):
        source = cell / "offline" / FINETUNE_SOURCES[method]
        job = Finetune(cfg, env, seed, method, source, data, cell / "finetune" / method, progress=False)
        summary = job.run()
        tm = summary["timings"]
        batches = [job.agent.batch() for _ in range(args.bare_batches)]
        bare = bare_updates_per_second(job.agent.update, batches)
        loop_updates = tm["updates"] / tm["loop_seconds"]
        rows.append(
            {
                "method": method,
                "env_steps": tm["env_steps"],
                "env_steps_per_s": tm["env_steps_per_second"],
                "updates_per_s": tm["updates_per_second"],
                "bare_updates_per_s": bare,
                "ratio": tm["updates_per_second"] / bare,
                "loop_ratio": loop_updates / bare,
                "act_s": tm["act_seconds"],
                "env_s": tm["env_seconds"],
                "sample_s": tm["sample_seconds"],
                "update_s": tm["update_seconds"],
                "eval_s": tm["eval_seconds"],
            }
        )
        frames.append(pd.read_csv(cell / "finetune" / method / "curve.csv", keep_default_na=False))
        print(f"fine-tuning {method}: {tm['env_steps']} env steps, {tm['loop_seconds']:.0f} s", flush=True)

    pause = config.finetune_pause_step(cfg)
    online_curve = pd.read_csv(cell / "online" / "curve.csv", keep_default_na=False)
    sac = online_curve[online_curve["env_step"] >= pause]
    curves = tidy.frame(pd.concat([sac, *frames], ignore_index=True).to_dict("records"))
    tidy.write(curves, args.out / "curves.csv")
    throughput = pd.DataFrame(rows)
    throughput.to_csv(args.out / "throughput.csv", index=False)
    start = finetune_ledger(cfg, env).spent
    plot(curves, pause, start, cfg["budget"]["total_steps"], env, args.out / "finetune.png")

    print()
    print(f"{env}, T={cfg['budget']['total_steps']}, pause {pause}, fine-tuning from {start} (ledger), seed {seed}")
    print(f"online SAC env steps/s (training): {online['timings']['train_steps_per_second']:.0f}")
    print(
        "load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"
    )
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 200):
        print(throughput.to_string(index=False))
    score = curves[curves["metric"] == "score"]
    print()
    print("score at the switch and at T:")
    for algo in ("sac", "iql", "pex", "calql"):
        c = score[score["algo"] == algo].sort_values("env_step")
        first, last = c.iloc[0], c.iloc[-1]
        print(f"  {algo:6s} first {first['value']:8.1f} @ {first['env_step']:6d}   last {last['value']:8.1f}")
    print(f"\nwrote {args.out / 'curves.csv'}, {args.out / 'throughput.csv'}, {args.out / 'finetune.png'}")


if __name__ == "__main__":
    main()
