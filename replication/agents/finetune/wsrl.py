"""WSRL fine-tuning (Zhou et al., ICLR 2025, "Efficient Online RL Fine-Tuning Need Not Retain Offline Data").

WSRL starts online SAC from the offline agent's actor and critic, collects a short warm-up with the
offline policy, then trains on online data only, with no pessimism and several updates per env step.

Source. The offline CQL or Cal-QL agent of the cell (``finetune.wsrl.source``, default ``calql``
**(choice)**: the reference pre-trains Cal-QL for Kitchen and CQL for locomotion; one source for
every environment keeps the method one cell of the grid). Both are d3rlpy SAC-style learners
(squashed Gaussian actor, an ensemble of continuous Q-functions, a learned temperature), so their
networks fit a d3rlpy ``SAC`` as they are. IQL does not: its actor is a Gaussian with a state-
independent deviation trained by advantage-weighted regression, and its critic comes with a separate
value function; WSRL from IQL is refused.

Transfer (:func:`transfer`). A d3rlpy ``SAC`` is created with every one of its config fields taken
from the source's config (encoder factories, hidden sizes, Q-function factory, ``n_critics``,
``gamma``, ``tau``, learning rates, optimiser factories, observation / action / reward scalers,
initial temperature), except the batch size, and built for the source's observation shape and
action size. Copied tensor by tensor (fresh tensors, nothing shared):

* the actor (``copy_policy_from``), the Q-functions (``copy_q_function_from``) and the target
  Q-functions (the source's own targets, which lag its Q-functions: a fresh SAC would start its
  targets from its Q-functions instead);
* the temperature ``log_temp``: the offline agent's learned entropy temperature, so the online actor
  loss starts where the offline actor loss ended (a fresh SAC would start at ``initial_temperature``);
* the Adam states of the actor, critic and temperature optimisers: training continues as if the
  offline agent kept training without its conservative term. CQL's ``log_alpha`` (its Lagrange
  multiplier) has no SAC counterpart and is dropped: no pessimism online.

This is what the reference does: its ``finetune.py`` restores the whole pre-trained train state into
the SAC agent (``checkpoints.restore_checkpoint(FLAGS.resume_path, target=agent)``: parameters,
target parameters, optimiser states, temperature and step). d3rlpy's step counter alone restarts at 0
(here it counts the fine-tuning critic updates; no SAC schedule reads it).

:func:`check_transfer` then compares every tensor of the SAC's policy, Q-functions, target
Q-functions and temperature with the source's and raises if one differs; the report is kept in
``finetune.json`` (``wsrl.transfer``).

Fine-tuning (the loop of :mod:`replication.agents.finetune`):

* **Warm-up.** The first ``finetune.wsrl.warmup_steps`` fine-tuning env steps (the reference's
  5,000) are collected with the copied SAC's stochastic policy, which is the offline policy then,
  and no update (``update_start``). They are fine-tuning env steps, charged to the budget like every
  other; a warm-up that leaves no update in the budget is refused before anything loads
  (:func:`replication.plan.settings.check_warmup`, the check the config runs too).
* **Updates (high UTD, as the reference's ``SACAgent.update_high_utd``).** After the warm-up, every
  env step has ``finetune.wsrl.updates_per_step`` (the reference's UTD of 4) critic updates, each on
  a minibatch of its own followed by a soft target update, then **one** actor and temperature
  update on the union of those minibatches (``finetune.wsrl.actor_updates: once``; ``every``: d3rlpy's
  SAC update on each minibatch instead). The minibatch size is ``finetune.wsrl.batch_size`` (null:
  the source's batch size, as the other methods), so at the paper's 256 and a UTD of 4 the actor
  batch has the reference's 1,024 transitions and each critic minibatch its 256. The fine-tuning
  loop calls :meth:`WSRLAgent.update` once per minibatch: the summary's ``updates`` (and the SAC's
  ``grad_step``) count critic updates; ``wsrl.updates`` has the critic and actor counts apart.
* **Critic target.** ``finetune.wsrl.backup_entropy: false`` (the reference's ``backup_entropy``):
  the target is the minimum target Q at a next action sampled from the policy, without d3rlpy's
  ``- temperature * log_prob`` (:func:`set_backup_entropy`); ``true``: d3rlpy's SAC target.
* **Temperature.** Its target entropy is ``finetune.wsrl.target_entropy`` (null: ``-action_dim``,
  d3rlpy's default). The reference's config says ``target_entropy = 0.0``, but its ``SACAgent.create``
  replaces any value ``>= 0`` by ``-action_dim``: null is what it runs.
* **Data.** ``finetune.wsrl.keep_offline_data: false`` (WSRL): minibatches from a fresh buffer of the
  online transitions only, warm-up included; the offline dataset is not retained. ``true`` (the
  RLPD-style baseline of the WSRL paper): 50/50 minibatches of offline dataset and online buffer
  (:class:`~replication.agents.finetune.MixedSampler` with rule 0.5).

Differences from the reference, documented rather than changed here:

* its networks have LayerNorm in actor and critic, and 10 critics with the minimum over a random 2
  (REDQ-style); here there is no LayerNorm and d3rlpy's SAC takes the minimum over all its
  ``n_critics`` Q-functions (d3rlpy's default 2): architecture, ensemble size and pre-training length are those of
  the package's offline learner (``offline.cql`` / ``offline.calql``), since they belong to the
  offline phase that every method of a cell shares;
* its warm-up condition is ``step <= max(warmup_steps, min_steps_to_update)`` with ``step`` the online
  step index from 0, checked after that step's env step: ``warmup_steps + 1`` env steps without
  update (and at least ``batch_size * (1 - offline_data_ratio)``, below 5,000 at its settings); here
  exactly ``warmup_steps``;
* with offline data it concatenates an online and an offline half and splits the result in order,
  so its critic minibatches are each online-only or offline-only; here every minibatch is 50/50.

Checkpoints: the agent holds only the SAC learner (saved by d3rlpy's ``save_model``, optimisers
included), its buffers, its sampler and its update counts; the source learner is not kept after the
transfer. Checkpoints fall between env steps, when no minibatch waits for its actor update.
"""

from __future__ import annotations

import copy
import dataclasses
import types
from typing import Any

import numpy as np
import torch

from replication.agents import learners
from replication.agents.finetune.base import Agent, Method, MixedSampler, register
from replication.agents.learners import compare_modules, empty_buffer, torch_batch
from replication.plan.settings import WSRL_ACTOR_UPDATES, FinetuneSettings, WSRLSettings
from replication.plan.vocabulary import WSRL_SOURCES

SOURCES = WSRL_SOURCES
RLPD_OFFLINE_FRACTION = 0.5  # keep_offline_data: half of every minibatch from the offline dataset
ACTOR_UPDATES = WSRL_ACTOR_UPDATES  # per env step: once on the union of its minibatches, or per minibatch


def check_source(learner, source: str) -> None:
    """``learner`` must be the configured CQL / Cal-QL agent; IQL (or anything else) is refused."""
    import d3rlpy

    expected = {"cql": d3rlpy.algos.CQL, "calql": d3rlpy.algos.CalQL}[source]
    if type(learner) is not expected:
        raise TypeError(
            f"WSRL starts from an offline CQL or Cal-QL agent (finetune.wsrl.source: {' or '.join(SOURCES)}; "
            f"configured: {source}, a {expected.__name__}), got {type(learner).__name__}: only CQL and Cal-QL have "
            "the SAC actor and Q-functions that WSRL copies (IQL's actor and value function have no SAC counterpart)"
        )
    if learner.impl is None:
        raise ValueError("WSRL: the offline learner is not built")


# ---- the transfer ----------------------------------------------------------------------------------


def check_transfer(source, sac) -> dict[str, Any]:
    """Verify that ``sac`` holds the source's actor, Q-functions, target Q-functions and temperature.

    Returns, per module, the number of tensors compared and whether all are equal; raises
    ``RuntimeError`` naming the first tensor that differs or that is shared rather than copied.
    """
    report, differing = compare_modules(source, sac, ("policy", "q_funcs", "targ_q_funcs", "log_temp"), "WSRL")
    for name, keys in differing.items():
        if keys:
            raise RuntimeError(f"WSRL: SAC {name}.{keys[0]} differs from the offline agent's: the transfer failed")
    return report


def _copy_optimizer(dst, src) -> None:
    """Adam state of ``src`` into ``dst`` (same parameter layout); a deep copy, as Adam updates in place."""
    state = copy.deepcopy(src.optim.state_dict()["state"])
    dst.optim.load_state_dict({"state": state, "param_groups": dst.optim.state_dict()["param_groups"]})


def sac_config(source, batch_size: int | None):
    """A d3rlpy ``SACConfig`` with every field taken from ``source``'s config, but the batch size."""
    import d3rlpy

    fields = {f.name: getattr(source.config, f.name) for f in dataclasses.fields(d3rlpy.algos.SACConfig)}
    fields = copy.deepcopy(fields)  # scalers and factories of its own
    if batch_size is not None:
        fields["batch_size"] = int(batch_size)
    return d3rlpy.algos.SACConfig(**fields)


def transfer(source, batch_size: int | None = None, device: str | bool = False):
    """The online SAC of WSRL built from the offline CQL / Cal-QL ``source`` (see the module docstring)."""
    impl = source.impl
    sac = sac_config(source, batch_size).create(device=device)
    sac.create_impl(impl.observation_shape, impl.action_size)
    sac.copy_policy_from(source)
    sac.copy_q_function_from(source)
    a, b = source.impl.modules, sac.impl.modules
    with torch.no_grad():
        b.targ_q_funcs.load_state_dict(a.targ_q_funcs.state_dict())
        b.log_temp.load_state_dict(a.log_temp.state_dict())
    for name in ("actor_optim", "critic_optim", "temp_optim"):
        if getattr(a, name) is not None and getattr(b, name) is not None:
            _copy_optimizer(getattr(b, name), getattr(a, name))
    sac.set_grad_step(0)
    check_transfer(source, sac)
    return sac


def set_target_entropy(sac, target_entropy: float | None) -> None:
    """Temperature updates towards ``target_entropy`` (``None``: d3rlpy's ``-action_size``, left as is)."""
    if target_entropy is None:
        return
    from d3rlpy.models.torch.parameters import get_parameter

    target = float(target_entropy)

    def update_temp(impl, log_prob: torch.Tensor) -> torch.Tensor:
        # d3rlpy's SACImpl.update_temp with its `- action_size` replaced by `+ target_entropy`
        impl._modules.temp_optim.zero_grad()
        with torch.no_grad():
            targ_temp = log_prob + target
        loss = -(get_parameter(impl._modules.log_temp).exp() * targ_temp).mean()
        loss.backward()
        impl._modules.temp_optim.step()
        return loss

    sac.impl.update_temp = types.MethodType(update_temp, sac.impl)


def set_backup_entropy(sac, backup_entropy: bool) -> None:
    """Critic targets without the entropy term (``False``, the reference's) or d3rlpy's (``True``, left as is)."""
    if backup_entropy:
        return
    from d3rlpy.models.torch import build_squashed_gaussian_distribution

    def compute_target(impl, batch) -> torch.Tensor:
        # d3rlpy's SACImpl.compute_target without its `- temp * log_prob`; the same draw of the next action
        with torch.no_grad():
            dist = build_squashed_gaussian_distribution(impl._modules.policy(batch.next_observations))
            action, _ = dist.sample_with_log_prob()
            return impl._targ_q_func_forwarder.compute_target(batch.next_observations, action, reduction="min")

    sac.impl.compute_target = types.MethodType(compute_target, sac.impl)


def union(batches: list[Any]) -> Any:
    """The ``TorchMiniBatch`` of all rows of ``batches``, in order."""

    def cat(values: list[Any]) -> Any:
        if isinstance(values[0], torch.Tensor):
            return torch.cat(values)
        if isinstance(values[0], (tuple, list)):  # tuple observations
            return type(values[0])(torch.cat(parts) for parts in zip(*values, strict=True))
        return values[0]

    fields = {f.name: cat([getattr(b, f.name) for b in batches]) for f in dataclasses.fields(batches[0])}
    return dataclasses.replace(batches[0], **{**fields, "numpy_batch": None})


# ---- the agent -------------------------------------------------------------------------------------


class WSRLAgent(Agent):
    """WSRL: the transferred SAC, a warm-up without updates, then SAC on online data (or 50/50 batches)."""

    method = "wsrl"

    def __init__(
        self, source, offline_buffer, cache_size: int, options: WSRLSettings, rng: np.random.Generator, device
    ):
        self.source = options.source
        check_source(source, self.source)
        self.learner = transfer(source, options.batch_size, device)  # the source itself is not kept
        self.transfer = check_transfer(source, self.learner)
        set_target_entropy(self.learner, options.target_entropy)
        set_backup_entropy(self.learner, options.backup_entropy)
        self.update_start = options.warmup_steps
        self.updates_per_step = options.updates_per_step  # critic updates (minibatches) per env step
        self.actor_updates = options.actor_updates
        self.target_entropy = options.target_entropy
        self.backup_entropy = options.backup_entropy
        self.counts = {"critic": 0, "actor": 0}  # updates done
        self.pending: list[Any] = []  # this env step's minibatches, waiting for the actor update
        self.keep_offline_data = options.keep_offline_data
        self.online_buffer = empty_buffer(offline_buffer, cache_size)
        self.sampler = None
        self.initial_transitions = 0
        if self.keep_offline_data:  # only then is the dataset kept (and in the checkpoints' references)
            self.offline_buffer = offline_buffer
            self.sampler = MixedSampler(offline_buffer, self.online_buffer, RLPD_OFFLINE_FRACTION, rng)
            self.initial_transitions = offline_buffer.transition_count

    def update(self, batch) -> None:
        """One critic update and soft target update on ``batch``; after the env step's last minibatch, the
        actor and temperature update on the union of its minibatches (the reference's ``update_high_utd``)."""
        learner = self.learner
        if self.actor_updates == "every":
            learner.update(batch)  # d3rlpy's SAC update: critic, actor and temperature, target
            self.counts["critic"] += 1
            self.counts["actor"] += 1
            return
        impl = learner.impl
        minibatch = torch_batch(learner, batch)
        impl.modules.set_train()  # as d3rlpy's update (its actor update leaves the critics in eval mode)
        impl.update_critic(minibatch)
        impl.update_critic_target()
        learner.set_grad_step(learner.grad_step + 1)  # grad_step counts critic updates
        self.counts["critic"] += 1
        self.pending.append(minibatch)
        if len(self.pending) == self.updates_per_step:
            impl.update_actor(union(self.pending))  # the temperature update is inside (d3rlpy's SAC actor loss)
            self.counts["actor"] += 1
            self.pending = []

    def __getstate__(self) -> dict[str, Any]:
        if self.pending:
            raise RuntimeError("WSRL: a checkpoint between the minibatches of one env step")
        return self.__dict__

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "wsrl": {
                "source": self.source,
                "warmup_steps": self.update_start,
                "updates_per_step": self.updates_per_step,
                "actor_updates": self.actor_updates,
                "batch_size": int(self.learner.config.batch_size),  # of a critic minibatch
                "actor_batch_size": int(self.learner.config.batch_size)
                * (self.updates_per_step if self.actor_updates == "once" else 1),
                "updates": dict(self.counts),  # critic (= the summary's updates) and actor updates done
                "n_critics": int(self.learner.config.n_critics),
                "target_entropy": self.target_entropy,
                "backup_entropy": self.backup_entropy,
                "keep_offline_data": self.keep_offline_data,
                "transfer": self.transfer,
            },
            "buffer": {
                "initial_transitions": int(self.initial_transitions),
                "online_transitions": int(self.online_buffer.transition_count),
            },
        }
        if self.sampler is not None:
            out["mixing"] = self.sampler.stats()
        return out


def build(settings: FinetuneSettings, learner, transitions, rng: np.random.Generator, device: str = "cpu") -> WSRLAgent:
    """The WSRL agent from the loaded offline CQL or Cal-QL ``learner`` and its dataset."""
    options = settings.own_as(WSRLSettings)
    check_source(learner, options.source)  # before the buffers are built
    offline_buffer = learners.replay_buffer(transitions)  # SAC needs no returns-to-go: d3rlpy's plain picker
    return WSRLAgent(learner, offline_buffer, settings.cache_size, options, rng, device)


register(Method("wsrl", build))
