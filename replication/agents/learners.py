"""The d3rlpy toolkit of offline training and fine-tuning: learners, replay buffers, pickers, files.

Both the offline job (:mod:`replication.agents.offline`) and fine-tuning
(:mod:`replication.agents.finetune`, :mod:`replication.agents.finetune.pex`) build, train, save and load their
d3rlpy learners through this module, so that the two stages use the same settings and the same
returns-to-go.

Settings. Actions: ``MinMaxActionScaler`` from the env's action space, so the networks act in
[-1, 1] and the policies in the env's range (Humanoid: +-0.4); observations are never normalised by
the space's bounds (Meta-World's are wrong). **(choice)** CQL and Cal-QL use a fixed conservative
weight (``alpha_learning_rate = 0``, the non-Lagrangian CQL of the locomotion benchmarks and of
d3rlpy's own CQL reproduction) unless the algorithm's config section sets ``alpha_learning_rate``;
d3rlpy's default (1e-4, threshold 10) would tune the weight by dual descent instead. d3rlpy's IQL
has one optimiser for Q and V: ``value_learning_rate`` must equal ``critic_learning_rate``.

Cal-QL returns-to-go, as d3rlpy 2.8.0 computes them. Each sampled transition carries
``rewards_to_go = episode.rewards[index:]`` (``BasicTransitionPicker``: the stored rewards from that
step to the end of its stored episode); ``TorchMiniBatch.from_batch`` applies the reward scaler to
those rewards and sums them discounted by ``gamma`` (``_compute_return_to_go``), and
``CalQLImpl`` lower-bounds the policy's Q-values in the conservative term by it. So:

* episodes must be exact: the datasets keep the env's terminations and truncations (never merged:
  ``terminals``/``timeouts`` in d3rlpy's episode file), and a file is verified (hash, structure,
  env, dimensions, action range) before training;
* a terminated episode gives the exact Monte-Carlo return;
* **(choice)** a truncated episode (time limit, or cut at the pause point) gives the discounted
  sum of its stored rewards, with no bootstrap: a lower bound of the true return where the
  remaining rewards are non-negative (locomotion's alive bonus), otherwise an estimate from the
  stored steps. The last step of a truncated episode is not a transition in d3rlpy (no next
  observation is stored) but its reward still counts in the returns-to-go before it;
* sparse-reward environments (reward mode ``binary``: Kitchen-sparse, or Kitchen with
  ``reward: binary``; failure step reward 0): a transition whose remaining stored rewards are all
  the failure value gets the failure return of the Cal-QL paper, ``r_fail' / (1 - gamma)`` with
  ``r_fail'`` the scaled failure reward (d3rlpy's ``SparseRewardTransitionPicker``, fed the raw
  value that the reward scaler maps onto it, as d3rlpy's own Cal-QL reproduction does). Kitchen
  ends the episode when all subtasks are done, so a successful episode's suffixes all hold its
  reward of 1 and keep their discounted sum. With the defaults (scale 1, bias 0) the failure
  return is 0 = the discounted sum of the stored zero rewards: the rule changes nothing unless a
  reward bias is set (tests check both). Dense environments, and Kitchen's ``subtask`` and
  ``accumulated`` modes, use the plain discounted sum (as Cal-QL's own Kitchen setup).

``reward_scale``/``reward_bias`` (Cal-QL's config): ``r' = reward_scale * r + reward_bias`` through
d3rlpy's ``ConstantShiftRewardScaler(multiply_first=True)``, applied to the TD targets and to the
returns-to-go alike; it is saved with the learner, so fine-tuning scales online rewards the same
way. Identity settings use no scaler.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replication.agents.datasets import Transitions
from replication.agents.envs import env_spaces
from replication.agents.policies import TorchScriptPolicy, load_policy
from replication.io import atomic_path, read_json
from replication.plan.settings import LearnerSettings
from replication.plan.vocabulary import OFFLINE_ALGOS

ALGOS = OFFLINE_ALGOS
EXPORT_ATOL = 1e-5  # exported TorchScript policy vs the learner's predict


# ---- d3rlpy setup --------------------------------------------------------------------------------


_QUIET = False


def quiet_d3rlpy() -> None:
    """Import d3rlpy and drop its structlog messages below WARNING (its per-fit info chatter).

    Done once per process, so a caller's own stricter setting made afterwards stays.
    """
    global _QUIET
    import d3rlpy  # noqa: F401  (configures structlog on import; ours must come after)
    import structlog

    if not _QUIET:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        _QUIET = True


def reward_scaler(params: dict[str, Any]):
    """``r' = reward_scale * r + reward_bias`` as a d3rlpy scaler, or ``None`` for the identity."""
    from d3rlpy.preprocessing import ConstantShiftRewardScaler

    scale, bias = float(params.get("reward_scale", 1.0)), float(params.get("reward_bias", 0.0))
    if scale == 0:
        raise ValueError("reward_scale must not be 0: it would erase every reward")
    if scale == 1.0 and bias == 0.0:
        return None
    return ConstantShiftRewardScaler(shift=bias, multiplier=scale, multiply_first=True)


def failure_return(params: dict[str, Any], failure_reward: float) -> float:
    """The raw value whose scaled form is the Cal-QL failure return ``r_fail' / (1 - gamma)``."""
    scale, bias = float(params.get("reward_scale", 1.0)), float(params.get("reward_bias", 0.0))
    target = (scale * failure_reward + bias) / (1.0 - float(params["gamma"]))
    return (target - bias) / scale


def transition_picker(settings: LearnerSettings):
    """The transition picker of the learner's replay buffers (fine-tuning buffers must use it too).

    Cal-QL on a sparse-reward env: d3rlpy's ``SparseRewardTransitionPicker`` with the failure
    return of :func:`failure_return`; otherwise ``None`` (d3rlpy's basic picker).
    """
    import d3rlpy

    failure = settings.failure_reward
    if settings.algo != "calql" or failure is None:
        return None
    return d3rlpy.dataset.SparseRewardTransitionPicker(
        failure_return=failure_return(settings.params, failure), step_reward=failure
    )


class ReturnsToGoPicker:
    """d3rlpy's transition picker with each episode's returns-to-go computed once, not per sample.

    d3rlpy 2.8.0 recomputes a transition's return-to-go from its whole stored suffix every time
    it is sampled (about 10 ms per batch of 256 from 1000-step episodes, on the CPU). This picker
    stores ``_compute_return_to_go(gamma, rewards[i:])`` for every step ``i`` (d3rlpy's own
    function, so the float32 values are bit-identical) and hands it out as a one-step suffix,
    which d3rlpy's sum returns unchanged. With ``failure`` (``(step_reward, failure_return)``)
    it applies ``SparseRewardTransitionPicker``'s rule first. Exact only without a reward scaler
    (d3rlpy would scale the stored sum again), and only for static datasets: call
    :meth:`precompute` with the buffer's episodes before sampling.
    """

    def __init__(self, gamma: float, failure: tuple[float, float] | None = None):
        from d3rlpy.dataset import BasicTransitionPicker

        self._gamma = gamma
        self._failure = failure
        self._basic = BasicTransitionPicker()
        self._returns: dict[int, tuple[Any, np.ndarray]] = {}

    def episode_returns(self, episode) -> np.ndarray:
        """Return-to-go of every step of ``episode``, shape ``(n, 1)``, float32."""
        from d3rlpy.torch_utility import _compute_return_to_go

        rewards = episode.rewards
        out = np.empty((len(rewards), 1), dtype=np.float32)
        for i in range(len(rewards)):
            suffix = rewards[i:]
            if self._failure is not None and np.all(suffix == self._failure[0]):
                suffix = np.array([[self._failure[1]]], dtype=np.float32)
            out[i] = _compute_return_to_go(self._gamma, suffix, None)
        return out

    def precompute(self, episodes) -> None:
        for episode in episodes:
            self._returns[id(episode)] = (episode, self.episode_returns(episode))

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled (a resumed job), the episodes are new objects: key their returns anew."""
        self.__dict__.update(state)
        self._returns = {id(entry[0]): entry for entry in self._returns.values()}

    def __call__(self, episode, index: int):
        import dataclasses as dc

        entry = self._returns.get(id(episode))
        if entry is None or entry[0] is not episode:
            raise KeyError("ReturnsToGoPicker: episode not precomputed (static datasets only)")
        transition = self._basic(episode, index)
        return dc.replace(transition, rewards_to_go=entry[1][index : index + 1])


class EpisodeReturnsPicker(ReturnsToGoPicker):
    """d3rlpy's transition picker, with each finished episode's returns-to-go computed once.

    The values are d3rlpy 2.8.0's: ``_compute_return_to_go(gamma, rewards[i:])`` of the stored
    episode (and ``SparseRewardTransitionPicker``'s rule when ``failure = (step_reward,
    failure_return)`` is given), computed the first time one of the episode's transitions is
    sampled and handed out as a one-step suffix, which d3rlpy's sum returns unchanged. Valid only
    for episodes that no longer grow (a buffer with ``write_at_termination=True``) and without a
    reward scaler (d3rlpy would scale the stored sum again).
    """

    def __call__(self, episode, index: int):
        entry = self._returns.get(id(episode))
        if entry is None or entry[0] is not episode:
            self.precompute([episode])
        return super().__call__(episode, index)


def empty_buffer(like, cache_size: int, picker=None, write_at_termination: bool = False):
    """An empty d3rlpy replay buffer (unbounded) with the signatures of buffer ``like``."""
    from d3rlpy.dataset import InfiniteBuffer, ReplayBuffer

    info = like.dataset_info
    return ReplayBuffer(
        InfiniteBuffer(),
        transition_picker=picker,
        observation_signature=info.observation_signature,
        action_signature=info.action_signature,
        reward_signature=info.reward_signature,
        action_space=info.action_space,
        action_size=info.action_size,
        cache_size=cache_size,
        write_at_termination=write_at_termination,
    )


def torch_batch(learner, batch) -> Any:
    """``batch`` (a d3rlpy ``TransitionMiniBatch``) as tensors, scaled, as d3rlpy's ``update`` converts it."""
    from d3rlpy.torch_utility import TorchMiniBatch

    config = learner.config
    return TorchMiniBatch.from_batch(
        batch=batch,
        gamma=config.gamma,
        compute_returns_to_go=learner.need_returns_to_go,
        device=learner.impl.device,
        observation_scaler=config.observation_scaler,
        action_scaler=config.action_scaler,
        reward_scaler=config.reward_scaler,
    )


def compare_modules(source, copy, names: tuple[str, ...], what: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Compare modules ``names`` of built learner ``copy`` with ``source``'s, tensor by tensor.

    Returns the report (per module: the number of tensors compared and whether all are equal) and,
    per module, the tensors that differ. Raises ``RuntimeError`` (``what``: who says it) where a
    module of ``copy`` has other tensors than the source's or shares one of them instead of a copy.
    """
    report: dict[str, Any] = {}
    differing: dict[str, list[str]] = {}
    for name in names:
        src = getattr(source.impl.modules, name).state_dict()
        dst = getattr(copy.impl.modules, name).state_dict()
        if list(src) != list(dst):
            raise RuntimeError(f"{what}: the {name} has other tensors than the source's")
        for key, value in src.items():
            if value.data_ptr() == dst[key].data_ptr():
                raise RuntimeError(f"{what}: {name}.{key} shares the source's tensor instead of a copy")
        differing[name] = [key for key, value in src.items() if not torch.equal(value, dst[key])]
        report[name] = {"tensors": len(src), "equal": not differing[name]}
    return report, differing


def build_learner(settings: LearnerSettings, device: str):
    """A d3rlpy ``IQL``, ``CQL`` or ``CalQL`` with ``settings`` (not yet built)."""
    import d3rlpy

    algo, p = settings.algo, settings.params
    _, space = env_spaces(settings.env, **settings.env_options)
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(p["hidden_units"]))
    common = {
        "actor_learning_rate": p["actor_learning_rate"],
        "critic_learning_rate": p["critic_learning_rate"],
        "actor_encoder_factory": encoder,
        "critic_encoder_factory": encoder,
        "batch_size": p["batch_size"],
        "gamma": p["gamma"],
        "tau": p["tau"],
        "action_scaler": d3rlpy.preprocessing.MinMaxActionScaler(
            minimum=np.asarray(space.low, dtype=np.float32), maximum=np.asarray(space.high, dtype=np.float32)
        ),
        "reward_scaler": reward_scaler(p),
        "compile_graph": settings.compile_graph,
    }
    if algo == "iql":
        if p["value_learning_rate"] != p["critic_learning_rate"]:
            raise ValueError(
                f"offline.iql.value_learning_rate ({p['value_learning_rate']}) must equal critic_learning_rate "
                f"({p['critic_learning_rate']}): d3rlpy's IQL trains Q and V with one optimiser"
            )
        learner_config = d3rlpy.algos.IQLConfig(
            **common, value_encoder_factory=encoder, expectile=p["expectile"], weight_temp=p["weight_temp"]
        )
    else:
        cls = d3rlpy.algos.CQLConfig if algo == "cql" else d3rlpy.algos.CalQLConfig
        extra = {k: p[k] for k in ("alpha_threshold", "initial_alpha", "initial_temperature") if k in p}
        learner_config = cls(
            **common,
            **extra,
            temp_learning_rate=p["temp_learning_rate"],
            alpha_learning_rate=p.get("alpha_learning_rate", 0.0),
            conservative_weight=p["conservative_weight"],
            n_action_samples=p["n_action_samples"],
            max_q_backup=bool(p["max_q_backup"]),
        )
    return learner_config.create(device=device)


def replay_buffer(transitions: Transitions, picker=None):
    """The d3rlpy dataset of verified ``transitions``, sampled through ``picker``."""
    return transitions.to_mdp_dataset(picker)


def offline_buffer(settings: LearnerSettings, transitions: Transitions, precompute_returns: bool = True):
    """The static replay buffer the learner trains on, with its transition picker.

    Cal-QL without a reward scaler, with ``precompute_returns``: :class:`ReturnsToGoPicker` (same
    values as d3rlpy's pickers, computed once); otherwise :func:`transition_picker`.
    """
    params = settings.params
    if settings.algo == "calql" and precompute_returns and reward_scaler(params) is None:
        failure = settings.failure_reward
        rule = None if failure is None else (failure, failure_return(params, failure))
        picker = ReturnsToGoPicker(float(params["gamma"]), rule)
        buffer = replay_buffer(transitions, picker)
        picker.precompute(buffer.episodes)
        return buffer
    return replay_buffer(transitions, transition_picker(settings))


def prepare(learner, buffer) -> None:
    """What d3rlpy's ``fitter`` does before its loop: scalers, then the networks (same RNG draws)."""
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    build_scalers_with_transition_picker(learner, buffer)
    if learner.impl is None:
        shape = buffer.sample_transition().observation_signature.shape
        learner.create_impl(shape[0] if len(shape) == 1 else shape, buffer.dataset_info.action_size)


def train(learner, buffer, steps: int, bar=None) -> None:
    """``steps`` gradient steps: d3rlpy's training step as ``fitter`` runs it."""
    batch_size = learner.config.batch_size
    for _ in range(steps):
        learner.update(buffer.sample_transition_batch(batch_size))
        if bar is not None:
            bar.update(1)


# ---- policies and learners -----------------------------------------------------------------------


def export_policy(learner, path: Path | str, observations: np.ndarray) -> TorchScriptPolicy:
    """Write ``learner``'s greedy policy as TorchScript at ``path`` and check it against ``predict``.

    The exported file must give ``learner.predict``'s actions (action scaler included) on
    ``observations`` within ``EXPORT_ATOL``; otherwise it is removed and an error raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt")
    try:
        # save_policy traces with a torch.rand input: keep the training RNG untouched, so that a run
        # with K checkpoints trains exactly as one without
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # d3rlpy's shape assert, constant here
            learner.save_policy(str(tmp))
        policy = TorchScriptPolicy(tmp)
        obs = np.asarray(observations, dtype=np.float32)
        expected = learner.predict(obs)
        got = policy.batch(obs)
        err = float(np.max(np.abs(got - expected))) if len(obs) else 0.0
        if not np.allclose(got, expected, rtol=0.0, atol=EXPORT_ATOL):
            raise RuntimeError(f"exported policy {path.name} differs from the learner's predict by {err:.3g}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return load_policy(path)


def save_learnable(learner, path: Path | str) -> None:
    """``learner.save`` (weights, optimisers, scalers, config), written atomically."""
    with atomic_path(path) as tmp:
        learner.save(str(tmp))


def load_learner(out_dir: Path | str, which: str = "best", device: str | bool | None = None):
    """The learner of checkpoint ``which`` (``best`` or ``last``) of an offline run, ready to fine-tune.

    ``d3rlpy.load_learnable`` restarts the step counter at 0; it is restored here from
    ``validation.json`` (the gradient step of that checkpoint).
    """
    import d3rlpy

    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    out_dir = Path(out_dir)
    path = out_dir / f"learnable_{which}.d3"
    if not path.exists():
        raise FileNotFoundError(f"learner file {path} does not exist; run the offline job first")
    learner = d3rlpy.load_learnable(str(path), device=device)
    learner.set_grad_step(int(read_json(out_dir / "validation.json")[f"{which}_step"]))
    return learner


def offline_policy(path: Path | str) -> TorchScriptPolicy:
    """An exported offline policy (``policy_best.pt`` / ``policy_last.pt``, or a run directory)."""
    path = Path(path)
    return load_policy(path / "policy_best.pt" if path.is_dir() else path)


def returns_to_go_rule(settings: LearnerSettings) -> dict[str, Any] | None:
    """How the learner's returns-to-go are formed on its env (recorded in ``offline.json``)."""
    if settings.algo != "calql":
        return None
    params = settings.params
    failure = settings.failure_reward
    rule = {
        "terminated": "exact discounted return of the stored episode",
        "truncated": "discounted sum of the stored rewards, no bootstrap (lower bound for non-negative rewards)",
        "reward_scale": float(params.get("reward_scale", 1.0)),
        "reward_bias": float(params.get("reward_bias", 0.0)),
        "gamma": float(params["gamma"]),
    }
    if failure is not None:
        rule["sparse_failure_reward"] = failure
        rule["failure_return_scaled"] = (rule["reward_scale"] * failure + rule["reward_bias"]) / (1 - rule["gamma"])
    return rule
