"""The twelve study environments: construction, spaces, seeding, reward modes and wrappers."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from replication.agents.envs import make_env
from replication.agents.wrappers import KitchenReward, MetaWorldTask, RewardDelay
from replication.envspecs import get_spec, specs

NAMES = list(specs())
ROLLOUT_STEPS = 60
INFO_FLAGS = ("success", "episode_success", "subtasks_completed")


def fixed_actions(env: gym.Env, n: int, seed: int = 123) -> np.ndarray:
    """``n`` actions spread over the env's action range, from a fixed numpy generator."""
    space = env.action_space
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)


def rollout(env: gym.Env, seed: int, actions: np.ndarray) -> list[tuple[Any, ...]]:
    """Reset with ``seed`` and step through ``actions``; stops at the episode's end."""
    obs, info = env.reset(seed=seed)
    trace: list[tuple[Any, ...]] = [(obs.copy(), None, False, False, {k: info.get(k) for k in INFO_FLAGS})]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        flags = {k: info.get(k) for k in INFO_FLAGS}
        trace.append((obs.copy(), float(reward), bool(terminated), bool(truncated), flags))
        if terminated or truncated:
            break
    return trace


# --- every environment ---------------------------------------------------------------------------


def test_the_study_has_twelve_environments() -> None:
    assert len(NAMES) == 12
    assert {"hopper", "humanoid", "kitchen", "kitchen-sparse", "sawyer-lift", "sawyer-drape"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_builds_steps_and_is_deterministic(name: str) -> None:
    spec = get_spec(name)
    env_a, env_b = make_env(name, 0), make_env(name, 0)
    try:
        # Observation space: a flat float32 Box, and observations that match it.
        space = env_a.observation_space
        assert isinstance(space, gym.spaces.Box)
        assert space.dtype == np.float32
        assert len(space.shape) == 1
        # Action space: the env's own range (Humanoid +-0.4, everything else +-1).
        bound = 0.4 if name == "humanoid" else 1.0
        assert isinstance(env_a.action_space, gym.spaces.Box)
        np.testing.assert_allclose(env_a.action_space.low, -bound)
        np.testing.assert_allclose(env_a.action_space.high, bound)

        actions = fixed_actions(env_a, ROLLOUT_STEPS)
        assert np.all(actions >= -bound) and np.all(actions <= bound)
        trace_a = rollout(env_a, 0, actions)
        trace_b = rollout(env_b, 0, actions)
        assert len(trace_a) > 1
        for obs, *_ in trace_a:
            assert obs.dtype == np.float32
            assert obs.shape == space.shape
            assert np.all(np.isfinite(obs))
            assert space.contains(obs)

        # One seed, one action sequence: identical rollouts on two separate instances.
        assert len(trace_a) == len(trace_b)
        for (obs_a, r_a, te_a, tr_a, info_a), (obs_b, r_b, te_b, tr_b, info_b) in zip(trace_a, trace_b, strict=True):
            np.testing.assert_array_equal(obs_a, obs_b)
            assert (r_a, te_a, tr_a, info_a) == (r_b, te_b, tr_b, info_b)

        # The suite's info flags are there after wrapping.
        last_info = trace_a[-1][4]
        if spec.suite == "metaworld":
            assert isinstance(last_info["episode_success"], bool)
            assert last_info["success"] is not None
        elif spec.suite == "kitchen":
            assert isinstance(last_info["subtasks_completed"], int)
            assert isinstance(last_info["episode_success"], bool)
        else:
            assert last_info["episode_success"] is None

        # Another seed: another initial state (every one of the twelve is stochastic at reset:
        # locomotion adds reset noise, Kitchen observation noise, Meta-World another task variation).
        obs_b, _ = env_b.reset(seed=1)
        assert not np.array_equal(obs_b, trace_a[0][0])
        # ... and the same seed, after all that, the same initial state again.
        obs_b, _ = env_b.reset(seed=0)
        np.testing.assert_array_equal(obs_b, trace_a[0][0])
    finally:
        env_a.close()
        env_b.close()


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown environment 'hopper-v9'") as info:
        make_env("hopper-v9", 0)
    for name in NAMES:
        assert name in str(info.value)


def test_unknown_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="colour") as info:
        make_env("hopper", 0, colour=1)
    for option in ("reward", "reward_delay", "max_episode_steps", "kwargs"):
        assert option in str(info.value)


@pytest.mark.parametrize(
    ("name", "mode", "valid"),
    [("hopper", "binary", ("dense",)), ("kitchen", "dense", ("subtask", "binary", "accumulated"))],
)
def test_reward_mode_must_belong_to_the_suite(name: str, mode: str, valid: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=f"unknown reward mode '{mode}'") as info:
        make_env(name, 0, reward=mode)
    for m in valid:
        assert m in str(info.value)


def test_options_reach_the_env() -> None:
    env = make_env("kitchen", 0, reward="accumulated", max_episode_steps=7)
    try:
        assert env.get_wrapper_attr("mode") == "accumulated"
        env.reset(seed=0)
        steps = 0
        truncated = terminated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape))
            steps += 1
        assert (steps, truncated) == (7, True)
    finally:
        env.close()


# --- Kitchen reward modes ----------------------------------------------------------------------


KITCHEN_TASKS = ("microwave", "kettle", "light switch", "slide cabinet")


class KitchenDriver:
    """Drives Franka Kitchen's objects by setting their joints, then steps with a zero action."""

    def __init__(self, mode: str):
        from gymnasium_robotics.envs.franka_kitchen import kitchen_env

        self.env = make_env("kitchen", 0, reward=mode)
        self.env.reset(seed=0)
        self.kitchen = self.env.unwrapped
        self.indices, self.goals = kitchen_env.OBS_ELEMENT_INDICES, kitchen_env.OBS_ELEMENT_GOALS
        self.threshold = kitchen_env.BONUS_THRESH
        self.start = {task: self.kitchen.data.qpos[self.indices[task]].copy() for task in KITCHEN_TASKS}
        assert sorted(self.kitchen.goal) == sorted(KITCHEN_TASKS)
        assert self.at_goal() == set(), "no subtask may be at its goal after reset"

    def at_goal(self) -> set[str]:
        qpos = self.kitchen.data.qpos
        return {t for t in KITCHEN_TASKS if np.linalg.norm(qpos[self.indices[t]] - self.goals[t]) < self.threshold}

    def put(self, task: str, at_goal: bool = True) -> None:
        idx = self.indices[task]
        self.kitchen.data.qpos[idx] = self.goals[task] if at_goal else self.start[task]
        self.kitchen.data.qvel[9:] = 0.0  # the objects come to rest where they were put (9 robot joints first)
        mujoco.mj_forward(self.kitchen.model, self.kitchen.data)

    def step(self, expect_at_goal: set[str]) -> tuple[float, bool, int, bool]:
        """One zero-action step: (reward, terminated, subtasks completed, episode success)."""
        _, reward, terminated, _, info = self.env.step(np.zeros(self.env.action_space.shape))
        # The state was driven by hand: check the objects really stayed where they were put.
        assert self.at_goal() == expect_at_goal
        return float(reward), bool(terminated), info["subtasks_completed"], info["episode_success"]


def complete_three_subtasks(k: KitchenDriver, reward: float) -> set[str]:
    """Put the first three subtasks at their goals one by one: the step after each pays ``reward``,
    the next one nothing (still at the goal). Returns the completed subtasks."""
    done: set[str] = set()
    for task in KITCHEN_TASKS[:3]:
        k.put(task)
        done.add(task)
        assert k.step(done) == (reward, False, len(done), False)
        assert k.step(done) == (0.0, False, len(done), False)
    return done


def test_kitchen_subtask_pays_once_per_subtask() -> None:
    k = KitchenDriver("subtask")
    done = complete_three_subtasks(k, 1.0)
    # Undo and redo the microwave: it was completed already, so it pays nothing again.
    k.put("microwave", at_goal=False)
    assert k.step(done - {"microwave"}) == (0.0, False, 3, False)
    k.put("microwave")
    assert k.step(done) == (0.0, False, 3, False)
    # The fourth subtask: +1, all done, the episode succeeds and ends.
    k.put("slide cabinet")
    assert k.step(set(KITCHEN_TASKS)) == (1.0, True, 4, True)


def test_kitchen_two_subtasks_on_one_step_pay_two() -> None:
    k = KitchenDriver("subtask")
    k.put("microwave")
    k.put("kettle")
    assert k.step({"microwave", "kettle"}) == (2.0, False, 2, False)


def test_kitchen_binary_pays_only_when_all_four_are_done() -> None:
    k = KitchenDriver("binary")
    complete_three_subtasks(k, 0.0)
    k.put("slide cabinet")
    assert k.step(set(KITCHEN_TASKS)) == (1.0, True, 4, True)


def test_kitchen_accumulated_pays_the_subtasks_at_goal_every_step() -> None:
    k = KitchenDriver("accumulated")
    assert k.step(set()) == (0.0, False, 0, False)
    k.put("microwave")
    assert k.step({"microwave"}) == (1.0, False, 1, False)
    assert k.step({"microwave"}) == (1.0, False, 1, False)  # pays again while it stays at its goal
    k.put("kettle")
    assert k.step({"microwave", "kettle"}) == (2.0, False, 2, False)
    # Undo the microwave: it no longer pays, though it counts as completed in the episode.
    k.put("microwave", at_goal=False)
    assert k.step({"kettle"}) == (1.0, False, 2, False)
    k.put("light switch")
    assert k.step({"kettle", "light switch"}) == (2.0, False, 3, False)
    k.put("microwave")
    k.put("slide cabinet")
    assert k.step(set(KITCHEN_TASKS)) == (4.0, False, 4, True)


def test_kitchen_accumulated_runs_on_after_success_paying_four_per_step() -> None:
    """All four objects at their goals: the episode does not end, every step pays 4, up to the time limit."""
    k = KitchenDriver("accumulated")
    for task in KITCHEN_TASKS:
        k.put(task)
    steps = 0
    while True:
        _, reward, terminated, truncated, info = k.env.step(np.zeros(k.env.action_space.shape))
        steps += 1
        assert k.at_goal() == set(KITCHEN_TASKS)
        assert (reward, terminated, info["subtasks_completed"], info["episode_success"]) == (4.0, False, 4, True)
        if truncated:
            break
    assert steps == get_spec("kitchen").max_episode_steps  # 280: the time limit ends it, not the success
    # the other modes still end the episode on success
    binary = KitchenDriver("binary")
    for task in KITCHEN_TASKS:
        binary.put(task)
    assert binary.step(set(KITCHEN_TASKS))[1] is True


def test_kitchen_reset_clears_the_episode() -> None:
    k = KitchenDriver("binary")
    for task in KITCHEN_TASKS:
        k.put(task)
    assert k.step(set(KITCHEN_TASKS)) == (1.0, True, 4, True)
    _, info = k.env.reset(seed=0)
    assert info["subtasks_completed"] == 0 and info["episode_success"] is False
    assert k.at_goal() == set()


def test_kitchen_reward_refuses_an_unknown_mode() -> None:
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    inner = gym.make("FrankaKitchen-v1", tasks_to_complete=list(KITCHEN_TASKS))
    with pytest.raises(ValueError, match="unknown Kitchen reward mode 'sparse'"):
        KitchenReward(inner, "sparse")
    inner.close()


# --- Meta-World --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def push() -> gym.Env:
    env = make_env("sawyer-push", 0)
    yield env
    env.close()


def test_metaworld_success_is_sticky_over_the_episode(push: gym.Env) -> None:
    sawyer = push.unwrapped
    zero = np.zeros(push.action_space.shape, dtype=np.float32)
    _, info = push.reset(seed=3)
    assert info["episode_success"] is False
    _, _, _, _, info = push.step(zero)
    assert info["success"] == 0.0 and info["episode_success"] is False
    # Put the puck on the goal: Meta-World's own flag is set on this step.
    sawyer._set_obj_xyz(sawyer._target_pos.copy())
    _, _, _, _, info = push.step(zero)
    assert info["success"] == 1.0 and info["episode_success"] is True
    # Move it back: the per-step flag drops, the episode's success stays.
    sawyer._set_obj_xyz(sawyer.obj_init_pos.copy())
    for _ in range(3):
        _, _, terminated, truncated, info = push.step(zero)
        assert info["success"] == 0.0 and info["episode_success"] is True
        assert not (terminated or truncated)  # success does not end the episode
    # A new episode starts unsuccessful.
    _, info = push.reset(seed=3)
    assert info["episode_success"] is False
    _, _, _, _, info = push.step(zero)
    assert info["episode_success"] is False


def test_metaworld_episode_lasts_500_steps(push: gym.Env) -> None:
    push.reset(seed=0)
    zero = np.zeros(push.action_space.shape, dtype=np.float32)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = push.step(zero)
        steps += 1
    assert (steps, terminated, truncated) == (500, False, True)


def test_metaworld_goal_is_in_the_last_three_slots(push: gym.Env) -> None:
    obs, _ = push.reset(seed=5)
    np.testing.assert_allclose(obs[-3:], push.unwrapped._target_pos, rtol=0, atol=1e-6)


def test_metaworld_reset_seed_fixes_the_variation_whatever_ran_before(push: gym.Env) -> None:
    fresh = make_env("sawyer-push", 0)
    try:
        actions = fixed_actions(fresh, 40, seed=7)
        expected = rollout(fresh, 11, actions)
        # The shared env has run other episodes and variations before: same seed, same trajectory.
        push.reset(seed=2)
        for action in actions[:10]:
            push.step(action)
        push.reset()
        push.reset()
        again = rollout(push, 11, actions)
        assert len(again) == len(expected)
        for (obs_a, r_a, *_), (obs_b, r_b, *_) in zip(expected, again, strict=True):
            np.testing.assert_array_equal(obs_a, obs_b)
            assert r_a == r_b
    finally:
        fresh.close()
    # Different reset seeds draw different variations (goals).
    goals = {tuple(push.reset(seed=s)[0][-3:].round(5)) for s in range(6)}
    assert len(goals) >= 4
    # Unseeded resets continue the seeded generator: the sequence repeats after the same seed.
    first = [push.reset(seed=9)[0][-3:]] + [push.reset()[0][-3:] for _ in range(3)]
    second = [push.reset(seed=9)[0][-3:]] + [push.reset()[0][-3:] for _ in range(3)]
    np.testing.assert_array_equal(np.array(first), np.array(second))
    assert len({tuple(g) for g in first}) > 1


def test_metaworld_build_seed_draws_the_set_of_variations(push: gym.Env) -> None:
    other = make_env("sawyer-push", 1)
    try:
        tasks = [task_wrapper(env).tasks for env in (push, other)]
        assert len(tasks[0]) == len(tasks[1]) == 50
        # MT1 draws its 50 variations from the build seed: another seed, other variations.
        assert [t.data for t in tasks[0]] != [t.data for t in tasks[1]]
        assert not np.array_equal(push.reset(seed=4)[0], other.reset(seed=4)[0])
    finally:
        other.close()


def task_wrapper(env: gym.Env) -> MetaWorldTask:
    while not isinstance(env, MetaWorldTask):
        env = env.env
    return env


# --- reward delay ------------------------------------------------------------------------------


def delayed_and_plain(name: str, k: int, seed: int, actions: np.ndarray, **options: Any):
    delayed, plain = make_env(name, seed, reward_delay=k, **options), make_env(name, seed, **options)
    out = []
    try:
        for env in (delayed, plain):
            env.reset(seed=seed)
            rewards, infos, end = [], [], (False, False)
            for action in actions:
                _, reward, terminated, truncated, info = env.step(action)
                rewards.append(float(reward))
                infos.append(info)
                if terminated or truncated:
                    end = (bool(terminated), bool(truncated))
                    break
            out.append((np.array(rewards), infos, end))
    finally:
        delayed.close()
        plain.close()
    return out


def check_delay(k: int, delayed: np.ndarray, plain: np.ndarray, infos: list[dict]) -> None:
    n = len(delayed)
    assert len(plain) == n
    # The episode's return is kept.
    assert delayed.sum() == pytest.approx(plain.sum(), rel=1e-9, abs=1e-9)
    # Paid only every k-th step and on the last step; in between, nothing.
    for t in range(1, n + 1):
        paid = t % k == 0 or t == n
        if not paid:
            assert delayed[t - 1] == 0.0, f"step {t} paid {delayed[t - 1]}"
        else:
            start = (t - 1) // k * k if t % k else t - k
            assert delayed[t - 1] == pytest.approx(plain[start:t].sum(), rel=1e-9, abs=1e-9), f"step {t}"
    # The undelayed reward travels in info.
    np.testing.assert_allclose([i["undelayed_reward"] for i in infos], plain, rtol=0, atol=0)


def test_reward_delay_on_a_terminating_episode() -> None:
    k = 7
    env = make_env("hopper", 0)
    actions = fixed_actions(env, 1000, seed=0)
    env.close()
    (delayed, infos, end), (plain, _, plain_end) = delayed_and_plain("hopper", k, 0, actions)
    assert end == plain_end == (True, False), "hopper should fall under these random actions"
    assert len(delayed) % k != 0, "pick actions whose episode does not end on a multiple of k"
    assert len(delayed) < 1000
    check_delay(k, delayed, plain, infos)


def test_reward_delay_on_a_truncated_episode() -> None:
    k, steps = 5, 23
    env = make_env("halfcheetah", 0)
    actions = fixed_actions(env, 100, seed=1)
    env.close()
    (delayed, infos, end), (plain, _, _) = delayed_and_plain("halfcheetah", k, 0, actions, max_episode_steps=steps)
    assert end == (False, True) and len(delayed) == steps
    check_delay(k, delayed, plain, infos)
    assert np.count_nonzero(delayed) == 5  # steps 5, 10, 15, 20 and 23 (dense rewards are never exactly 0)


def test_reward_delay_restarts_with_each_episode() -> None:
    env = make_env("halfcheetah", 0, reward_delay=4, max_episode_steps=6)
    try:
        for _ in range(2):
            env.reset(seed=0)
            paid = [env.step(np.zeros(6, dtype=np.float32))[1] for _ in range(6)]
            assert [p != 0.0 for p in paid] == [False, False, False, True, False, True]
    finally:
        env.close()


def test_reward_delay_of_one_is_no_wrapper_and_bad_delays_fail() -> None:
    env = make_env("hopper", 0, reward_delay=1)
    assert not isinstance(env, RewardDelay)
    env.close()
    with pytest.raises(ValueError, match="reward_delay"):
        make_env("hopper", 0, reward_delay=-3)
    with pytest.raises(ValueError, match="reward_delay"):
        make_env("hopper", 0, reward_delay=2.5)


def test_env_spaces_come_from_envs_already_built(monkeypatch):
    """A job that builds its env first reads the spaces without building another (Meta-World: ~1 s each)."""
    from replication.agents import envs

    monkeypatch.setattr(envs, "_SPACES", {})
    built: list[str] = []
    real_make = gym.make
    monkeypatch.setattr(envs.gym, "make", lambda *a, **k: built.append(a[0]) or real_make(*a, **k))

    env = make_env("hopper", 7, max_episode_steps=30, reward_delay=5)
    obs_space, act_space = envs.env_spaces("hopper", max_episode_steps=30, reward_delay=5)
    assert len(built) == 1
    assert obs_space == env.observation_space and act_space == env.action_space
    assert obs_space is not env.observation_space  # a copy: the job's env keeps its own seeded space

    envs.env_spaces("hopper", max_episode_steps=31)  # other options: an env of their own, once
    envs.env_spaces("hopper", max_episode_steps=31)
    assert len(built) == 2
