"""Settings resolved once: what a job's learner and fine-tuning method run with, as small frozen objects.

A job reads its config at its entry point (the offline job, the fine-tuning job) and builds these
objects there, once; it passes them down, and the agents read no config dict:

* :class:`LearnerSettings`: one offline learner (``offline.<algo>`` with the environment's
  overrides) on one environment, with what its buffers need of the environment (its env options,
  episode length, the failure reward of a sparse binary reward);
* one :class:`MethodSettings` subclass per fine-tuning method (:class:`IQLSettings`,
  :class:`CalQLSettings`, :class:`PEXSettings`, :class:`WSRLSettings`): its own ``finetune`` keys,
  registered by name with :func:`method_settings` (:data:`METHOD_SETTINGS`);
* :class:`FinetuneSettings`: one fine-tuning job's method settings, the settings of the offline
  learner it starts from, and the keys every method shares.

The classes live in the plan layer, not in the method modules of :mod:`replication.agents.finetune`:
the config checks (:mod:`replication.plan.schema`) run them while the workflow builds its DAG, where
nothing of the agents (torch, d3rlpy) may be imported. So the one check of a constraint that spans
config and job, a warm-up that leaves no update in the fine-tuning budget (:func:`check_warmup`),
is defined here and called both by the config check and at the fine-tuning job's start.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from replication.envspecs import resolve_spec
from replication.plan import config
from replication.plan.ledger import BudgetError, Ledger
from replication.plan.schema import (
    ConfigError,
    earlier_or_smaller,
    episode_steps,
    validation_checkpoints,
    validation_costs,
)
from replication.plan.variants import finetune_entries
from replication.plan.vocabulary import (
    OFFLINE_ALGOS,
    WSRL_SOURCES,
    finetune_pause_step,
    finetune_source,
    newdata_pause_step,
    online_pauses,
)

SPARSE_FAILURE_REWARD = {("kitchen", "binary"): 0.0}  # (suite, reward mode) -> raw reward of a failed step
WSRL_ACTOR_UPDATES = ("once", "every")  # per env step: once on the union of its minibatches, or per minibatch


def sparse_failure_reward(cfg: dict[str, Any], env: str) -> float | None:
    """Raw reward of a failed step where ``env`` (with its options) has a sparse binary reward."""
    options = {k: v for k, v in config.env_options(cfg, env).items() if k in ("reward", "max_episode_steps")}
    spec = resolve_spec(env, **options)
    return SPARSE_FAILURE_REWARD.get((spec.suite, spec.reward))


def mixing_rule(value: Any, key: str = "finetune.calql_mixing") -> str | float:
    """``'proportional'`` or an offline fraction in (0, 1); anything else is an error naming ``key``."""
    if value == "proportional":
        return "proportional"
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"config key {key}: {value!r} is neither 'proportional' nor a number in (0, 1)")
    return fraction


# ---- online SAC ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OnlineSettings:
    """Online SAC on environment ``env``: its SB3 arguments and its run's schedule, resolved from the config."""

    env: str
    sac: dict[str, Any]  # online.<key> with the env's overrides: learning rate, batch, net_arch, ... (read only)
    env_options: dict[str, Any]  # make_env's options of the env
    total_steps: int  # budget.total_steps: the run's length and the replay buffer's capacity
    pauses: tuple[int, ...]  # every pause the run keeps state at (recommendation, fine-tuning, newdata)
    eval_interval: int  # evaluation.interval
    validation_episodes: int  # validation.episodes per candidate snapshot
    validation_candidates: int  # snapshots online validation can pay for at a pause
    validation_charge: int  # env steps online validation charges at a pause

    @property
    def snapshot_interval(self) -> int:
        return int(self.sac["snapshot_interval"])

    @property
    def checkpoint_interval(self) -> int:
        return int(self.sac["checkpoint_interval"])


def online_settings(cfg: dict[str, Any], env: str) -> OnlineSettings:
    """The settings of online SAC on ``env``."""
    total, v = cfg["budget"]["total_steps"], cfg["validation"]
    episodes, steps = v["episodes"], episode_steps(cfg, env)
    return OnlineSettings(
        env=env,
        sac=copy.deepcopy(config.online_params(cfg, env)),
        env_options=config.env_options(cfg, env),
        total_steps=total,
        pauses=tuple(online_pauses(cfg)),
        eval_interval=cfg["evaluation"]["interval"],
        validation_episodes=episodes,
        validation_candidates=validation_checkpoints(v["online_fraction"], total, episodes, steps),
        validation_charge=validation_costs(cfg, env)[0],
    )


# ---- learners -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LearnerSettings:
    """One offline learner ``algo`` on environment ``env``, resolved from the config."""

    algo: str
    env: str
    params: dict[str, Any]  # offline.<algo> with the env's overrides (read, never changed)
    env_options: dict[str, Any]  # make_env's options of the env (its action space, reward mode)
    compile_graph: bool  # offline.compile_graph
    episode_steps: int  # the env's episode length (its buffers' cache size)
    failure_reward: float | None  # a failed step's raw reward where the reward is sparse binary; None: dense

    @property
    def gamma(self) -> float:
        return float(self.params["gamma"])

    @property
    def reward_scale(self) -> float:
        return float(self.params.get("reward_scale", 1.0))

    @property
    def reward_bias(self) -> float:
        return float(self.params.get("reward_bias", 0.0))


def learner_settings(cfg: dict[str, Any], env: str, algo: str) -> LearnerSettings:
    """The settings of offline learner ``algo`` on ``env``; an unknown algorithm is an error listing the valid ones."""
    if algo not in OFFLINE_ALGOS:
        raise ValueError(f"unknown offline algorithm {algo!r}; valid: {', '.join(OFFLINE_ALGOS)}")
    return LearnerSettings(
        algo=algo,
        env=env,
        params=copy.deepcopy(config.offline_params(cfg, env, algo)),
        env_options=config.env_options(cfg, env),
        compile_graph=bool(cfg["offline"]["compile_graph"]),
        episode_steps=episode_steps(cfg, env),
        failure_reward=sparse_failure_reward(cfg, env),
    )


# ---- fine-tuning methods --------------------------------------------------------------------------


class MethodSettings:
    """A fine-tuning method's own settings (its ``finetune`` keys); each method subclasses it once.

    ``warmup``: fine-tuning env steps collected before the method's first update, set by config key
    ``warmup_key`` (``None``: the method updates from its first step).
    """

    method: ClassVar[str] = ""
    warmup_key: ClassVar[str | None] = None

    @property
    def warmup(self) -> int:
        return 0

    def updates(self, env_steps: int, updates_per_step: int) -> int:
        """Gradient updates of ``env_steps`` fine-tuning env steps at the job's ``updates_per_step``
        (the cost estimate's count)."""
        return env_steps * updates_per_step

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> MethodSettings:
        raise NotImplementedError


S = TypeVar("S", bound=type[MethodSettings])
M = TypeVar("M", bound=MethodSettings)
METHOD_SETTINGS: dict[str, type[MethodSettings]] = {}  # method name -> its settings class


def method_settings(name: str) -> Callable[[S], S]:
    """Register a settings class as method ``name``'s (a class decorator)."""

    def register(cls: S) -> S:
        if name in METHOD_SETTINGS:
            raise ValueError(f"settings of fine-tuning method {name!r} are registered twice")
        cls.method = name
        METHOD_SETTINGS[name] = cls
        return cls

    return register


def settings_of(cfg: dict[str, Any], method: str) -> MethodSettings:
    """Method ``method``'s settings under ``cfg``; an unknown method is an error listing the valid ones."""
    if method not in METHOD_SETTINGS:
        raise ValueError(f"unknown fine-tuning method {method!r}; valid: {', '.join(METHOD_SETTINGS)}")
    return METHOD_SETTINGS[method].from_config(cfg)


@method_settings("iql")
@dataclasses.dataclass(frozen=True)
class IQLSettings(MethodSettings):
    """IQL fine-tuning: the offline learner continues on one buffer; no settings of its own."""

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> IQLSettings:
        return cls()


@method_settings("calql")
@dataclasses.dataclass(frozen=True)
class CalQLSettings(MethodSettings):
    """Cal-QL fine-tuning: how its batches mix the offline dataset and the online buffer."""

    mixing: str | float  # finetune.calql_mixing: 'proportional' or the offline fraction of every batch

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> CalQLSettings:
        return cls(mixing_rule(cfg["finetune"]["calql_mixing"]))


@method_settings("pex")
@dataclasses.dataclass(frozen=True)
class PEXSettings(MethodSettings):
    """PEX: its choice temperature, batch mix, initial collection and evaluation epsilon."""

    warmup_key: ClassVar[str | None] = "finetune.pex_initial_collection_steps"

    beta: float  # finetune.pex_beta: the choice's softmax(beta x Q)
    offline_fraction: float  # finetune.pex_offline_fraction: of every batch
    initial_collection_steps: int  # finetune.pex_initial_collection_steps: env steps before the first update
    eval_epsilon: float  # finetune.pex_eval_epsilon

    @property
    def warmup(self) -> int:
        return self.initial_collection_steps

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> PEXSettings:
        ft = cfg["finetune"]
        return cls(
            beta=float(ft["pex_beta"]),
            offline_fraction=float(mixing_rule(ft["pex_offline_fraction"], "finetune.pex_offline_fraction")),
            initial_collection_steps=int(ft["pex_initial_collection_steps"]),
            eval_epsilon=float(ft["pex_eval_epsilon"]),
        )


@method_settings("wsrl")
@dataclasses.dataclass(frozen=True)
class WSRLSettings(MethodSettings):
    """WSRL: the ``finetune.wsrl`` section (see :mod:`replication.agents.finetune.wsrl`)."""

    warmup_key: ClassVar[str | None] = "finetune.wsrl.warmup_steps"

    source: str  # the offline agent it starts from: calql or cql
    warmup_steps: int  # env steps collected with the offline policy before the first update
    updates_per_step: int  # critic updates (minibatches) per env step after the warm-up
    actor_updates: str  # once (on the union of an env step's minibatches) or every (per minibatch)
    batch_size: int | None  # a critic minibatch's size; None: the source's
    target_entropy: float | None  # None: d3rlpy's -action_size
    backup_entropy: bool
    keep_offline_data: bool

    @property
    def warmup(self) -> int:
        return self.warmup_steps

    def updates(self, env_steps: int, updates_per_step: int) -> int:
        """Critic updates: its own number per env step, none in the warm-up."""
        return max(env_steps - self.warmup_steps, 0) * self.updates_per_step

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> WSRLSettings:
        w = cfg["finetune"]["wsrl"]
        source = finetune_source(cfg, "wsrl")
        if source not in WSRL_SOURCES:
            raise ConfigError(
                f"config key finetune.wsrl.source: {source!r}; WSRL starts from one of {', '.join(WSRL_SOURCES)}"
            )
        if w["actor_updates"] not in WSRL_ACTOR_UPDATES:
            valid = ", ".join(WSRL_ACTOR_UPDATES)
            raise ConfigError(f"config key finetune.wsrl.actor_updates: {w['actor_updates']!r}; one of {valid}")
        return cls(
            source=source,
            warmup_steps=int(w["warmup_steps"]),
            updates_per_step=int(w["updates_per_step"]),
            actor_updates=str(w["actor_updates"]),
            batch_size=None if w["batch_size"] is None else int(w["batch_size"]),
            target_entropy=w["target_entropy"],  # as written: finetune.json records it so
            backup_entropy=bool(w["backup_entropy"]),
            keep_offline_data=bool(w["keep_offline_data"]),
        )


def check_warmup(settings: MethodSettings, env: str, budget: int) -> None:
    """A method's warm-up must leave at least one update in its fine-tuning budget of ``budget`` env
    steps in ``env``: else a :class:`ConfigError` naming the key and the value that fixes it.

    The one check of this constraint: the config check runs it with each environment's budget, a
    fine-tuning job again at its start with its ledger's.
    """
    if settings.warmup_key is not None and settings.warmup >= budget:
        key = settings.warmup_key
        raise ConfigError(
            f"config key {key}: {settings.warmup} env steps without updates leave {settings.method} no update in "
            f"the fine-tuning budget of {env} ({budget} env steps); lower {key} to {budget - 1} or less"
        )


def least_finetuning(cfg: dict[str, Any]) -> int:
    """The fewest fine-tuning env steps the configured methods need: one update after the longest warm-up."""
    return 1 + max((settings_of(cfg, m).warmup for m in cfg["finetune"]["methods"]), default=0)


class FinetuneBudgetError(ConfigError, BudgetError):
    """What fine-tuning starts from leaves it no budget: a config error and a budget error alike."""


def finetune_budget(cfg: dict[str, Any], env: str) -> int:
    """The fine-tuning budget of ``env``: ``budget.total_steps`` minus what its ledger charges before
    fine-tuning (:func:`replication.plan.variants.finetune_entries`); where nothing is left, a
    :class:`FinetuneBudgetError` naming the charges and the pause (or newdata size) that fixes it.

    The one check of this constraint: the config check runs it for every environment, a fine-tuning
    job again at its start (:func:`check_finetune_start`).
    """
    total = cfg["budget"]["total_steps"]
    before = Ledger(total, finetune_entries(cfg, env))  # not charged one by one: an overdraw is this error too
    if before.spent < total:
        return total - before.spent
    if cfg["finetune"]["dataset"] == "newdata":
        key, pause, newdata = "newdata.pause", newdata_pause_step(cfg), True
    else:
        key, pause, newdata = "budget.finetune_pause", finetune_pause_step(cfg), False
    fixes = earlier_or_smaller(cfg, key, pause, before.spent - total + least_finetuning(cfg), newdata=newdata)
    raise FinetuneBudgetError(
        f"config key {key}: in {env}, fine-tuning starts after {before.spent} of budget.total_steps={total} env "
        f"steps ({before.describe()}), leaving no fine-tuning budget; {fixes}"
    )


def check_finetune_start(cfg: dict[str, Any], env: str, own: MethodSettings) -> int:
    """What a fine-tuning job in ``env`` checks before it loads anything, and the config check for every
    configured method (``own``: the method's settings): a budget left (:func:`finetune_budget`, returned)
    and an update in it after the method's warm-up (:func:`check_warmup`)."""
    budget = finetune_budget(cfg, env)
    check_warmup(own, env, budget)
    return budget


# ---- one fine-tuning job --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """One fine-tuning job's settings: its method's own, its source learner's, and the shared keys."""

    method: str
    env: str
    own: MethodSettings  # the method's settings (METHOD_SETTINGS)
    source: LearnerSettings  # the offline learner it starts from
    updates_per_step: int  # finetune.updates_per_step: unless the method sets its own
    validation: bool  # finetune.validation: start from the validated offline checkpoint
    checkpoint_interval: int  # finetune.checkpoint_interval

    @property
    def cache_size(self) -> int:
        """The replay buffers' cache: one episode and its final observation."""
        return self.source.episode_steps + 1

    def own_as(self, cls: type[M]) -> M:
        """The method's settings, checked to be a ``cls`` (a method's builder asks for its own class)."""
        if not isinstance(self.own, cls):
            raise TypeError(f"{self.method} fine-tuning has {type(self.own).__name__}, not {cls.__name__}")
        return self.own


def finetune_settings(cfg: dict[str, Any], env: str, method: str) -> FinetuneSettings:
    """Everything fine-tuning ``method`` reads of ``cfg`` in ``env``, resolved once."""
    own = settings_of(cfg, method)
    ft = cfg["finetune"]
    return FinetuneSettings(
        method=method,
        env=env,
        own=own,
        source=learner_settings(cfg, env, finetune_source(cfg, method)),
        updates_per_step=int(ft["updates_per_step"]),
        validation=bool(ft["validation"]),
        checkpoint_interval=int(ft["checkpoint_interval"]),
    )
