"""Policy Expansion (PEX, Zhang et al. 2023) on d3rlpy's IQL.

The policy set is {frozen offline IQL policy, new online IQL policy}. At every env step both
policies propose an action; the one that acts is drawn from ``softmax(beta * Q(s, a_i))`` over the
two proposals, with ``Q`` the *online* learner's critic (the minimum of its twin Q-functions).

The online learner is a d3rlpy ``IQL`` with the offline learner's config (same networks, learning
rates, expectile and temperature) whose

* actor is new: freshly initialised (d3rlpy's default initialisation), with a fresh optimiser;
* critic (both Q-functions), target critic and value function are copies of the offline ones,
  and so is the critic optimiser's state (d3rlpy's IQL trains Q and V with one Adam): the critic
  keeps learning exactly as it would in IQL fine-tuning, and PEX differs from IQL fine-tuning only
  in its policy part. **(choice)**: PEX's paper says the critic starts from the offline one; it
  does not say what happens to the optimiser state.

:func:`check_transfer` compares the two learners parameter by parameter and raises if any of the
critic, target critic or value function differs, or if the actor was copied: a public
implementation of this very study copied only the target critic, so the transfer is verified on
every run (and in the tests), not assumed.

Acting, as PEX's own code: for exploration both proposals are *sampled* from their policies
(d3rlpy's ``sample_action``, clamped to [-1, 1]) and the choice is *sampled* from the softmax;
for evaluation both proposals are the policies' means and the choice is the argmax of ``Q``
(PEX's ``temperature=0``). Index 0 is the offline policy, index 1 the online policy. The offline
learner is never updated; :func:`parameters_digest` lets a run check it stayed frozen.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np
import torch

OFFLINE, ONLINE = 0, 1


def choice_probabilities(q_values: np.ndarray, beta: float) -> np.ndarray:
    """``softmax(beta * q_values)``, computed stably (float64)."""
    logits = beta * np.asarray(q_values, dtype=np.float64)
    logits -= logits.max()
    weights = np.exp(logits)
    return weights / weights.sum()


def _module_pairs(offline, online) -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    a, b = offline.impl.modules, online.impl.modules
    return {
        "q_funcs": (a.q_funcs, b.q_funcs),
        "targ_q_funcs": (a.targ_q_funcs, b.targ_q_funcs),
        "value_func": (a.value_func, b.value_func),
        "policy": (a.policy, b.policy),
    }


def check_transfer(offline, online) -> dict[str, Any]:
    """Verify that ``online`` holds the offline critic, target critic and value function, but a new actor.

    Returns, per module, the number of parameter tensors compared and whether they are all equal;
    raises ``RuntimeError`` naming the first parameter that breaks the rule.
    """
    report: dict[str, Any] = {}
    for name, (src, dst) in _module_pairs(offline, online).items():
        src_state, dst_state = src.state_dict(), dst.state_dict()
        if list(src_state) != list(dst_state):
            raise RuntimeError(f"PEX: the online {name} has other parameters than the offline one")
        equal = {k: bool(torch.equal(src_state[k], dst_state[k])) for k in src_state}
        report[name] = {"tensors": len(equal), "equal": all(equal.values())}
        if name != "policy" and not all(equal.values()):
            first = next(k for k, v in equal.items() if not v)
            raise RuntimeError(f"PEX: online {name}.{first} differs from the offline one: the transfer failed")
    if report["policy"]["equal"]:
        raise RuntimeError("PEX: the online actor equals the offline actor; it must be freshly initialised")
    return report


def parameters_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (to check that a policy stayed frozen)."""
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def expand_policy(offline, device: str | bool | None = None):
    """The online learner of PEX: ``offline``'s config and critic, a freshly initialised actor.

    ``offline`` is a built d3rlpy ``IQL`` (the validated offline agent); it is not modified.
    The new actor's initialisation draws from torch's global RNG (seed it first).
    """
    import d3rlpy

    if not isinstance(offline, d3rlpy.algos.IQL):
        raise TypeError(f"PEX builds on an offline IQL agent, got {type(offline).__name__}")
    impl = offline.impl
    if impl is None:
        raise ValueError("PEX: the offline learner is not built")
    online = offline.config.create(device=device if device is not None else False)
    online.create_impl(impl.observation_shape, impl.action_size)
    src, dst = offline.impl.modules, online.impl.modules
    with torch.no_grad():
        dst.q_funcs.load_state_dict(src.q_funcs.state_dict())
        dst.targ_q_funcs.load_state_dict(src.targ_q_funcs.state_dict())
        dst.value_func.load_state_dict(src.value_func.state_dict())
    # a deep copy: torch's load_state_dict may keep the very tensors, and Adam updates them in place
    dst.critic_optim.load_state_dict(copy.deepcopy(src.critic_optim.state_dict()))
    check_transfer(offline, online)
    return online


class PolicyExpansion:
    """The PEX policy set over a frozen offline learner and the online learner (see module docstring)."""

    def __init__(self, offline, online, beta: float, rng: np.random.Generator, device: str = "cpu"):
        self.offline = offline
        self.online = online
        self.beta = float(beta)
        self.rng = rng
        self.device = device
        self.scaler = online.config.action_scaler
        self.observation_scaler = online.config.observation_scaler
        self.counts = np.zeros(2, dtype=np.int64)  # exploration choices: offline, online

    def _observation(self, obs: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32)[None], device=self.device)
        return self.observation_scaler.transform(x) if self.observation_scaler else x

    @torch.no_grad()
    def proposals(self, obs: np.ndarray, sample: bool = True) -> torch.Tensor:
        """The two proposals ``(2, action_size)`` in the networks' [-1, 1] space: offline, online."""
        x = self._observation(obs)
        if sample:
            actions = [self.offline.impl.sample_action(x), self.online.impl.sample_action(x)]
        else:
            actions = [self.offline.impl.predict_best_action(x), self.online.impl.predict_best_action(x)]
        return torch.cat(actions, dim=0)

    @torch.no_grad()
    def q_values(self, obs: np.ndarray, proposals: torch.Tensor) -> np.ndarray:
        """The online critic's ``min(Q1, Q2)`` of each proposal, shape ``(2,)``."""
        x = self._observation(obs).expand(len(proposals), -1)
        self.online.impl.modules.set_eval()
        q = self.online.impl._q_func_forwarder.compute_expected_q(x, proposals, "min")
        return q.reshape(-1).cpu().numpy().astype(np.float64)

    def probabilities(self, obs: np.ndarray, proposals: torch.Tensor) -> np.ndarray:
        return choice_probabilities(self.q_values(obs, proposals), self.beta)

    def select(self, obs: np.ndarray, proposals: torch.Tensor) -> int:
        """Draw the acting policy's index from ``softmax(beta * Q)``."""
        p = self.probabilities(obs, proposals)
        return int(self.rng.random() >= p[OFFLINE])  # offline with probability p[0]

    def _to_env(self, action: torch.Tensor) -> np.ndarray:
        action = action[None]
        if self.scaler:
            action = self.scaler.reverse_transform(action)
        return action[0].cpu().numpy()

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Exploration: sampled proposals, sampled choice; the action in the env's range."""
        proposals = self.proposals(obs, sample=True)
        index = self.select(obs, proposals)
        self.counts[index] += 1
        return self._to_env(proposals[index])

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Evaluation: the proposals' means, the one of higher ``Q``."""
        proposals = self.proposals(obs, sample=False)
        index = int(np.argmax(self.q_values(obs, proposals)))
        return self._to_env(proposals[index])
