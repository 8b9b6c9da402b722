"""Cal-QL fine-tuning: the offline Cal-QL learner continues; batches mix the offline dataset and an
online buffer (:class:`~replication.agents.finetune.base.MixedSampler`) by ``finetune.calql_mixing``.
Its online buffer writes an episode's transitions when the episode ends, so that every online
return-to-go is that of a finished episode (see :mod:`replication.agents.finetune`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from replication.agents import learners
from replication.agents.finetune.base import Method, MixedAgent, check_learner, mixing_rule, register
from replication.agents.learners import EpisodeReturnsPicker, empty_buffer
from replication.plan import config
from replication.plan.schema import episode_steps


def calql_online_picker(cfg: dict[str, Any], env_name: str, learner):
    """The transition picker of Cal-QL's online buffer (see the module docstring)."""
    if learner.config.reward_scaler is not None:
        return learners.transition_picker(cfg, env_name, "calql")
    params = config.offline_params(cfg, env_name, "calql")
    failure = learners.sparse_failure_reward(cfg, env_name)
    rule = None if failure is None else (failure, learners.failure_return(params, failure))
    return EpisodeReturnsPicker(float(learner.config.gamma), rule)


class CalQLAgent(MixedAgent):
    method = "calql"


def build(
    cfg: dict[str, Any], env_name: str, learner, transitions, rng: np.random.Generator, device: str
) -> CalQLAgent:
    """The Cal-QL agent around the loaded offline Cal-QL ``learner``: the dataset and an online buffer."""
    import d3rlpy

    check_learner("calql", learner, d3rlpy.algos.CalQL)
    offline_buffer = learners.offline_buffer(cfg, env_name, "calql", transitions)
    picker = calql_online_picker(cfg, env_name, learner)
    online_buffer = empty_buffer(offline_buffer, episode_steps(cfg, env_name) + 1, picker, write_at_termination=True)
    return CalQLAgent(learner, offline_buffer, online_buffer, mixing_rule(cfg["finetune"]["calql_mixing"]), rng)


register(Method("calql", build))
