"""What every fine-tuning method builds on: the agent the budget loop drives
(:class:`Agent`), batches drawn from two buffers (:class:`MixedSampler`), and the registry of
methods. A method's module defines its agent and a builder and registers them with
:func:`register`; the loop (:mod:`replication.agents.finetune.loop`) finds it by name. A builder
takes the job's :class:`~replication.plan.settings.FinetuneSettings` (resolved once from the
config), never the config itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from replication.plan.settings import FinetuneSettings, mixing_rule


class MixedSampler:
    """Mini-batches drawn from an offline and an online d3rlpy replay buffer.

    ``rule``: ``'proportional'`` (each sample is offline with probability ``|D| / (|D| + n_online)``,
    i.e. uniform over the union of both buffers), or a fraction ``f`` in (0, 1): ``round(f * B)``
    offline samples in every batch of ``B``, the rest online, once the online buffer holds at least
    ``B - round(f * B)`` transitions (before that the whole batch is offline). Sampling within a
    buffer is d3rlpy's (uniform, with replacement); the counts come from ``rng``.
    """

    def __init__(self, offline, online, rule: str | float, rng: np.random.Generator):
        self.offline = offline
        self.online = online
        self.rule = mixing_rule(rule, "mixing rule")
        self.rng = rng
        self.drawn = np.zeros(2, dtype=np.int64)  # offline, online samples so far
        self.first_batch: dict[str, Any] | None = None  # the offline share of the first and last batches
        self.last_batch: dict[str, Any] | None = None

    def expected_offline_fraction(self, batch_size: int) -> float:
        """The offline share the rule gives the next batch (``proportional``: ``|D| / (|D| + n_online)``)."""
        n_offline, n_online = self.offline.transition_count, self.online.transition_count
        if self.rule == "proportional":
            return n_offline / (n_offline + n_online)
        k = int(round(self.rule * batch_size))
        return k / batch_size if n_online >= batch_size - k else 1.0

    def offline_count(self, batch_size: int) -> int:
        """How many of the next batch's ``batch_size`` samples come from the offline buffer."""
        n_offline, n_online = self.offline.transition_count, self.online.transition_count
        if n_online == 0:
            return batch_size
        if self.rule == "proportional":
            return int(self.rng.binomial(batch_size, n_offline / (n_offline + n_online)))
        k = int(round(self.rule * batch_size))
        return k if n_online >= batch_size - k else batch_size

    def sample(self, batch_size: int):
        from d3rlpy.dataset import TransitionMiniBatch

        expected = self.expected_offline_fraction(batch_size)
        k = self.offline_count(batch_size)
        transitions = [self.offline.sample_transition() for _ in range(k)]
        transitions += [self.online.sample_transition() for _ in range(batch_size - k)]
        self.drawn += (k, batch_size - k)
        self.last_batch = {
            "expected_offline_fraction": expected,
            "offline_fraction": k / batch_size,
            "online_transitions": int(self.online.transition_count),
        }
        if self.first_batch is None:
            self.first_batch = self.last_batch
        return TransitionMiniBatch.from_transitions(transitions)

    def stats(self) -> dict[str, Any]:
        total = int(self.drawn.sum())
        return {
            "rule": self.rule,
            "offline_samples": int(self.drawn[0]),
            "online_samples": int(self.drawn[1]),
            "offline_fraction": float(self.drawn[0] / total) if total else None,
            "offline_transitions": int(self.offline.transition_count),
            "online_transitions": int(self.online.transition_count),
            "first_batch": self.first_batch,
            "last_batch": self.last_batch,
        }


# ---- the agent the loop drives


class Agent:
    """What the fine-tuning loop needs of a method: acting, storing, batches, and the learner it trains."""

    method = ""
    learner: Any
    update_start = 0  # fine-tuning env steps collected before the first update
    updates_per_step: int | None = None  # gradient updates per env step; None: finetune.updates_per_step
    online_buffer: Any  # the replay buffer the online steps go to (IQL's holds the dataset too)
    sampler: MixedSampler | None = None  # batches mixing the dataset and the online buffer; None: the buffer's own

    def update(self, batch) -> None:
        self.learner.update(batch)

    def explore(self, obs: np.ndarray) -> np.ndarray:
        return self.learner.sample_action(obs[None])[0]

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return self.learner.predict(obs[None])[0]

    def store(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        self.online_buffer.append(obs, action, reward)

    def end_episode(self, terminated: bool) -> None:
        self.online_buffer.clip_episode(terminated)

    def batch(self):
        """One minibatch of the learner's batch size."""
        size = self.learner.config.batch_size
        if self.sampler is not None:
            return self.sampler.sample(size)
        return self.online_buffer.sample_transition_batch(size)

    def stats(self) -> dict[str, Any]:
        return {}


class MixedAgent(Agent):
    """A learner trained on batches mixing the offline dataset and its own online buffer."""

    def __init__(self, learner, offline_buffer, online_buffer, rule, rng: np.random.Generator):
        self.learner = learner
        self.offline_buffer = offline_buffer
        self.online_buffer = online_buffer
        self.sampler = MixedSampler(offline_buffer, online_buffer, rule, rng)
        self.initial_transitions = offline_buffer.transition_count

    def stats(self) -> dict[str, Any]:
        return {"mixing": self.sampler.stats()}


# ---- the registry of methods

# the job's settings (replication.plan.settings), the loaded offline learner, its dataset's transitions,
# the run's generator, device
AgentBuilder = Callable[[FinetuneSettings, Any, Any, np.random.Generator, str], Agent]


@dataclasses.dataclass(frozen=True)
class Method:
    """One fine-tuning method: how it builds its agent from the job's settings.

    Its settings class (:data:`replication.plan.settings.METHOD_SETTINGS`) carries its own keys and
    its warm-up, which the job checks against its budget before it loads anything.
    """

    name: str
    build: AgentBuilder


METHODS: dict[str, Method] = {}  # filled by the method modules as the package is imported


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a method module calls it once, at import)."""
    if method.name in METHODS:
        raise ValueError(f"fine-tuning method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    """The registered method ``name``; an unknown name is an error listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown fine-tuning method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def check_learner(method: str, learner: Any, expected: type) -> None:
    """A method starts from one kind of offline agent: else an error naming both."""
    if type(learner) is not expected:
        raise TypeError(f"{method} fine-tuning starts from a {expected.__name__} agent, got {type(learner).__name__}")
