"""One seeded evaluation loop for any deterministic policy.

A policy is a callable from one observation to one action. Evaluation episodes run on their own
env instance; episode ``i`` of an evaluation is reset with the ``i``-th seed of
:func:`episode_seeds`, so two evaluations with one seed see the same initial states (and, in
Meta-World, the same task variations) whatever ran before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from replication.agents.envs import make_env
from replication.envspecs import get_spec

Policy = Callable[[np.ndarray], np.ndarray]

EVAL_SEED_OFFSET = 10_000  # reporting evaluation: separate env seeded seed + 10000 (docs/protocol.md)
VALIDATION_SEED_OFFSET = 20_000  # (choice) validation episodes: their own seeds, disjoint from reporting


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
    """The outcome of one evaluation episode."""

    seed: int
    episode_return: float
    length: int
    terminated: bool
    truncated: bool
    success: bool | None  # Meta-World: success at any step; Kitchen: all subtasks done
    subtasks: int | None  # Kitchen: subtasks completed
    score: float  # the environment's reported metric: return, subtasks or success (0/1)

    @property
    def env_steps(self) -> int:
        """Environment steps the episode spent."""
        return self.length


def episode_seeds(seed: int, n: int, offset: int = EVAL_SEED_OFFSET) -> list[int]:
    """Reset seeds of ``n`` evaluation episodes for run seed ``seed``."""
    return [int(s) for s in np.random.SeedSequence(seed + offset).generate_state(n)]


def score_of(metric: str, episode_return: float, success: bool | None, subtasks: int | None) -> float:
    """The reported metric of one episode."""
    if metric == "return":
        return float(episode_return)
    if metric == "subtasks":
        return float(subtasks or 0)
    return float(bool(success))


def run_episode(env: gym.Env, policy: Policy, seed: int, metric: str) -> EpisodeRecord:
    """Run one episode of ``policy`` on ``env`` from ``reset(seed=seed)``."""
    obs, info = env.reset(seed=seed)
    total, length = 0.0, 0
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        total += float(info.get("undelayed_reward", reward))
        length += 1
    success = info.get("episode_success")
    subtasks = info.get("subtasks_completed")
    return EpisodeRecord(
        seed=seed,
        episode_return=total,
        length=length,
        terminated=bool(terminated),
        truncated=bool(truncated),
        success=None if success is None else bool(success),
        subtasks=None if subtasks is None else int(subtasks),
        score=score_of(metric, total, success, subtasks),
    )


class Evaluator:
    """Evaluates policies on one environment with a fixed list of episode seeds.

    The env instance is built once and reused; every episode is reset with its own seed, so
    results do not depend on what the env did before. The instance is built with the run's seed,
    so Meta-World evaluates on the run's own set of task variations.
    """

    def __init__(
        self,
        env_name: str,
        seed: int,
        episodes: int,
        offset: int = EVAL_SEED_OFFSET,
        env_options: dict[str, Any] | None = None,
        env: gym.Env | None = None,
    ):
        """``env``: an instance built with the same name, seed and options to reuse (e.g. shared
        between reporting evaluation and validation; every episode is reset with its own seed)."""
        self.env_name = env_name
        self.metric = get_spec(env_name).metric
        self.seeds = episode_seeds(seed, episodes, offset)
        self.env = env if env is not None else make_env(env_name, seed, **(env_options or {}))

    def __call__(self, policy: Policy, seeds: Sequence[int] | None = None) -> list[EpisodeRecord]:
        return [run_episode(self.env, policy, s, self.metric) for s in (self.seeds if seeds is None else seeds)]

    def close(self) -> None:
        self.env.close()


def evaluate(
    policy: Policy,
    env_name: str,
    seed: int,
    episodes: int = 10,
    offset: int = EVAL_SEED_OFFSET,
    env_options: dict[str, Any] | None = None,
) -> list[EpisodeRecord]:
    """Evaluate ``policy`` for ``episodes`` seeded episodes of ``env_name``."""
    evaluator = Evaluator(env_name, seed, episodes, offset, env_options)
    try:
        return evaluator(policy)
    finally:
        evaluator.close()


def summarize(records: Sequence[EpisodeRecord]) -> dict[str, float]:
    """Mean score, mean return and env steps spent over ``records``."""
    return {
        "score": float(np.mean([r.score for r in records])),
        "return": float(np.mean([r.episode_return for r in records])),
        "env_steps": float(sum(r.env_steps for r in records)),
    }
