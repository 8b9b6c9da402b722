"""Learning parity of the online stage: ``replication online`` against a bare SB3 ``SAC.learn``.

    .venv/bin/python benchmarks/bench_learning.py [--config config/mini.yaml] [--env hopper]
        [--seeds 0 1 2] [--from-run results/mini] [--out results/benchmarks/learning]

Per seed, two loops with the config's SAC settings (its online section, T and evaluation):

* the package: the real ``replication online`` command line, run here (or, with ``--from-run``, the
  online jobs of a finished run of the same config);
* bare SB3: ``SAC("MlpPolicy", gymnasium.make(<env id>), ...)`` built here from the config's values
  (not by the package's ``build_sac``), one ``learn(T)`` call, evaluated from an SB3 callback every
  ``evaluation.interval`` env steps (after that step's gradient update, where the package's loop
  evaluates too).

Both are evaluated with the package's evaluator on the same seeded episodes. The report (printed,
and ``parity.md``, ``parity.csv``, ``parity.png`` under ``--out``) gives both learning curves, the
final returns, their difference with a bootstrap interval over seeds, and per seed whether the two
loops coincide exactly: the same mean return at every evaluation, and the same actor weights at
every evaluation the package snapshotted (its ``snapshots/step_<n>.pt``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from replication.agents.evaluation import Evaluator
from replication.agents.policies import sac_policy
from replication.agents.rngs import isolated_rng
from replication.envspecs import resolve_spec
from replication.imports import import_gym_quietly
from replication.plan import config, workflow

LOOPS = ("replication online", "bare SB3 SAC.learn")


def bare_sac(cfg: dict[str, Any], env_name: str, seed: int):
    """SB3 SAC on the plain gymnasium env, every setting spelled out from the config."""
    import_gym_quietly()
    import gymnasium as gym
    from stable_baselines3 import SAC  # imports gym (SB3's compatibility patch): its banner dropped above

    p = config.online_params(cfg, env_name)
    options = config.env_options(cfg, env_name)
    if set(options) - {"max_episode_steps"}:
        raise SystemExit(f"bench_learning compares plain environments; {env_name} has options {options}")
    spec = resolve_spec(env_name, **options)
    env = gym.make(spec.id, max_episode_steps=spec.max_episode_steps, **spec.kwargs)
    return SAC(
        "MlpPolicy",
        env,
        learning_rate=p["learning_rate"],
        buffer_size=cfg["budget"]["total_steps"],
        learning_starts=p["learning_starts"],
        batch_size=p["batch_size"],
        tau=p["tau"],
        gamma=p["gamma"],
        train_freq=p["train_freq"],
        gradient_steps=p["gradient_steps"],
        ent_coef=p["ent_coef"],
        replay_buffer_kwargs={"handle_timeout_termination": True},
        policy_kwargs={"net_arch": list(p["net_arch"])},
        seed=seed,
        device="cpu",
        verbose=0,
    )


def actor_weights(actor: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The SAC actor's parameters by name, as plain CPU tensors."""
    return {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()}


def run_bare(cfg: dict[str, Any], env_name: str, seed: int) -> tuple[pd.DataFrame, dict[int, dict]]:
    """One bare ``learn(T)``: its learning curve and the actor weights at every evaluation."""
    from stable_baselines3.common.callbacks import BaseCallback

    ev = cfg["evaluation"]
    total, interval = cfg["budget"]["total_steps"], ev["interval"]
    evaluator = Evaluator(env_name, seed, ev["episodes"], ev["seed_offset"], config.env_options(cfg, env_name))
    rows: list[dict[str, Any]] = []
    weights: dict[int, dict] = {}

    def evaluate(model) -> None:
        with isolated_rng():  # evaluation is the bench's, not SAC's: it must not move SAC's streams
            returns = [r.episode_return for r in evaluator(sac_policy(model))]
        rows.append({"seed": seed, "env_step": model.num_timesteps, "return": float(np.mean(returns))})
        weights[model.num_timesteps] = actor_weights(model.actor)

    class EvaluateEvery(BaseCallback):
        # a rollout starts after the previous step's gradient update: the weights of step n are final here
        def _on_rollout_start(self) -> None:
            n = self.model.num_timesteps
            if n and n % interval == 0 and n not in weights:
                evaluate(self.model)

        def _on_step(self) -> bool:
            return True

    model = bare_sac(cfg, env_name, seed)
    model.learn(total, callback=EvaluateEvery(), log_interval=None)
    if total not in weights:
        evaluate(model)
    return pd.DataFrame(rows), weights


def run_package(cfg_file: Path, env_name: str, seed: int, out: Path) -> Path:
    """The real ``replication online`` command line for one cell; returns its output directory."""
    exe = Path(sys.executable).with_name("replication")  # the environment's own entry point
    args = ["online", "--config", str(cfg_file), "--env", env_name, "--seed", str(seed), "--out", str(out)]
    subprocess.run([str(exe), *args, "--no-progress"], check=True)
    return out


def package_curve(online_dir: Path, seed: int) -> pd.DataFrame:
    curve = pd.read_csv(online_dir / "curve.csv", float_precision="round_trip")  # exact, as written
    curve = curve[curve.metric == "return"]
    return pd.DataFrame({"seed": seed, "env_step": curve.env_step.to_numpy(), "return": curve.value.to_numpy()})


def same_weights(online_dir: Path, weights: dict[int, dict]) -> tuple[int, list[int]]:
    """Evaluations whose bare actor equals the package's snapshot of that step: (compared, differing steps)."""
    compared, differ = 0, []
    for step, bare in sorted(weights.items()):
        path = online_dir / "snapshots" / f"step_{step}.pt"
        if not path.exists():
            continue
        snap = torch.jit.load(str(path)).state_dict()  # the deterministic actor: latent_pi and mu
        shared = [k for k in bare if k.startswith(("latent_pi.", "mu."))]
        if not shared or any(k not in snap for k in shared):
            raise SystemExit(f"{path}: not a SAC actor snapshot of this network")
        compared += 1
        if not all(torch.equal(snap[k], bare[k]) for k in shared):
            differ.append(step)
    return compared, differ


def bootstrap_mean(values: np.ndarray, reps: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` (resampling seeds)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(reps, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def plot(curves: pd.DataFrame, env_name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, loop in zip(axes[:2], LOOPS, strict=True):
        part = curves[curves.loop == loop]
        for seed, g in part.groupby("seed"):
            ax.plot(g.env_step, g["return"], lw=1, alpha=0.6, label=f"seed {seed}")
        mean = part.groupby("env_step")["return"].mean()
        ax.plot(mean.index, mean.to_numpy(), color="black", lw=2, label="mean")
        ax.set_title(loop)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"{env_name} return")
        ax.legend(fontsize=7)
    lo = min(ax.get_ylim()[0] for ax in axes[:2])
    hi = max(ax.get_ylim()[1] for ax in axes[:2])
    for ax in axes[:2]:
        ax.set_ylim(lo, hi)
    for seed, g in paired(curves).groupby("seed"):
        axes[2].plot(g.env_step, g[LOOPS[0]] - g[LOOPS[1]], marker="o", ms=3, label=f"seed {seed}")
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set_title("difference (package - bare)")
    axes[2].set_xlabel("env steps")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def paired(curves: pd.DataFrame) -> pd.DataFrame:
    """Both loops' returns at the evaluations they share (the package also evaluates at its pauses)."""
    return curves.pivot_table(index=["seed", "env_step"], columns="loop", values="return").dropna().reset_index()


def report(curves: pd.DataFrame, checks: dict[int, tuple[int, list[int]]], env_name: str, total: int) -> str:
    wide = paired(curves)
    final = wide[wide.env_step == total].set_index("seed")
    diff = (final[LOOPS[0]] - final[LOOPS[1]]).to_numpy()
    if len(diff) > 1:
        lo, hi = bootstrap_mean(diff)
        spread = f"95% bootstrap interval over seeds [{lo:+.2f}, {hi:+.2f}]"
    else:
        spread = "one seed: no interval over seeds"
    lines = [
        f"{env_name}, T = {total:,}: final return (mean of the evaluation episodes at T), per seed",
        "",
        "| seed | replication online | bare SB3 SAC.learn | difference | identical returns at every shared "
        "evaluation | actor weights equal (evaluations compared) |",
        "|---:|---:|---:|---:|:---|:---|",
    ]
    for seed, row in final.iterrows():
        g = wide[wide.seed == seed]
        same_curve = bool((g[LOOPS[0]] == g[LOOPS[1]]).all())
        compared, differ = checks[seed]
        weights = f"yes ({compared})" if not differ else f"no: differ at {differ} ({compared})"
        lines.append(
            f"| {seed} | {row[LOOPS[0]]:.1f} | {row[LOOPS[1]]:.1f} | {row[LOOPS[0]] - row[LOOPS[1]]:+.1f} | "
            f"{'yes' if same_curve else 'no'} | {weights} |"
        )
    lines += [
        "",
        f"Final return, package - bare, mean over {len(diff)} seed(s): {diff.mean():+.2f} ({spread}); "
        f"largest difference at any evaluation: {np.abs(wide[LOOPS[0]] - wide[LOOPS[1]]).max():.3g}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/mini.yaml")
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--from-run", help="take the package's curves from this finished run of the same config")
    parser.add_argument("--steps", type=int, help="override T (a quick check; the default is the config's)")
    parser.add_argument("--out", default="results/benchmarks/learning")
    args = parser.parse_args()
    torch.set_num_threads(1)
    user = config.read_yaml(args.config)
    user.update(envs=[args.env], seeds=args.seeds, device="cpu")
    if args.steps:
        user.setdefault("budget", {})["total_steps"] = args.steps
    cfg = config.resolve(user)
    total = cfg["budget"]["total_steps"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_run:
        ran = config.read_yaml(Path(args.from_run) / "config.yaml")
        mine, theirs = workflow.result_settings(cfg), workflow.result_settings(ran)  # resume checkpoints aside
        if any(theirs[k] != mine[k] for k in ("online", "budget", "evaluation", "env_options")):
            raise SystemExit(f"{args.from_run} ran other SAC, budget or evaluation settings than {args.config}")
    curves, checks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file = Path(tmp) / "config.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
        for seed in args.seeds:
            if args.from_run:
                online_dir = Path(args.from_run) / "cells" / args.env / f"seed{seed}" / "online"
            else:
                online_dir = run_package(cfg_file, args.env, seed, Path(tmp) / f"seed{seed}")
            bare, weights = run_bare(cfg, args.env, seed)
            checks[seed] = same_weights(online_dir, weights)
            curves += [package_curve(online_dir, seed).assign(loop=LOOPS[0]), bare.assign(loop=LOOPS[1])]
    table = pd.concat(curves, ignore_index=True)
    table.to_csv(out / "parity.csv", index=False)
    text = report(table, checks, args.env, total)
    (out / "parity.md").write_text(text)
    plot(table, args.env, out / "parity.png")
    print(text, end="")
    print(f"written: {out}/parity.md, parity.csv, parity.png")


if __name__ == "__main__":
    main()
