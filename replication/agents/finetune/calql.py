"""Cal-QL fine-tuning: the offline Cal-QL learner continues; batches mix the offline dataset and an
online buffer (:class:`~replication.agents.finetune.base.MixedSampler`) by ``finetune.calql_mixing``.
Its online buffer writes an episode's transitions when the episode ends, so that every online
return-to-go is that of a finished episode (see :mod:`replication.agents.finetune`).
"""

from __future__ import annotations

import numpy as np

from replication.agents import learners
from replication.agents.finetune.base import Method, MixedAgent, check_learner, register
from replication.agents.learners import EpisodeReturnsPicker, empty_buffer
from replication.plan.settings import CalQLSettings, FinetuneSettings, LearnerSettings


def calql_online_picker(source: LearnerSettings, learner):
    """The transition picker of Cal-QL's online buffer (see the module docstring); ``source``: the
    offline Cal-QL learner's settings."""
    if learner.config.reward_scaler is not None:
        return learners.transition_picker(source)
    failure = source.failure_reward
    rule = None if failure is None else (failure, learners.failure_return(source.params, failure))
    return EpisodeReturnsPicker(float(learner.config.gamma), rule)


class CalQLAgent(MixedAgent):
    method = "calql"


def build(settings: FinetuneSettings, learner, transitions, rng: np.random.Generator, device: str) -> CalQLAgent:
    """The Cal-QL agent around the loaded offline Cal-QL ``learner``: the dataset and an online buffer."""
    import d3rlpy

    check_learner("calql", learner, d3rlpy.algos.CalQL)
    offline_buffer = learners.offline_buffer(settings.source, transitions)
    picker = calql_online_picker(settings.source, learner)
    online_buffer = empty_buffer(offline_buffer, settings.cache_size, picker, write_at_termination=True)
    return CalQLAgent(learner, offline_buffer, online_buffer, settings.own_as(CalQLSettings).mixing, rng)


register(Method("calql", build))
