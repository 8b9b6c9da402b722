"""IQL fine-tuning: the offline IQL learner continues (weights, optimisers, step counter); its
replay buffer starts as the offline dataset (size = the dataset's transitions) and online
transitions are appended to it; batches are uniform over it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from replication.agents import learners
from replication.agents.finetune.base import Agent, Method, check_learner, register
from replication.plan.settings import FinetuneSettings


class IQLAgent(Agent):
    """IQL fine-tuning: one replay buffer, the offline dataset first, online steps appended."""

    method = "iql"

    def __init__(self, learner, offline_buffer, cache_size: int):
        from d3rlpy.dataset import InfiniteBuffer, ReplayBuffer

        self.learner = learner
        info = offline_buffer.dataset_info
        self.online_buffer = ReplayBuffer(
            InfiniteBuffer(),
            episodes=offline_buffer.episodes,
            action_space=info.action_space,
            action_size=info.action_size,
            cache_size=cache_size,
        )
        self.initial_transitions = self.online_buffer.transition_count

    def stats(self) -> dict[str, Any]:
        final = self.online_buffer.transition_count
        return {
            "buffer": {
                "initial_transitions": int(self.initial_transitions),
                "final_transitions": int(final),
                "online_transitions": int(final - self.initial_transitions),
            }
        }


def build(settings: FinetuneSettings, learner, transitions, rng: np.random.Generator, device: str) -> IQLAgent:
    """The IQL agent around the loaded offline IQL ``learner`` and its dataset."""
    import d3rlpy

    check_learner("iql", learner, d3rlpy.algos.IQL)
    return IQLAgent(learner, learners.replay_buffer(transitions), settings.cache_size)


register(Method("iql", build))
