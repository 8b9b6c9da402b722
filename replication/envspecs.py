"""The study's twelve environments as declared in ``config/envs.yaml``: names, suites, reward modes
and metrics, without gymnasium (the plan validates configs with it; :mod:`replication.agents.envs`
builds the environments).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import yaml

from replication.io import PROJECT_ROOT

ENVS_FILE = Path(os.environ.get("REPLICATION_ENVS_FILE", PROJECT_ROOT / "config" / "envs.yaml"))

SUITES = ("locomotion", "kitchen", "metaworld")
METRICS = ("return", "subtasks", "success")
KITCHEN_REWARD_MODES = ("subtask", "binary", "accumulated")
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
