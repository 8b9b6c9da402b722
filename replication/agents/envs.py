"""The study's twelve environments, by the names the study uses.

They are declared in ``config/envs.yaml`` (read by :mod:`replication.envspecs`); :func:`make_env`
builds one as a gymnasium env with a flat float32 Box observation and actions in the env's own
range, which SB3 and d3rlpy take as is.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import gymnasium as gym
import yaml

from replication.agents.wrappers import Float32Observation, KitchenReward, MetaWorldTask, RewardDelay
from replication.envspecs import resolve_spec


def kitchen_defaults(reward: str) -> dict[str, Any]:
    """Kitchen kwargs that a reward mode implies (an env's own ``kwargs`` override them).

    With ``accumulated`` every step pays the subtasks at their goal, so an episode that ended when
    all four are done would forfeit up to 4 per remaining step: the reward would pay the agent not
    to succeed. That mode does not terminate on completion (``terminate_on_tasks_completed=False``):
    the episode runs to its time limit, as in the benchmark datasets the accumulated reward comes from.
    """
    return {"terminate_on_tasks_completed": False} if reward == "accumulated" else {}


def make_env(name: str, seed: int, **overrides: Any) -> gym.Env:
    """Build study environment ``name``, seeded with ``seed``.

    Options: ``reward`` (a reward mode of the env's suite), ``reward_delay`` (pay the reward every
    K steps; 1 or absent: no delay), ``max_episode_steps`` and ``kwargs`` (passed to the
    implementation). The seed fixes Meta-World's task variations and seeds the env's first reset
    and its action space.
    """
    key = (name, _options_key(overrides))
    delay = overrides.pop("reward_delay", 1)
    spec = resolve_spec(name, **overrides)
    if spec.suite == "metaworld":
        import metaworld  # noqa: F401  (registers Meta-World/MT1)

        env = gym.make(
            "Meta-World/MT1",
            env_name=spec.id,
            seed=seed,
            max_episode_steps=spec.max_episode_steps,
            disable_env_checker=True,
            **spec.kwargs,
        )
        env = MetaWorldTask(env, seed)
    elif spec.suite == "kitchen":
        from replication.imports import import_robotics_quietly

        gymnasium_robotics = import_robotics_quietly()  # without its notice about the Adroit environments
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gym.register_envs(gymnasium_robotics)
        kwargs = {**kitchen_defaults(spec.reward), **spec.kwargs}
        env = gym.make(spec.id, max_episode_steps=spec.max_episode_steps, disable_env_checker=True, **kwargs)
        env = KitchenReward(env, spec.reward)
    else:
        env = gym.make(spec.id, max_episode_steps=spec.max_episode_steps, disable_env_checker=True, **spec.kwargs)
    env = Float32Observation(env)
    if delay != 1:
        env = RewardDelay(env, delay)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    _SPACES.setdefault(key, (copy.deepcopy(env.observation_space), copy.deepcopy(env.action_space)))
    return env


def _options_key(options: dict[str, Any]) -> str:
    return yaml.safe_dump(options, sort_keys=True)


_SPACES: dict[tuple[str, str], tuple[gym.Space, gym.Space]] = {}  # copies, filled by make_env


def env_spaces(name: str, **options: Any) -> tuple[gym.Space, gym.Space]:
    """(observation space, action space) of ``make_env(name, ..., **options)``, built once per process.

    Building an env only to read its spaces is not free (a Meta-World MT1 env resets 50 task
    variations on construction: about 1 s), so the spaces of every env this process has built are
    kept: a job that builds its env first reads them for free. They are shared copies: read them,
    do not seed them.
    """
    key = (name, _options_key(options))
    if key not in _SPACES:
        make_env(name, 0, **options).close()
    return _SPACES[key]


_SHARED: dict[tuple[str, int, str], gym.Env] = {}


def shared_env(name: str, seed: int, **options: Any) -> gym.Env:
    """One ``make_env(name, seed, **options)`` instance per process, for evaluation and validation.

    Only for users that reset every episode with its own seed (:class:`replication.agents.evaluation.Evaluator`),
    so that what the instance did before cannot change their results; never close it.
    """
    key = (name, seed, _options_key(options))
    if key not in _SHARED:
        _SHARED[key] = make_env(name, seed, **options)
    return _SHARED[key]
