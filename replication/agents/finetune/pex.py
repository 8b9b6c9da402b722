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

Acting and learning, as PEX's reference implementation (``pex/algorithms/pex.py``, ``main_online.py``):

* **Proposals.** The frozen offline policy proposes its *mean* (deterministic) action; the online
  policy proposes a *sample* (d3rlpy's ``sample_action``, clamped to [-1, 1]: the action space
  of the networks; PEX's Gaussian sample is not clamped, its env clips it) while training.
* **Choice.** Drawn from ``softmax(beta * Q)`` while training (PEX's ``Categorical(logits)``).
* **Evaluation.** Epsilon-greedy on both, ``finetune.pex_eval_epsilon`` (PEX's 0.1): the online
  proposal is a sample with probability epsilon, else its mean; the choice is drawn from the
  softmax with probability epsilon, else the argmax of ``Q``. Its draws come from a generator of
  their own, so evaluating never moves the training streams.
* **Actor update** (:func:`pex_update`). The online actor is trained by advantage-weighted
  regression on the *policy set's* actions, not on the batch's: for the batch's states the set
  proposes and chooses as while training (:func:`composite_actions`, with the critic just
  updated), each action is weighted by ``exp(weight_temp * (min target Q(s, a) - V(s)))``
  clamped at ``max_weight`` (PEX's ``EXP_ADV_MAX`` = 100, d3rlpy's default), and the loss is
  ``-mean(weight * log pi_new(a | s))``. Critic and value function take IQL's losses (d3rlpy's
  own update); the target critic moves before the actor update, as in PEX's ``IQL.update``.

Index 0 is the offline policy, index 1 the online policy. The offline learner is never updated;
:func:`parameters_digest` lets a run check it stayed frozen.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np
import torch

from replication.agents import learners
from replication.agents.finetune.base import Method, MixedAgent, check_learner, register
from replication.agents.learners import compare_modules, empty_buffer, torch_batch
from replication.plan.settings import FinetuneSettings, PEXSettings

OFFLINE, ONLINE = 0, 1


def choice_probabilities(q_values: np.ndarray, beta: float) -> np.ndarray:
    """``softmax(beta * q_values)``, computed stably (float64)."""
    logits = beta * np.asarray(q_values, dtype=np.float64)
    logits -= logits.max()
    weights = np.exp(logits)
    return weights / weights.sum()


def check_transfer(offline, online) -> dict[str, Any]:
    """Verify that ``online`` holds the offline critic, target critic and value function, but a new actor.

    Returns, per module, the number of parameter tensors compared and whether they are all equal;
    raises ``RuntimeError`` naming the first parameter that breaks the rule (or is shared, not copied).
    """
    names = ("q_funcs", "targ_q_funcs", "value_func", "policy")
    report, differing = compare_modules(offline, online, names, "PEX")
    for name in names[:-1]:
        if differing[name]:
            first = differing[name][0]
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


def composite_actions(offline_policy: torch.nn.Module, impl, observations: torch.Tensor, beta: float) -> torch.Tensor:
    """The policy set's training actions for a batch of (scaled) states: PEX's ``select_action``.

    Per state: the offline policy's mean ``a1``, a sample ``a2`` of the online policy, and the
    choice drawn from ``Categorical(logits=beta * [min Q(s, a1), min Q(s, a2)])`` of the online
    critic. Draws from torch's global RNG (the stream d3rlpy samples actions from).
    """
    from d3rlpy.models.torch import build_gaussian_distribution

    with torch.no_grad():
        a1 = offline_policy(observations).squashed_mu
        a2 = build_gaussian_distribution(impl.modules.policy(observations)).sample()
        q = torch.cat([impl._q_func_forwarder.compute_expected_q(observations, a, "min") for a in (a1, a2)], dim=1)
        chosen = torch.distributions.Categorical(logits=beta * q).sample()
        return torch.where(chosen[:, None] == ONLINE, a2, a1)


def actor_update(impl, offline_policy: torch.nn.Module, observations: torch.Tensor, beta: float) -> float:
    """One PEX actor step: AWR of the online policy on :func:`composite_actions`; returns the loss."""
    from d3rlpy.models.torch import build_gaussian_distribution

    actions = composite_actions(offline_policy, impl, observations, beta)
    modules = impl.modules
    with torch.no_grad():
        q_target = impl._targ_q_func_forwarder.compute_expected_q(observations, actions, "min")
        weight = (impl._weight_temp * (q_target - modules.value_func(observations))).exp().clamp(max=impl._max_weight)
    modules.actor_optim.zero_grad()
    log_probs = build_gaussian_distribution(modules.policy(observations)).log_prob(actions)
    loss = -(weight * log_probs).mean()
    loss.backward()
    modules.actor_optim.step()
    return float(loss.detach())


def pex_update(learner, offline_policy: torch.nn.Module, batch, beta: float) -> dict[str, float]:
    """One PEX gradient step of the online d3rlpy ``IQL`` ``learner`` on a ``TransitionMiniBatch``.

    IQL's critic and value step (d3rlpy's ``update_critic``), the target critic's soft update, then
    :func:`actor_update` (PEX's order); the learner's gradient-step counter advances as in
    ``learner.update``. The batch is converted exactly as d3rlpy's ``update`` converts it.
    """
    impl = learner.impl
    minibatch = torch_batch(learner, batch)
    impl.modules.set_train()
    metrics = impl.update_critic(minibatch)
    impl.update_critic_target()
    metrics["actor_loss"] = actor_update(impl, offline_policy, minibatch.observations, beta)
    learner.set_grad_step(learner.grad_step + 1)
    return metrics


class PolicyExpansion:
    """The PEX policy set over a frozen offline learner and the online learner (see module docstring).

    ``rng`` draws the training choices; ``eval_rng`` every draw of evaluation (epsilon
    ``eval_epsilon``), so that evaluating does not change training.
    """

    def __init__(
        self,
        offline,
        online,
        beta: float,
        rng: np.random.Generator,
        device: str = "cpu",
        eval_epsilon: float = 0.0,
        eval_rng: np.random.Generator | None = None,
    ):
        if not 0.0 <= eval_epsilon <= 1.0:
            raise ValueError(f"PEX: the evaluation epsilon must be in [0, 1], got {eval_epsilon!r}")
        self.offline = offline
        self.online = online
        self.beta = float(beta)
        self.rng = rng
        self.eval_epsilon = float(eval_epsilon)
        self.eval_rng = eval_rng if eval_rng is not None else np.random.default_rng(0)
        self.device = device
        self.scaler = online.config.action_scaler
        self.observation_scaler = online.config.observation_scaler
        self.counts = np.zeros(2, dtype=np.int64)  # exploration choices: offline, online

    def _observation(self, obs: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32)[None], device=self.device)
        return self.observation_scaler.transform(x) if self.observation_scaler else x

    @torch.no_grad()
    def proposals(self, obs: np.ndarray, sample: bool = True) -> torch.Tensor:
        """The two proposals ``(2, action_size)`` in the networks' [-1, 1] space: offline, online.

        The offline proposal is always its policy's mean; the online one a sample (``sample``) or its mean.
        """
        x = self._observation(obs)
        online = self.online.impl.sample_action(x) if sample else self.online.impl.predict_best_action(x)
        return torch.cat([self.offline.impl.predict_best_action(x), online], dim=0)

    @torch.no_grad()
    def q_values(self, obs: np.ndarray, proposals: torch.Tensor) -> np.ndarray:
        """The online critic's ``min(Q1, Q2)`` of each proposal, shape ``(2,)``."""
        x = self._observation(obs).expand(len(proposals), -1)
        self.online.impl.modules.set_eval()
        q = self.online.impl._q_func_forwarder.compute_expected_q(x, proposals, "min")
        return q.reshape(-1).cpu().numpy().astype(np.float64)

    def probabilities(self, obs: np.ndarray, proposals: torch.Tensor) -> np.ndarray:
        return choice_probabilities(self.q_values(obs, proposals), self.beta)

    def select(self, obs: np.ndarray, proposals: torch.Tensor, rng: np.random.Generator | None = None) -> int:
        """Draw the acting policy's index from ``softmax(beta * Q)`` (with ``rng``, default the training one)."""
        p = self.probabilities(obs, proposals)
        return int((rng or self.rng).random() >= p[OFFLINE])  # offline with probability p[0]

    def _to_env(self, action: torch.Tensor) -> np.ndarray:
        action = action[None]
        if self.scaler:
            action = self.scaler.reverse_transform(action)
        return action[0].cpu().numpy()

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Exploration: sampled online proposal, sampled choice; the action in the env's range."""
        proposals = self.proposals(obs, sample=True)
        index = self.select(obs, proposals)
        self.counts[index] += 1
        return self._to_env(proposals[index])

    @torch.no_grad()
    def _eval_sample(self, obs: np.ndarray) -> torch.Tensor:
        """A sample of the online policy drawn with ``eval_rng`` (clamped to [-1, 1], as d3rlpy's)."""
        self.online.impl.modules.set_eval()
        out = self.online.impl.modules.policy(self._observation(obs))
        noise = torch.as_tensor(self.eval_rng.standard_normal(out.squashed_mu.shape), dtype=out.squashed_mu.dtype)
        return (out.squashed_mu + out.logstd.exp() * noise.to(out.squashed_mu.device)).clamp(-1.0, 1.0)

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Evaluation: epsilon-greedy on the online proposal and on the choice (mode / argmax otherwise)."""
        proposals = self.proposals(obs, sample=False)
        if self.eval_epsilon > 0 and self.eval_rng.random() < self.eval_epsilon:
            proposals[ONLINE] = self._eval_sample(obs)[0]
        if self.eval_epsilon > 0 and self.eval_rng.random() < self.eval_epsilon:
            index = self.select(obs, proposals, self.eval_rng)
        else:
            index = int(np.argmax(self.q_values(obs, proposals)))
        return self._to_env(proposals[index])


# ---- the fine-tuning agent


class PEXAgent(MixedAgent):
    """PEX: the online learner of :func:`expand_policy` acting through the policy set."""

    method = "pex"

    def __init__(self, offline_learner, offline_buffer, online_buffer, settings: PEXSettings, rng, device):
        online = expand_policy(offline_learner, device)
        super().__init__(online, offline_buffer, online_buffer, settings.offline_fraction, rng)
        self.transfer = check_transfer(offline_learner, online)
        self.update_start = settings.initial_collection_steps
        eval_rng = rng.spawn(1)[0]  # evaluation's draws: a stream of their own
        self.pex = PolicyExpansion(offline_learner, online, settings.beta, rng, device, settings.eval_epsilon, eval_rng)
        self._digest = parameters_digest
        self.offline_digest = parameters_digest(offline_learner.impl.modules.policy)

    def explore(self, obs):
        return self.pex.act(obs)

    def update(self, batch) -> None:
        pex_update(self.learner, self.pex.offline.impl.modules.policy, batch, self.pex.beta)

    def greedy(self, obs):
        return self.pex.greedy(obs)

    def offline_policy_frozen(self) -> bool:
        return self._digest(self.pex.offline.impl.modules.policy) == self.offline_digest

    def stats(self) -> dict[str, Any]:
        counts = self.pex.counts
        return {
            **super().stats(),
            "pex": {
                "beta": self.pex.beta,
                "initial_collection_steps": self.update_start,
                "eval_epsilon": self.pex.eval_epsilon,
                "offline_policy_chosen": int(counts[0]),
                "online_policy_chosen": int(counts[1]),
                "offline_policy_fraction": float(counts[0] / counts.sum()) if counts.sum() else None,
                "transfer": self.transfer,
                "offline_policy_frozen": self.offline_policy_frozen(),
            },
        }


def build(settings: FinetuneSettings, learner, transitions, rng: np.random.Generator, device: str) -> PEXAgent:
    """The PEX agent around the loaded offline IQL ``learner``: the dataset and an online buffer."""
    import d3rlpy

    check_learner("pex", learner, d3rlpy.algos.IQL)
    offline_buffer = learners.replay_buffer(transitions)
    online_buffer = empty_buffer(offline_buffer, settings.cache_size)
    return PEXAgent(learner, offline_buffer, online_buffer, settings.own_as(PEXSettings), rng, device)


register(Method("pex", build))
