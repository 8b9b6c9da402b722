"""The study's twelve environments, by the names the study uses.

They are declared in ``config/envs.yaml``; :func:`make_env` builds one as a gymnasium env with a
flat float32 Box observation and actions in the env's own range, which SB3 and d3rlpy take as is.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml

from replication.agents.wrappers import (
    KITCHEN_REWARD_MODES,
    Float32Observation,
    KitchenReward,
    MetaWorldTask,
    RewardDelay,
)
from replication.io import PROJECT_ROOT

ENVS_FILE = Path(os.environ.get("REPLICATION_ENVS_FILE", PROJECT_ROOT / "config" / "envs.yaml"))

SUITES = ("locomotion", "kitchen", "metaworld")
METRICS = ("return", "subtasks", "success")
REWARD_MODES = {"locomotion": ("dense",), "metaworld": ("dense",), "kitchen": KITCHEN_REWARD_MODES}
OVERRIDES = ("reward", "reward_delay", "max_episode_steps", "kwargs")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """One study environment as declared in ``config/envs.yaml``."""

    name: str
    suite: str
    id: str
    reward: str
    metric: str
    max_episode_steps: int
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    substitute: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"{self.name}: unknown suite {self.suite!r}; valid suites: {', '.join(SUITES)}")
        if self.metric not in METRICS:
            raise ValueError(f"{self.name}: unknown metric {self.metric!r}; valid metrics: {', '.join(METRICS)}")
        modes = REWARD_MODES[self.suite]
        if self.reward not in modes:
            raise ValueError(
                f"{self.name}: unknown reward mode {self.reward!r} for suite {self.suite}; "
                f"valid modes: {', '.join(modes)}"
            )
        if not isinstance(self.max_episode_steps, int) or self.max_episode_steps < 1:
            raise ValueError(f"{self.name}: max_episode_steps must be a positive integer")

    @property
    def has_success(self) -> bool:
        """Whether episodes of this environment have a success flag (Meta-World, Kitchen)."""
        return self.suite in ("metaworld", "kitchen")


def load_specs(path: Path | str = ENVS_FILE) -> dict[str, EnvSpec]:
    """Read every environment declared in ``path``."""
    raw = yaml.safe_load(Path(path).read_text())
    fields = {f.name for f in dataclasses.fields(EnvSpec)} - {"name"}
    specs = {}
    for name, entry in raw.items():
        unknown = set(entry) - fields
        if unknown:
            raise ValueError(f"{path}: {name}: unknown keys {sorted(unknown)}; valid keys: {sorted(fields)}")
        specs[name] = EnvSpec(name=name, **entry)
    return specs


@functools.cache
def specs() -> dict[str, EnvSpec]:
    """The study's environments, keyed by study name."""
    return load_specs(ENVS_FILE)


def get_spec(name: str) -> EnvSpec:
    """The spec of one environment; an unknown name is an error that lists the valid ones."""
    table = specs()
    if name not in table:
        raise ValueError(f"unknown environment {name!r}; valid environments: {', '.join(table)}")
    return table[name]


def resolve_spec(name: str, **overrides: Any) -> EnvSpec:
    """The spec of ``name`` with overrides (reward mode, episode length, extra kwargs) applied."""
    spec = get_spec(name)
    unknown = set(overrides) - set(OVERRIDES)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for environment {name!r}; valid options: {', '.join(OVERRIDES)}"
        )
    changes: dict[str, Any] = {}
    if "reward" in overrides:
        changes["reward"] = overrides["reward"]
    if "max_episode_steps" in overrides:
        changes["max_episode_steps"] = overrides["max_episode_steps"]
    if overrides.get("kwargs"):
        changes["kwargs"] = {**spec.kwargs, **overrides["kwargs"]}
    return dataclasses.replace(spec, **changes) if changes else spec


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
