"""The seeded evaluation loop: reproducible records, filled per suite, honest step counts."""

from __future__ import annotations

import numpy as np
import pytest

from replication.agents.evaluation import (
    EVAL_SEED_OFFSET,
    VALIDATION_SEED_OFFSET,
    EpisodeRecord,
    Evaluator,
    episode_seeds,
    evaluate,
    score_of,
    summarize,
)

# (observation size, action size, action bound) of one environment per suite
SUITES = {"hopper": (11, 3, 1.0), "kitchen": (81, 9, 1.0), "sawyer-push": (39, 4, 1.0)}
EPISODES = 2


class LinearPolicy:
    """A fixed linear map of the observation, clipped to the action range; records what it sees."""

    def __init__(self, obs_dim: int, act_dim: int, bound: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.weights = rng.normal(scale=1.0 / np.sqrt(obs_dim), size=(act_dim, obs_dim))
        self.bias = rng.normal(scale=0.3, size=act_dim)
        self.bound = bound
        self.calls = 0
        self.seen: list[np.ndarray] = []

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.seen.append(np.array(obs, copy=True))
        return np.clip(self.weights @ obs + self.bias, -self.bound, self.bound).astype(np.float32)


def run(name: str, seed: int, episodes: int = EPISODES, **env_options) -> tuple[list[EpisodeRecord], LinearPolicy]:
    """``evaluate(policy, name, seed, episodes)``, done by its parts (an :class:`Evaluator`)."""
    policy = LinearPolicy(*SUITES[name])
    evaluator = Evaluator(name, seed, episodes, env_options=env_options)
    try:
        return evaluator(policy), policy
    finally:
        evaluator.close()


def test_evaluate_runs_the_policy_it_is_given() -> None:
    policy = LinearPolicy(*SUITES["hopper"])
    records = evaluate(policy, "hopper", 0, EPISODES)
    expected, _ = run("hopper", 0)
    assert records == expected
    assert policy.calls == sum(r.length for r in records)


@pytest.mark.parametrize("name", list(SUITES))
def test_evaluation_is_reproducible_and_filled_per_suite(name: str) -> None:
    first, policy_1 = run(name, 0)
    again, policy_2 = run(name, 0)
    other, policy_3 = run(name, 1, episodes=1)

    # One seed: identical records, and the policy saw identical observations.
    assert first == again
    assert len(policy_1.seen) == len(policy_2.seen)
    np.testing.assert_array_equal(np.array(policy_1.seen), np.array(policy_2.seen))
    # Another seed: other episode seeds and other initial states.
    assert other[0].seed not in [r.seed for r in first]
    assert not np.array_equal(policy_1.seen[0], policy_3.seen[0])
    assert first[0] != other[0]

    assert len(first) == EPISODES
    # Every step the records count is a step the policy acted on.
    assert sum(r.length for r in first) == policy_1.calls
    assert summarize(first)["env_steps"] == policy_1.calls
    assert all(r.env_steps == r.length for r in first)
    for r in first:
        assert r.terminated != r.truncated  # an episode ends one way
        assert isinstance(r.episode_return, float) and np.isfinite(r.episode_return)
        if name == "hopper":
            assert r.success is None and r.subtasks is None
            assert r.score == r.episode_return
            assert 1 <= r.length <= 1000
        elif name == "kitchen":
            assert isinstance(r.subtasks, int) and 0 <= r.subtasks <= 4
            assert isinstance(r.success, bool) and r.success == (r.subtasks == 4)
            assert r.score == float(r.subtasks)
            assert r.episode_return == float(r.subtasks)  # the subtask reward pays one per subtask
            assert r.truncated and r.length == 280 or r.terminated and r.success
        else:
            assert isinstance(r.success, bool) and r.subtasks is None
            assert r.score == float(r.success)
            assert r.truncated and r.length == 500


def test_episode_return_is_the_undelayed_return() -> None:
    plain, _ = run("hopper", 2, episodes=1)
    delayed, _ = run("hopper", 2, episodes=1, reward_delay=7)
    assert delayed[0].length == plain[0].length
    assert delayed[0].episode_return == pytest.approx(plain[0].episode_return, rel=1e-9)


def test_env_options_reach_the_evaluation_env() -> None:
    records, _ = run("sawyer-push", 0, max_episode_steps=17)
    assert [r.length for r in records] == [17, 17]
    assert all(r.truncated for r in records)


def test_evaluator_ignores_what_ran_before() -> None:
    evaluator = Evaluator("hopper", 3, 2)
    try:
        first = evaluator(LinearPolicy(*SUITES["hopper"]))
        evaluator(LinearPolicy(*SUITES["hopper"], seed=9))  # another policy in between
        evaluator.env.reset()
        again = evaluator(LinearPolicy(*SUITES["hopper"]))
        assert first == again
        assert [r.seed for r in first] == episode_seeds(3, 2)
    finally:
        evaluator.close()


def test_episode_seeds_are_distinct_across_runs() -> None:
    n = 10
    per_run = {seed: episode_seeds(seed, n) for seed in range(5)}
    everything = [s for seeds in per_run.values() for s in seeds]
    assert len(set(everything)) == 5 * n
    # Deterministic, and validation seeds never coincide with reporting seeds.
    assert per_run[0] == episode_seeds(0, n, EVAL_SEED_OFFSET)
    validation = [s for seed in range(5) for s in episode_seeds(seed, n, VALIDATION_SEED_OFFSET)]
    assert len(set(validation)) == 5 * n
    assert not set(validation) & set(everything)
    # A longer list extends a shorter one: adding episodes keeps the first ones.
    assert episode_seeds(0, 2 * n)[:n] == per_run[0]


def test_score_of_each_metric() -> None:
    assert score_of("return", 12.5, None, None) == 12.5
    assert score_of("subtasks", 3.0, False, 3) == 3.0
    assert score_of("success", 400.0, True, None) == 1.0
    assert score_of("success", 400.0, False, None) == 0.0


def test_summarize() -> None:
    records = [
        EpisodeRecord(1, 10.0, 100, True, False, None, None, 10.0),
        EpisodeRecord(2, 30.0, 50, False, True, None, None, 30.0),
    ]
    assert summarize(records) == {"score": 20.0, "return": 20.0, "env_steps": 150.0}
