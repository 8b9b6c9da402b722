"""Gradient steps per second of ``replication.agents.offline`` against a bare d3rlpy ``fit``, and faster settings.

On one dataset from a short real online run (HalfCheetah by default: its episodes always run their
full length, the worst case for Cal-QL's returns-to-go), each algorithm is trained by several
"contenders" on the same data, settings and seed:

* ``replication``: the offline job's training (``replication.agents.learners``: ``offline_buffer`` +
  ``build_learner`` + ``prepare`` + ``train``), exactly what ``run_offline`` runs between its checkpoints);
* ``bare fit``: ``learner.fit`` on ``load_dataset``'s d3rlpy dataset with d3rlpy's own picker;
* CQL / Cal-QL settings that might be faster without changing results: 2 torch threads instead of
  1, and (Cal-QL) returns-to-go per sample (d3rlpy) instead of once per episode.

The machine is shared, so contenders race in pairs, interleaved: each round both train one chunk
of ``--chunk`` gradient steps (in rotating order), and only those seconds count. Each contender
keeps its own numpy and torch RNG states across chunks, so its result is exactly that of one
uninterrupted run; "same network" compares greedy actions on 256 dataset observations. Pairs:
replication vs bare fit (``G`` steps); each setting vs a fresh default contender
(``--settings-steps``, default ``G``; a separate race, so that a 2-thread chunk's spinning threads
do not slow the main comparison). ``run_offline`` itself is also run once per algorithm (its own
recorded steps/s, not interleaved, and its final network against the bare fit's).

    .venv/bin/python benchmarks/bench_offline.py --gradient-steps 300 --hidden 256 256 --batch 256
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def make_config(args: argparse.Namespace):
    from replication.plan import config

    total = args.online_steps
    offline = {
        algo: {"gradient_steps": args.gradient_steps, "hidden_units": args.hidden, "batch_size": args.batch}
        for algo in ("iql", "cql", "calql")
    }
    fraction = args.episode_steps / total  # one validation episode at one checkpoint
    return config.resolve(
        {
            "name": "bench",
            "envs": [args.env],
            "seeds": [0],
            "threads": 1,
            "device": "cpu",
            "budget": {"total_steps": total, "pause_fractions": [0.5, 1.0], "finetune_pause": 0.5},
            "online": {
                "learning_starts": min(1000, total // 2),
                "batch_size": 64,
                "net_arch": [64, 64],
                "snapshot_interval": total // 2,
                "checkpoint_interval": total,
            },
            "evaluation": {"interval": total, "episodes": 1},
            "validation": {"episodes": 1, "online_fraction": fraction, "offline_fraction": fraction},
            "env_options": {args.env: {"max_episode_steps": args.episode_steps}},
            "newdata": {"size": 1, "pause": 0.5},
            "offline": {"datasets": ["buffer"], **offline},
            "finetune": {"methods": []},
            "analysis": {"c4": {"enabled": False}, "c5": {"enabled": False}},
        }
    )


class Contender:
    """One way of training, run in chunks with its own RNG states and thread count."""

    def __init__(self, label: str, threads: int, setup: Callable[[], tuple[object, Callable[[int], None]]]):
        self.label, self.threads = label, threads
        torch.set_num_threads(threads)
        self.learner, self.step = setup()  # setup seeds d3rlpy last thing before the learner exists
        self.np_state, self.torch_state = np.random.get_state(), torch.get_rng_state()
        self.seconds, self.steps = 0.0, 0

    def run(self, n: int) -> None:
        torch.set_num_threads(self.threads)
        np.random.set_state(self.np_state)
        torch.set_rng_state(self.torch_state)
        start = time.perf_counter()
        self.step(n)
        self.seconds += time.perf_counter() - start
        self.steps += n
        self.np_state, self.torch_state = np.random.get_state(), torch.get_rng_state()

    @property
    def rate(self) -> float:
        return self.steps / max(self.seconds, 1e-9)


def replication_contender(cfg, env, algo, transitions, seed, precompute: bool):
    import d3rlpy

    from replication.agents.learners import build_learner, offline_buffer, prepare, train
    from replication.plan.settings import learner_settings

    def setup():
        buffer = offline_buffer(learner_settings(cfg, env, algo), transitions, precompute)
        d3rlpy.seed(seed)
        learner = build_learner(learner_settings(cfg, env, algo), "cpu")
        prepare(learner, buffer)
        return learner, lambda n: train(learner, buffer, n)

    return setup


def fit_contender(cfg, env, algo, path, seed):
    """d3rlpy's ``fit``, called once per chunk: it builds the learner on its first call only."""
    import d3rlpy

    from replication.agents.datasets import load_dataset
    from replication.agents.learners import build_learner, transition_picker
    from replication.plan.settings import learner_settings

    def setup():
        dataset, _ = load_dataset(path)
        picker = transition_picker(learner_settings(cfg, env, algo))
        if picker is not None:
            dataset = d3rlpy.dataset.ReplayBuffer(
                d3rlpy.dataset.InfiniteBuffer(), episodes=dataset.episodes, transition_picker=picker
            )
        d3rlpy.seed(seed)
        learner = build_learner(learner_settings(cfg, env, algo), "cpu")

        def step(n: int) -> None:
            learner.fit(
                dataset,
                n_steps=n,
                n_steps_per_epoch=n,
                logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
                show_progress=False,
            )

        return learner, step

    return setup


def race(contenders: list[Contender], steps: int, chunk: int) -> list[Contender]:
    """Train every contender ``steps`` gradient steps, one chunk each per round, in rotating order."""
    done, rounds = 0, 0
    while done < steps:
        n = min(chunk, steps - done)
        k = rounds % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            c.run(n)
        done, rounds = done + n, rounds + 1
    torch.set_num_threads(1)
    return contenders


def same(a: np.ndarray, b: np.ndarray) -> str:
    diff = float(np.max(np.abs(a - b)))
    return "identical" if diff == 0 else f"max diff {diff:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="halfcheetah")
    parser.add_argument("--online-steps", type=int, default=4000)
    parser.add_argument("--episode-steps", type=int, default=1000)
    parser.add_argument("--gradient-steps", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=25, help="gradient steps per contender per round")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--algos", nargs="+", default=["iql", "cql", "calql"])
    parser.add_argument("--no-settings", action="store_true", help="skip the threads / returns-to-go settings")
    parser.add_argument(
        "--settings-steps", type=int, default=None, help="train the settings' contenders this far only (default: G)"
    )
    parser.add_argument("--no-run-offline", action="store_true", help="skip the whole run_offline per algorithm")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import structlog

    from replication.agents.datasets import load_transitions
    from replication.agents.learners import load_learner, quiet_d3rlpy
    from replication.agents.offline import run_offline
    from replication.agents.online import run_online
    from replication.plan.variants import OfflineDataset

    quiet_d3rlpy()  # and d3rlpy's "skip building models" warning on every chunk after the first
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_offline_"))
    cfg = make_config(args)
    env, seed, steps = args.env, 0, args.gradient_steps
    online_dir = workdir / "online"
    start = time.perf_counter()
    run_online(cfg, env, seed, online_dir, progress=False)
    path = online_dir / f"pause_{args.online_steps}" / "dataset_buffer.h5"
    transitions, meta = load_transitions(path)
    obs = transitions.observations[:: max(1, len(transitions) // 256)][:256]
    print(
        f"dataset: {env}, {meta['transitions']} transitions in {meta['episodes']} episodes of up to "
        f"{args.episode_steps} steps (online run {time.perf_counter() - start:.0f} s); G = {steps}, "
        f"hidden {args.hidden}, batch {args.batch}, CPU, {torch.get_num_threads()} default thread(s), "
        f"chunks of {args.chunk} steps interleaved",
        flush=True,
    )

    main_rows, setting_rows = [], []
    for algo in args.algos:
        ours, bare = race(
            [
                Contender("replication", 1, replication_contender(cfg, env, algo, transitions, seed, True)),
                Contender("bare fit", 1, fit_contender(cfg, env, algo, path, seed)),
            ],
            steps,
            args.chunk,
        )
        ours_actions = ours.learner.predict(obs)
        own, own_same = "", ""
        if not args.no_run_offline:
            out = workdir / algo
            pause = args.online_steps
            torch.set_num_threads(1)
            summary = run_offline(cfg, env, seed, algo, path, online_dir, OfflineDataset("buffer", pause), out)
            own = f"{summary['timings']['gradient_steps_per_second']:.2f}"
            own_same = same(load_learner(out, "last").predict(obs), bare.learner.predict(obs))
        eq = same(ours_actions, bare.learner.predict(obs))
        main_rows.append((algo, ours.rate, bare.rate, ours.rate / bare.rate, eq, own, own_same))
        print(f"{algo}: replication vs bare fit done", flush=True)
        if args.no_settings or algo not in ("cql", "calql"):
            continue
        settings_steps = min(steps, args.settings_steps or steps)
        groups = [("threads=2", 2, True)]
        if algo == "calql":
            groups.insert(0, ("returns-to-go per sample (d3rlpy picker)", 1, False))
        for label, threads, precompute in groups:
            default, other = race(
                [
                    Contender("default", 1, replication_contender(cfg, env, algo, transitions, seed, True)),
                    Contender(label, threads, replication_contender(cfg, env, algo, transitions, seed, precompute)),
                ],
                settings_steps,
                args.chunk,
            )
            eq = same(other.learner.predict(obs), default.learner.predict(obs))
            setting_rows.append((algo, f"{label} ({settings_steps} steps)", other.rate, default.rate, eq))
            print(f"{algo}: {label} done", flush=True)

    print()
    print(
        "| algo | replication.agents.offline steps/s | bare d3rlpy fit steps/s | ratio | same network | "
        "run_offline's own steps/s (one run, not interleaved) | run_offline vs bare fit |"
    )
    print("|---|---|---|---|---|---|---|")
    for algo, a, b, ratio, eq, own, own_eq in main_rows:
        print(f"| {algo} | {a:.2f} | {b:.2f} | {ratio:.3f} | {eq} | {own} | {own_eq} |")
    if setting_rows:
        print()
        print(
            "| algo | setting | steps/s | default steps/s (1 thread, returns-to-go once per episode) | ratio | "
            "result vs default |"
        )
        print("|---|---|---|---|---|---|")
        for algo, label, rate, base, eq in setting_rows:
            print(f"| {algo} | {label} | {rate:.2f} | {base:.2f} | {rate / base:.3f} | {eq} |")


if __name__ == "__main__":
    main()
