"""Deterministic policies as TorchScript files that load without this package.

A policy file maps a batch of float32 observations to actions in the env's own range. SB3 SAC
actors are exported here; d3rlpy exports its own through ``save_policy``. Both load with
:func:`load_policy` into a callable from one observation to one action.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from replication.io import atomic_path


class SACDeterministicActor(nn.Module):
    """The mean action of an SB3 SAC actor, squashed and rescaled to the env's action range."""

    def __init__(self, actor: nn.Module, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.latent_pi = actor.latent_pi
        self.mu = actor.mu
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        squashed = torch.tanh(self.mu(self.latent_pi(obs.flatten(1))))
        return self.low + 0.5 * (squashed + 1.0) * (self.high - self.low)


def export_sac_actor(model, path: Path | str) -> None:
    """Write the deterministic policy of SB3 SAC ``model`` as TorchScript (a frozen copy)."""
    import copy

    space = model.action_space
    module = SACDeterministicActor(copy.deepcopy(model.actor).cpu(), space.low, space.high).eval()
    scripted = torch.jit.script(module)
    with atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))


class TorchScriptPolicy:
    """A TorchScript policy file as a callable from one observation to one action."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.module = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.no_grad()
    def batch(self, observations: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32))
        return self.module(obs).numpy()

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        return self.batch(observation[None])[0]


def load_policy(path: Path | str) -> TorchScriptPolicy:
    if not Path(path).exists():
        raise FileNotFoundError(f"policy file {path} does not exist")
    return TorchScriptPolicy(path)


def sac_policy(model) -> Callable[[np.ndarray], np.ndarray]:
    """The live deterministic policy of SB3 SAC ``model`` (shares its weights), on the CPU."""
    space = model.action_space
    module = SACDeterministicActor(model.actor, space.low, space.high)
    device = next(model.actor.parameters()).device

    @torch.no_grad()
    def act(observation: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)[None], device=device)
        return module.to(device)(obs)[0].cpu().numpy()

    return act
