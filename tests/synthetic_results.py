"""A small synthetic tidy results table whose effects are known, for the report modules' tests.

Scores are generated on the normalised scale (0: random, 1: expert / all subtasks / success) and
mapped back onto each environment's reported metric, so that normalisation is exercised too.
Every effect is a parameter of :func:`make_results`; each row carries a little seeded noise so that
standard deviations and confidence intervals are not degenerate.

Run as a script to write an example table: ``python tests/synthetic_results.py /tmp/tidy.csv``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from replication import tidy
from replication.analysis.normalize import load_references
from replication.plan.config import DEFAULTS_FILE, deep_merge, read_yaml

ENVS = ("hopper", "kitchen", "sawyer-push")
SUITES = {"hopper": "locomotion", "halfcheetah": "locomotion", "kitchen": "kitchen", "kitchen-sparse": "kitchen"}
SEEDS = (0, 1, 2, 3, 4)
TOTAL = 100_000
PAUSES = (20_000, 40_000, 60_000, 80_000, 100_000)
NEWDATA_PAUSE = 60_000
NEWDATA_SIZE = 10_000
FT_PAUSE = 80_000
VALIDATION_COST = 3_000  # online + offline validation, charged to validated variants
INTERVAL = 5_000
EXTENDED = 100_000
ALGOS = ("iql", "cql", "calql")
METHODS = ("iql", "pex", "calql")  # the synthetic grid's; WSRL: make_results(methods=WITH_WSRL)
WITH_WSRL = (*METHODS, "wsrl")


def config_file_overrides() -> dict[str, Any]:
    """A run configuration file's content matching :func:`make_results` that passes the schema checks."""
    small = config_overrides()
    small["validation"] = {"online_fraction": 0.03, "offline_fraction": 0.03}
    return small


def config(**overrides: Any) -> dict[str, Any]:
    """A configuration matching :func:`make_results` (defaults.yaml with a small budget; not schema-checked)."""
    return deep_merge(deep_merge(read_yaml(DEFAULTS_FILE), config_overrides()), overrides)


def config_overrides() -> dict[str, Any]:
    return {
        "name": "synthetic",
        "envs": list(ENVS),
        "seeds": list(SEEDS),
        "budget": {"total_steps": TOTAL, "pause_fractions": [p / TOTAL for p in PAUSES], "finetune_pause": 0.8},
        "newdata": {"pause": NEWDATA_PAUSE / TOTAL, "size": NEWDATA_SIZE, "epsilon": [0.0]},
        "finetune": {"methods": list(METHODS)},  # make_results' own; WSRL: config(finetune={"methods": WITH_WSRL})
        "analysis": {
            "c4": {"enabled": True, "envs": ["hopper"], "finetune_steps": TOTAL - FT_PAUSE + EXTENDED},
            "c5": {"enabled": True, "env": "kitchen", "rewards": ["binary", "accumulated"]},
            "reward_granularity": {"enabled": True, "envs": ["hopper"], "delays": [1, 10, 50]},
        },
    }


def suite_of(env: str) -> str:
    return SUITES.get(env, "metaworld" if env.startswith("sawyer") else "locomotion")


@functools.cache
def _references() -> dict:
    return load_references()


def to_score(env: str, u: np.ndarray | float) -> np.ndarray:
    """A normalised value in the environment's reported metric."""
    u = np.asarray(u, dtype=float)
    suite = suite_of(env)
    if suite == "locomotion":
        ref = _references()[env]
        return ref.random + u * (ref.expert - ref.random)
    u = np.clip(u, 0.0, 1.0)
    return 4 * u if suite == "kitchen" else u


def online_u(seed: int, steps: np.ndarray) -> np.ndarray:
    """The synthetic online learning curve (normalised): 0.1 -> 0.7 over the budget, seed-shifted."""
    return 0.1 + 0.6 * np.minimum(steps, TOTAL) / TOTAL + 0.02 * (seed - 2)


def _piecewise(progress: np.ndarray, points: Sequence[tuple[float, float]]) -> np.ndarray:
    xs, ys = zip(*points, strict=True)
    return np.interp(progress, xs, ys)


class _Rows:
    """Tidy rows (``score`` metric) with seeded noise, in the order they are added."""

    def __init__(self, noise: float, rng_seed: int) -> None:
        self.rng = np.random.default_rng(rng_seed)
        self.noise = noise
        self.rows: list[dict[str, Any]] = []

    def add(self, env: str, seed: int, steps: Sequence[int], u: np.ndarray, **variant: Any) -> None:
        u = np.asarray(u, dtype=float) + self.rng.normal(0.0, self.noise, size=len(steps))
        for step, value in zip(steps, to_score(env, u), strict=True):
            self.rows.append(
                {
                    "env": env,
                    "suite": suite_of(env),
                    "seed": seed,
                    "env_step": int(step),
                    "metric": "score",
                    "value": float(value),
                    "episodes": 10,
                    "pause": 0,
                    **variant,
                }
            )


FT_START = FT_PAUSE + VALIDATION_COST
FT_STEPS = np.array([FT_START, *range(FT_PAUSE + INTERVAL, TOTAL + 1, INTERVAL)])
FT_VARIANT = {"stage": "finetune", "dataset": "buffer", "validation": "full", "pause": FT_PAUSE}


def make_results(
    *,
    envs: Sequence[str] = ENVS,
    seeds: Sequence[int] = SEEDS,
    rec_effect: dict[str, float] | None = None,
    validation_gain: float = 0.15,
    ft_gain: dict[str, dict[str, float]] | None = None,
    iql_drop: float = 0.2,
    extended_recovery: float = 0.1,
    c5_gap: float = 0.3,
    methods: Sequence[str] = METHODS,
    wsrl_drop: float = 0.0,
    granularity: bool = True,
    control: bool = True,
    noise: float = 0.01,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Synthetic tidy rows (``score`` metric) of every variant the report modules use.

    * recommendation: offline value = online at the pause + ``rec_effect[env]``; the unvalidated
      (``validation=none``) recommendation is ``validation_gain`` lower; ``best-of`` is the better of
      the offline value and online;
    * fine-tuning (each of ``methods``): each method ends at SAC continuation's final value +
      ``ft_gain[method][env]``; IQL first drops by ``iql_drop`` within the first 10 % of the fine-tuning
      budget, WSRL (from the offline Cal-QL agent) by ``wsrl_drop``;
    * C4: IQL with ``extended=1`` drops, is still below its start at ``TOTAL``, and ends
      ``extended_recovery`` above its start after ``EXTENDED`` more steps;
    * C5: Cal-QL on Kitchen ends ``c5_gap`` higher with ``reward=accumulated`` than ``reward=binary``;
    * ``control``: C1's control (online SAC's validated best snapshot) = online at the pause, at the
      best-of step (added after each environment's other rows).
    """
    rows = _Rows(noise, rng_seed)
    rec_effect = {"hopper": -0.05, "kitchen": 0.3, "sawyer-push": 0.0, **(rec_effect or {})}
    gains = {"iql": {}, "pex": {"kitchen": 0.2}, "calql": {"hopper": -0.15, "kitchen": 0.2}}
    for method, per_env in (ft_gain or {}).items():
        gains.setdefault(method, {}).update(per_env)
    drops = {"iql": iql_drop, "wsrl": wsrl_drop}
    online_steps = np.arange(0, TOTAL + 1, INTERVAL)
    for env in envs:
        rec = rec_effect.get(env, 0.0)
        for seed in seeds:
            rows.add(env, seed, online_steps, online_u(seed, online_steps), stage="online", algo="sac")
            _recommendations(rows, env, seed, rec, validation_gain)
            for method in methods:
                _finetune(rows, env, seed, method, rec, gains.get(method, {}).get(env, 0.0), drops.get(method, 0.0))
            if env == "hopper":
                _extended_iql(rows, env, seed, rec, iql_drop, extended_recovery)
            if env == "kitchen":
                _calql_rewards(rows, env, seed, c5_gap)
            if granularity and env == "hopper":
                _granularity(rows, env, seed, online_steps)
        for seed in seeds if control else ():
            for pause in PAUSES:
                rows.add(env, seed, [pause + VALIDATION_COST], online_u(seed, np.array([pause])), stage="recommend",
                         algo="sac", validation="full", selection="online", pause=pause)  # fmt: skip
    return tidy.frame(rows.rows)


def _recommendations(rows: _Rows, env: str, seed: int, rec: float, validation_gain: float) -> None:
    for algo_i, algo in enumerate(ALGOS):
        for dataset, pauses in (("buffer", PAUSES), ("newdata", (NEWDATA_PAUSE,))):
            for pause in pauses:
                base = float(online_u(seed, np.array([pause]))[0])
                off = base + rec + 0.01 * algo_i
                extra = NEWDATA_SIZE if dataset == "newdata" else 0
                common = {"stage": "recommend", "algo": algo, "dataset": dataset, "pause": pause}
                step = [pause + extra + VALIDATION_COST]
                rows.add(env, seed, step, [off], validation="full", selection="offline", **common)
                rows.add(env, seed, step, [max(off, base)], validation="full", selection="best-of", **common)
                rows.add(env, seed, [pause + extra], [off - validation_gain], validation="none", selection="offline",
                         **common)  # fmt: skip


def _finetune(rows: _Rows, env: str, seed: int, method: str, rec: float, gain: float, drop: float) -> None:
    """A fine-tuning curve from the offline agent's level at the switch to SAC's final value + ``gain``."""
    start_algo = {"pex": "iql", "wsrl": "calql"}.get(method, method)
    switch = float(online_u(seed, np.array([FT_PAUSE]))[0]) + rec + 0.01 * ALGOS.index(start_algo)
    final = float(online_u(seed, np.array([TOTAL]))[0]) + gain
    progress = (FT_STEPS - FT_START) / (TOTAL - FT_START)
    u = _piecewise(progress, [(0, switch), (0.1, switch - drop), (1, final)])
    rows.add(env, seed, FT_STEPS, u, algo=method, **FT_VARIANT)


def _extended_iql(rows: _Rows, env: str, seed: int, rec: float, iql_drop: float, recovery: float) -> None:
    ext_steps = np.array([FT_START, *range(FT_PAUSE + INTERVAL, TOTAL + EXTENDED + 1, INTERVAL)])
    switch = float(online_u(seed, np.array([FT_PAUSE]))[0]) + rec
    p = (ext_steps - FT_START) / (TOTAL + EXTENDED - FT_START)
    at_total = (TOTAL - FT_START) / (TOTAL + EXTENDED - FT_START)
    points = [(0, switch), (0.05, switch - iql_drop), (at_total, switch - iql_drop / 2), (1, switch + recovery)]
    rows.add(env, seed, ext_steps, _piecewise(p, points), algo="iql", variant_options="extended=1", **FT_VARIANT)


def _calql_rewards(rows: _Rows, env: str, seed: int, c5_gap: float) -> None:
    switch = float(online_u(seed, np.array([FT_PAUSE]))[0])
    progress = (FT_STEPS - FT_START) / (TOTAL - FT_START)
    for reward, end in (("binary", 0.2), ("accumulated", 0.2 + c5_gap)):
        u = _piecewise(progress, [(0, switch), (1, end)])
        rows.add(env, seed, FT_STEPS, u, algo="calql", variant_options=f"reward={reward}", **FT_VARIANT)


def _granularity(rows: _Rows, env: str, seed: int, online_steps: np.ndarray) -> None:
    for delay in (1, 10, 50):
        opts = f"delay={delay}"
        slow = 1.0 - delay / 100
        rows.add(env, seed, online_steps, online_u(seed, online_steps) * slow, stage="online", algo="sac",
                 variant_options=opts)  # fmt: skip
        for algo in ALGOS:
            for pause in PAUSES:
                base = float(online_u(seed, np.array([pause]))[0]) * slow
                rows.add(env, seed, [pause + VALIDATION_COST], [base + 0.001 * delay], stage="recommend", algo=algo,
                         dataset="buffer", validation="full", selection="offline", pause=pause,
                         variant_options=opts)  # fmt: skip


def main(argv: Sequence[str]) -> int:
    path = argv[0] if argv else "/tmp/synthetic_tidy.csv"
    tidy.write(make_results(), path)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
