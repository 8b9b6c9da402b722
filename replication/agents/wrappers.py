"""Gymnasium wrappers that give every study environment one interface.

All of them keep gymnasium's step API. After wrapping, ``info`` carries:

* ``subtasks_completed`` (Kitchen): subtasks completed so far in the episode;
* ``episode_success`` (Meta-World, Kitchen): whether the episode has succeeded at any step so far.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from replication.envspecs import KITCHEN_REWARD_MODES

KITCHEN_GOAL_THRESHOLD = 0.3  # gymnasium_robotics' BONUS_THRESH: a subtask is at its goal below it


class Float32Observation(gym.ObservationWrapper):
    """Cast observations to float32 and declare unbounded Box limits.

    Meta-World declares wrong bounds for its goal slots; unbounded limits make sure nothing
    downstream normalises by them.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        shape = env.observation_space.shape
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)


class KitchenReward(gym.Wrapper):
    """Franka Kitchen with a flat observation and one of three reward modes.

    * ``subtask``: +1 on the step a subtask is first completed (the library's own reward);
    * ``binary``: 1 only on the step on which all subtasks have been completed, else 0;
    * ``accumulated``: every step pays the number of subtasks currently at their goal.

    The wrapped env must be gymnasium-robotics' ``KitchenEnv`` with its dict observation and its
    default ``remove_task_when_completed=True``.
    """

    def __init__(self, env: gym.Env, mode: str = "subtask"):
        if mode not in KITCHEN_REWARD_MODES:
            raise ValueError(f"unknown Kitchen reward mode {mode!r}; valid modes: {', '.join(KITCHEN_REWARD_MODES)}")
        flat = gym.wrappers.FlattenObservation(env)
        super().__init__(flat)
        self.mode = mode
        self._kitchen = env.unwrapped
        self.tasks = tuple(self._kitchen.goal.keys())
        from replication.imports import import_robotics_quietly

        import_robotics_quietly()  # before its submodule: without its notice about the Adroit environments
        from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_INDICES

        self._indices = {task: OBS_ELEMENT_INDICES[task] for task in self.tasks}
        self._completed = 0

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        self._completed = 0
        info["subtasks_completed"] = 0
        info["episode_success"] = False
        return obs, info

    def subtasks_at_goal(self) -> int:
        """Number of subtasks whose object is at its goal in the current state."""
        qpos = self._kitchen.data.qpos
        return sum(
            int(np.linalg.norm(qpos[self._indices[task]] - self._kitchen.goal[task]) < KITCHEN_GOAL_THRESHOLD)
            for task in self.tasks
        )

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        obs, subtask_reward, terminated, truncated, info = self.env.step(action)
        before = self._completed
        self._completed = len(info["episode_task_completions"])
        all_done = self._completed == len(self.tasks)
        if self.mode == "subtask":
            reward = float(subtask_reward)
        elif self.mode == "binary":
            reward = 1.0 if all_done and before < len(self.tasks) else 0.0
        else:
            reward = float(self.subtasks_at_goal())
        info["episode_task_completions"] = list(info["episode_task_completions"])
        info["subtasks_completed"] = self._completed
        info["episode_success"] = all_done
        return obs, reward, terminated, truncated, info


class MetaWorldTask(gym.Wrapper):
    """Meta-World MT1 with explicit, seeded task selection and sticky success.

    On ``reset(seed=s)`` the task variation is drawn from a generator seeded with ``s``; on
    ``reset()`` from the same generator continued. So one seed gives the same variation and, for
    the same actions, the same trajectory. ``info["episode_success"]`` is true from the first step
    at which ``info["success"]`` was set (Meta-World's own flag is per step).
    """

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        selector = env
        while not hasattr(selector, "toggle_sample_tasks_on_reset"):
            selector = selector.env
        selector.toggle_sample_tasks_on_reset(False)
        self.tasks = list(selector.tasks)
        self._task_rng = np.random.default_rng(seed)
        self._succeeded = False

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._task_rng = np.random.default_rng(seed)
        self.env.unwrapped.set_task(self.tasks[int(self._task_rng.integers(len(self.tasks)))])
        obs, info = self.env.reset(seed=seed, options=options)
        self._succeeded = False
        info["episode_success"] = False
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._succeeded = self._succeeded or bool(info.get("success", 0.0))
        info["episode_success"] = self._succeeded
        return obs, reward, terminated, truncated, info


class RewardDelay(gym.Wrapper):
    """Pay the reward accumulated over ``k`` steps every ``k``-th step and at the episode's end.

    The episode's return is unchanged; only when it is paid moves. ``k=1`` is the identity.
    """

    def __init__(self, env: gym.Env, k: int):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"reward_delay must be a positive integer, got {k!r}")
        super().__init__(env)
        self.k = k
        self._pending = 0.0
        self._t = 0

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        self._pending = 0.0
        self._t = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        self._pending += float(reward)
        paid = 0.0
        if self._t % self.k == 0 or terminated or truncated:
            paid, self._pending = self._pending, 0.0
        info["undelayed_reward"] = float(reward)
        return obs, paid, terminated, truncated, info
