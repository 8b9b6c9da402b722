"""The offline subroutine: IQL, CQL or Cal-QL on the agent's own data, offline validation, recommendation.

One job trains one d3rlpy learner (``iql``, ``cql`` or ``calql``) on one verified dataset file of a
cell (``buffer`` at a pause point, or newdata) for ``G = gradient_steps`` gradient steps, and writes
under its ``out_dir``:

* ``validation.json``: offline validation. ``K`` checkpoints (as many as ``offline_fraction x T`` env
  steps pay for at full episode length, :func:`replication.plan.schema.validation_checkpoints`) at
  gradient steps ``round(G * i / K)``, ``i = 1..K`` (half rounds up; the last is ``G``), each evaluated
  for ``validation.episodes`` seeded episodes (the same seeds as online validation). Best = highest
  mean score, the earliest on ties; "without validation" = the last checkpoint. The variants that
  validate are charged ``offline_fraction x T`` env steps; the steps really spent are recorded too.
* ``learnable_best.d3``, ``learnable_last.d3``: the whole learner (weights, optimisers, scalers) of
  those two checkpoints, for fine-tuning (``d3rlpy.load_learnable`` restarts the step counter at 0:
  use :func:`load_learner`, which restores it). Other checkpoints are not kept.
* ``policy_best.pt``, ``policy_last.pt``: their deterministic policies as TorchScript (d3rlpy's
  ``save_policy``), acting in the env's own action range; every export is checked against the
  learner's ``predict`` on a batch of dataset observations.
* ``recommend.csv`` (tidy, stage ``recommend``), ``records.json`` (every reporting episode),
  ``ledger_<validation>_<selection>.json`` and ``offline.json`` (run info, timings; written last).

Recommendation variants, for each validation setting the dataset serves
(:attr:`replication.plan.variants.OfflineDataset.validations`):

* ``full/offline``: the best offline checkpoint; ``none/offline``: the last one;
* ``full/best-of``: the better of the best online snapshot and the best offline checkpoint by their
  validation scores (same episode seeds, so the same initial states). **(choice)** On a tie the
  online policy is kept: the offline subroutine must strictly beat what the agent already has.

Each is evaluated with the reporting evaluation (``evaluation.episodes`` episodes seeded from
``seed + evaluation.seed_offset``, the online run's reporting seeds; the online side of best-of
reuses ``eval_best.json``) and placed at its ledger-true env step
(:func:`replication.plan.variants.recommendation_ledger`).

Settings. Actions: ``MinMaxActionScaler`` from the env's action space, so the networks act in
[-1, 1] and the policies in the env's range (Humanoid: +-0.4); observations are never normalised by
the space's bounds (Meta-World's are wrong). **(choice)** CQL and Cal-QL use a fixed conservative
weight (``alpha_learning_rate = 0``, the non-Lagrangian CQL of the locomotion benchmarks and of
d3rlpy's own CQL reproduction) unless the algorithm's config section sets ``alpha_learning_rate``;
d3rlpy's default (1e-4, threshold 10) would tune the weight by dual descent instead. d3rlpy's IQL
has one optimiser for Q and V: ``value_learning_rate`` must equal ``critic_learning_rate``.

Resumable: every ``offline.checkpoint_interval`` gradient steps the job writes ``checkpoint/``
(learner with optimisers, validation so far, the best files so far, RNG states;
:mod:`replication.resume`); a restarted job continues from it to the same outputs (on the CPU).

Training is d3rlpy's own update step in d3rlpy's own order (the loop of ``fitter``: one
``sample_transition_batch`` and one ``update`` per step, after the same scaler building and model
creation), without its logger; seeded (``d3rlpy.seed``) after the dataset is built and before the
learner is, it gives exactly the parameters of a plain ``fit`` in that order (checked by the tests
and ``benchmarks/bench_offline.py``). d3rlpy writes no log directory.

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

import dataclasses
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replication import resume
from replication.agents import checkpoint
from replication.agents.datasets import DatasetError, Transitions, load_transitions, read_metadata
from replication.agents.envs import env_spaces, get_spec, resolve_spec, shared_env
from replication.agents.evaluation import EpisodeRecord, Evaluator
from replication.agents.policies import TorchScriptPolicy, load_policy
from replication.analysis import tidy
from replication.io import atomic_path, read_json, write_json
from replication.plan import config
from replication.plan.ledger import BudgetError, Ledger
from replication.plan.schema import episode_steps, validation_checkpoints, validation_costs
from replication.plan.variants import OfflineDataset, recommendation_ledger
from replication.plan.vocabulary import OFFLINE_ALGOS
from replication.runinfo import configure_torch, run_info

log = logging.getLogger(__name__)

ALGOS = OFFLINE_ALGOS
SPARSE_FAILURE_REWARD = {("kitchen", "binary"): 0.0}  # (suite, reward mode) -> raw reward of a failed step
EXPORT_ATOL = 1e-5  # exported TorchScript policy vs the learner's predict
ACTION_RANGE_TOL = 1e-4  # dataset actions may exceed the env's range by this fraction of it (rounding)
CHECK_BATCH = 256  # dataset observations used to check every policy export


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


def sparse_failure_reward(cfg: dict[str, Any], env_name: str) -> float | None:
    """Raw reward of a failed step where ``env_name`` (with its options) has a sparse binary reward."""
    options = {k: v for k, v in config.env_options(cfg, env_name).items() if k in ("reward", "max_episode_steps")}
    spec = resolve_spec(env_name, **options)
    return SPARSE_FAILURE_REWARD.get((spec.suite, spec.reward))


def failure_return(params: dict[str, Any], failure_reward: float) -> float:
    """The raw value whose scaled form is the Cal-QL failure return ``r_fail' / (1 - gamma)``."""
    scale, bias = float(params.get("reward_scale", 1.0)), float(params.get("reward_bias", 0.0))
    target = (scale * failure_reward + bias) / (1.0 - float(params["gamma"]))
    return (target - bias) / scale


def transition_picker(cfg: dict[str, Any], env_name: str, algo: str):
    """The transition picker of ``algo``'s replay buffers (fine-tuning buffers must use it too).

    Cal-QL on a sparse-reward env: d3rlpy's ``SparseRewardTransitionPicker`` with the failure
    return of :func:`failure_return`; otherwise ``None`` (d3rlpy's basic picker).
    """
    import d3rlpy

    failure = sparse_failure_reward(cfg, env_name)
    if algo != "calql" or failure is None:
        return None
    params = config.offline_params(cfg, env_name, algo)
    return d3rlpy.dataset.SparseRewardTransitionPicker(
        failure_return=failure_return(params, failure), step_reward=failure
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


def build_learner(cfg: dict[str, Any], env_name: str, algo: str, device: str):
    """A d3rlpy ``IQL``, ``CQL`` or ``CalQL`` with the config's settings for ``env_name`` (not yet built)."""
    import d3rlpy

    if algo not in ALGOS:
        raise ValueError(f"unknown offline algorithm {algo!r}; valid: {', '.join(ALGOS)}")
    p = config.offline_params(cfg, env_name, algo)
    _, space = env_spaces(env_name, **config.env_options(cfg, env_name))
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
        "compile_graph": bool(cfg["offline"]["compile_graph"]),
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


def offline_buffer(
    cfg: dict[str, Any], env_name: str, algo: str, transitions: Transitions, precompute_returns: bool = True
):
    """The static replay buffer ``algo`` trains on, with its transition picker.

    Cal-QL without a reward scaler, with ``precompute_returns``: :class:`ReturnsToGoPicker` (same
    values as d3rlpy's pickers, computed once); otherwise :func:`transition_picker`.
    """
    params = config.offline_params(cfg, env_name, algo)
    if algo == "calql" and precompute_returns and reward_scaler(params) is None:
        failure = sparse_failure_reward(cfg, env_name)
        rule = None if failure is None else (failure, failure_return(params, failure))
        picker = ReturnsToGoPicker(float(params["gamma"]), rule)
        buffer = replay_buffer(transitions, picker)
        picker.precompute(buffer.episodes)
        return buffer
    return replay_buffer(transitions, transition_picker(cfg, env_name, algo))


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


# ---- datasets ------------------------------------------------------------------------------------


def check_dataset(
    transitions: Transitions,
    env_name: str,
    cfg: dict[str, Any],
    meta: dict[str, Any] | None = None,
    dataset: OfflineDataset | None = None,
) -> None:
    """Refuse a dataset that does not belong to ``env_name`` (and ``dataset``), naming the problem.

    Checks the episode structure (:meth:`Transitions.validate`), the metadata's env, pause, label
    and episode counts, the observation and action dimensions against the env, and that actions lie
    in the env's own range (a dataset in [-1, 1] for Humanoid's +-0.4 is refused).
    """
    transitions.validate()
    meta = meta or {}
    where = f"dataset for {env_name}" + (f" ({meta['file']})" if "file" in meta else "")
    if meta.get("env", env_name) != env_name:
        raise DatasetError(f"{where}: was made for environment {meta['env']!r}, not {env_name!r}")
    if dataset is not None:
        if "pause" in meta and int(meta["pause"]) != dataset.pause:
            raise DatasetError(f"{where}: was made at pause {meta['pause']}, expected {dataset.pause}")
        if "strategy" in meta and meta["strategy"] != dataset.label:
            raise DatasetError(f"{where}: is a {meta['strategy']!r} dataset, expected {dataset.label!r}")
        if dataset.is_newdata and meta.get("collector", dataset.collector) != dataset.collector:
            raise DatasetError(f"{where}: was collected by the {meta['collector']!r} policy, not {dataset.collector!r}")
    episodes = len(transitions.episode_bounds())
    counts = {
        "episodes": episodes,
        "terminal_episodes": int(transitions.terminals.sum()),
        "timeout_episodes": int(transitions.timeouts.sum()),
    }
    for key, value in counts.items():
        if key in meta and int(meta[key]) != value:
            raise DatasetError(f"{where}: holds {value} {key.replace('_', ' ')}, its metadata says {meta[key]}")
    obs_space, act_space = env_spaces(env_name, **config.env_options(cfg, env_name))
    if transitions.observations.ndim != 2 or transitions.observations.shape[1:] != obs_space.shape:
        raise DatasetError(
            f"{where}: observations have shape {transitions.observations.shape[1:]}, the env's are {obs_space.shape}"
        )
    if transitions.actions.ndim != 2 or transitions.actions.shape[1:] != act_space.shape:
        raise DatasetError(
            f"{where}: actions have shape {transitions.actions.shape[1:]}, the env's are {act_space.shape}"
        )
    low, high = act_space.low.astype(np.float64), act_space.high.astype(np.float64)
    tol = ACTION_RANGE_TOL * (high - low)
    below = transitions.actions < low - tol
    above = transitions.actions > high + tol
    if below.any() or above.any():
        raise DatasetError(
            f"{where}: actions span [{transitions.actions.min():.4g}, {transitions.actions.max():.4g}] outside the "
            f"env's range [{low.min():.4g}, {high.max():.4g}] ({int((below | above).any(axis=1).sum())} steps); "
            "datasets must hold actions in the env's own range"
        )
    if not np.all(np.isfinite(transitions.actions)):
        raise DatasetError(f"{where}: actions contain NaN or inf")
    if len(transitions) - counts["timeout_episodes"] < 1:
        raise DatasetError(f"{where}: has no transition to learn from (every episode is one truncated step)")


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


# ---- validation schedule ---------------------------------------------------------------------


def recommendation_variants(
    cfg: dict[str, Any], env_name: str, dataset: OfflineDataset
) -> tuple[list[tuple[str, str, Ledger]], dict[str, str]]:
    """The recommendation variants ``(validation, selection, ledger)`` of ``dataset`` that the budget pays for.

    A variant whose ledger would overdraw the total budget (validation at the ``1.0 x T`` pause:
    online training alone spends ``T``) is left out; the second value maps it to the reason.
    """
    variants, skipped = [], {}
    for validation_mode in dataset.validations:
        for selection in ("offline", "best-of") if validation_mode == "full" else ("offline",):
            try:
                ledger = recommendation_ledger(cfg, env_name, dataset, validation_mode, selection)
            except BudgetError as err:
                skipped[f"{validation_mode}/{selection}"] = str(err)
                continue
            variants.append((validation_mode, selection, ledger))
    return variants, skipped


def checkpoint_steps(gradient_steps: int, count: int) -> list[int]:
    """``count`` gradient steps evenly spaced up to ``gradient_steps``: ``round(G * i / K)``, half up.

    The last is ``G``; duplicates (``K > G``) are dropped.
    """
    if count < 1 or gradient_steps < 1:
        raise ValueError(f"need at least one checkpoint and one gradient step, got K={count}, G={gradient_steps}")
    steps = [(2 * gradient_steps * i + count) // (2 * count) for i in range(1, count + 1)]
    return sorted({s for s in steps if s > 0})


def mean_score(records: list[EpisodeRecord]) -> float:
    return float(np.mean([r.score for r in records]))


OUTPUTS = (
    "offline.json",
    "recommend.csv",
    "records.json",
    "validation.json",
    "ledger_*.json",
    "learnable_*.d3",
    "policy_*.pt",
)


def clear_outputs(out_dir: Path) -> None:
    """Remove a previous run's outputs, the completion marker ``offline.json`` first."""
    for pattern in OUTPUTS:
        for path in sorted(out_dir.glob(pattern)):
            path.unlink()


def job_key(
    cfg: dict[str, Any], env_name: str, seed: int, algo: str, dataset_path: Path | str, dataset: OfflineDataset
) -> str:
    """What an offline learner's results depend on: its checkpoints and finished outputs carry it."""
    sha = read_metadata(dataset_path).get("sha256")
    return checkpoint.job_key("offline", cfg, env_name, seed, algo, dataset.label, dataset.pause, sha)


@dataclasses.dataclass
class Timings:
    train_seconds: float = 0.0
    validation_seconds: float = 0.0
    evaluation_seconds: float = 0.0
    setup_seconds: float = 0.0


# ---- the job -------------------------------------------------------------------------------------


def run_offline(
    cfg: dict[str, Any],
    env_name: str,
    seed: int,
    algo: str,
    dataset_path: Path | str,
    online_dir: Path | str,
    dataset: OfflineDataset,
    out_dir: Path | str,
    progress: bool | None = None,
    precompute_returns: bool = True,
) -> dict[str, Any]:
    """Train ``algo`` on ``dataset_path``, validate its checkpoints, evaluate the recommendations.

    ``online_dir`` is the cell's online run (``pause_<dataset.pause>/validation.json`` and
    ``eval_best.json`` for best-of). ``precompute_returns``: Cal-QL's returns-to-go computed once
    per episode (:class:`ReturnsToGoPicker`; the same values, faster). Returns the summary written
    to ``offline.json``.
    """
    start = time.perf_counter()
    timings = Timings()
    device = configure_torch(cfg)
    quiet_d3rlpy()
    import d3rlpy

    out_dir = Path(out_dir)
    inputs = {Path(dataset_path).resolve().parent, (Path(online_dir) / f"pause_{dataset.pause}").resolve()}
    if out_dir.resolve() in inputs:
        raise ValueError(f"out_dir {out_dir} holds the run's inputs; give the offline job its own directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(out_dir)
    resume_key = job_key(cfg, env_name, seed, algo, dataset_path, dataset)
    ckpt_dir = out_dir / resume.CHECKPOINT_DIR
    progress = sys.stderr.isatty() if progress is None else progress
    params = config.offline_params(cfg, env_name, algo)
    env_opts = config.env_options(cfg, env_name)
    spec = get_spec(env_name)

    # one env for every learner of the job (each episode is reset with its own seed); built first,
    # so that the dataset check reads its spaces instead of building another env
    env = shared_env(env_name, seed, **env_opts)
    transitions, meta = load_transitions(dataset_path)  # verifies the hash and the episode structure
    check_dataset(transitions, env_name, cfg, meta, dataset)
    variants, skipped = recommendation_variants(cfg, env_name, dataset)
    online_val = None
    if any(selection == "best-of" for _, selection, _ in variants):
        online_val_file = Path(online_dir) / f"pause_{dataset.pause}" / "validation.json"
        if not online_val_file.exists():
            raise FileNotFoundError(f"best-of needs the online validation {online_val_file}; run the online phase")
        online_val = read_json(online_val_file)

    gradient_steps = int(params["gradient_steps"])
    v = cfg["validation"]
    total = cfg["budget"]["total_steps"]
    count = validation_checkpoints(v["offline_fraction"], total, v["episodes"], episode_steps(cfg, env_name))
    steps = checkpoint_steps(gradient_steps, count)
    charged = validation_costs(cfg, env_name)[1]
    rng = np.random.default_rng(seed)
    check_obs = transitions.observations[rng.choice(len(transitions), min(CHECK_BATCH, len(transitions)), False)]

    buffer = offline_buffer(cfg, env_name, algo, transitions, precompute_returns)
    expected = len(transitions) - int(transitions.timeouts.sum())
    if buffer.transition_count != expected:
        raise DatasetError(f"d3rlpy sees {buffer.transition_count} transitions, the dataset holds {expected}")
    del transitions
    # seeded after the dataset is built (d3rlpy's dataset construction draws from numpy's global RNG):
    # the same order as ``dataset = load_dataset(...); d3rlpy.seed(seed); algo.fit(dataset, ...)``
    d3rlpy.seed(seed)
    learner = build_learner(cfg, env_name, algo, device)
    prepare(learner, buffer)
    validator = Evaluator(env_name, seed, v["episodes"], v["seed_offset"], env_opts, env)
    scores: list[float] = []
    validation_records: dict[int, list[EpisodeRecord]] = {}
    best_step, done = None, 0
    restored = resume.restore_offline(ckpt_dir, resume_key, learner, out_dir)
    if restored is not None:
        scores, validation_records, best_step, done, timings = (restored[k] for k in _LOOP_STATE)
    timings.setup_seconds = time.perf_counter() - start

    bar = None
    if progress:
        from tqdm import tqdm

        desc = f"{algo} {env_name} {dataset.label}@{dataset.pause}"
        bar = tqdm(total=gradient_steps, initial=done, unit="step", desc=desc)
    candidate = out_dir / "policy_candidate.pt"
    interval = int(cfg["offline"]["checkpoint_interval"])

    def save_checkpoint() -> None:
        state = dict(zip(_LOOP_STATE, (scores, validation_records, best_step, done, timings), strict=True))
        resume.save_offline(ckpt_dir, resume_key, learner, out_dir, state)

    for step in resume.boundaries(steps, interval, gradient_steps):
        if step <= done:
            continue
        t0 = time.perf_counter()
        train(learner, buffer, step - done, bar)
        done = step
        t1 = time.perf_counter()
        timings.train_seconds += t1 - t0
        if step not in steps:  # a checkpoint only
            save_checkpoint()
            continue
        policy = export_policy(learner, candidate, check_obs)
        records = validator(policy)
        validation_records[step] = records
        scores.append(mean_score(records))
        if best_step is None or scores[-1] > max(scores[:-1]):  # ties: the earliest
            best_step = step
            save_learnable(learner, out_dir / "learnable_best.d3")
            shutil.copyfile(candidate, out_dir / "policy_best.pt")
        timings.validation_seconds += time.perf_counter() - t1
        if resume.due(step, interval, gradient_steps):
            save_checkpoint()
    if bar is not None:
        bar.close()
    save_learnable(learner, out_dir / "learnable_last.d3")
    os.replace(candidate, out_dir / "policy_last.pt")
    actual = sum(r.env_steps for recs in validation_records.values() for r in recs)
    if actual > charged:
        raise AssertionError(f"offline validation spent {actual} env steps, more than the {charged} charged")
    validation = {
        "algo": algo,
        "dataset": dataset.label,
        "pause": dataset.pause,
        "gradient_steps": gradient_steps,
        "checkpoints": steps,
        "scores": scores,
        "episodes_per_checkpoint": v["episodes"],
        "best_step": best_step,
        "best_score": scores[steps.index(best_step)],
        "last_step": steps[-1],
        "last_score": scores[-1],
        "charged_env_steps": charged,
        "actual_env_steps": actual,
        "records": {str(s): [dataclasses.asdict(r) for r in recs] for s, recs in validation_records.items()},
    }
    write_json(out_dir / "validation.json", validation)

    # ---- recommendations
    t0 = time.perf_counter()
    evaluator = Evaluator(
        env_name, seed, cfg["evaluation"]["episodes"], cfg["evaluation"]["seed_offset"], env_opts, validator.env
    )
    needed = {"best" if mode == "full" else "last" for mode, _, _ in variants}
    offline_records: dict[str, list[EpisodeRecord]] = {}
    for which in sorted(needed):
        # the same policy on the same seeds gives the same episodes: best == last is evaluated once
        same = best_step == steps[-1] and offline_records
        offline_records[which] = (
            next(iter(offline_records.values())) if same else evaluator(load_policy(out_dir / f"policy_{which}.pt"))
        )
    timings.evaluation_seconds = time.perf_counter() - t0

    base = {
        "env": env_name,
        "suite": spec.suite,
        "seed": seed,
        "stage": "recommend",
        "algo": algo,
        "dataset": dataset.label,
        "pause": dataset.pause,
    }
    rows: list[dict[str, Any]] = []
    episodes: dict[str, Any] = {}
    ledgers: dict[str, Any] = {}
    best_of = None
    for validation_mode, selection, ledger in variants:
        key = f"{validation_mode}/{selection}"
        if selection == "offline":
            source = "offline-best" if validation_mode == "full" else "offline-last"
            records = offline_records["best" if validation_mode == "full" else "last"]
        else:
            online_score, offline_score = float(online_val["best_score"]), validation["best_score"]
            use_offline = offline_score > online_score  # (choice) ties keep the online policy
            source = "offline-best" if use_offline else "online-best"
            if use_offline:
                records = offline_records["best"]
            else:
                eval_file = Path(online_dir) / f"pause_{dataset.pause}" / "eval_best.json"
                records = [EpisodeRecord(**r) for r in read_json(eval_file)]
            best_of = {
                "online_best_step": online_val["best_step"],
                "online_validation_score": online_score,
                "offline_best_step": best_step,
                "offline_validation_score": offline_score,
                "chosen": source,
                "tie_rule": "online kept on ties",
            }
        row_base = {**base, "validation": validation_mode, "selection": selection}
        rows += tidy.rows_from_records(row_base, records, ledger.spent)
        episodes[key] = {"source": source, "env_step": ledger.spent, "records": records}
        ledgers[key] = ledger.to_dict()
        ledger.save(out_dir / f"ledger_{validation_mode}_{selection}.json")
    tidy.write(tidy.frame(rows), out_dir / "recommend.csv")
    write_json(out_dir / "records.json", episodes)

    summary = {
        **run_info(cfg, device),
        "env": env_name,
        "seed": seed,
        "algo": algo,
        "dataset": dataset.label,
        "pause": dataset.pause,
        "collector": dataset.collector,
        "dataset_file": str(dataset_path),
        "dataset_sha256": meta.get("sha256"),
        "dataset_transitions": meta.get("transitions"),
        "params": params,
        "gradient_steps": gradient_steps,
        "checkpoints": steps,
        "best_step": best_step,
        "returns_to_go": returns_to_go_rule(cfg, env_name, algo),
        "job_key": resume_key,
        "resumed": restored is not None,
        "best_of": best_of,
        "ledgers": ledgers,
        "skipped_variants": skipped,
        "timings": {
            **dataclasses.asdict(timings),
            "gradient_steps_per_second": gradient_steps / max(timings.train_seconds, 1e-9),
            "total_seconds": time.perf_counter() - start,
        },
    }
    write_json(out_dir / "offline.json", summary)
    checkpoint.remove_checkpoint(ckpt_dir)
    log.info(
        "%s %s seed %d %s@%d: best checkpoint %d of %d, %.1f gradient steps/s",
        algo,
        env_name,
        seed,
        dataset.label,
        dataset.pause,
        best_step,
        gradient_steps,
        summary["timings"]["gradient_steps_per_second"],
    )
    return summary


_LOOP_STATE = ("scores", "validation_records", "best_step", "done", "timings")  # what a checkpoint keeps


def finished_learner(out_dir: Path | str, key: str) -> dict[str, Any] | None:
    """The summary of a learner that already finished with ``key`` in ``out_dir`` (a restarted
    multi-learner job keeps it), or ``None``."""
    path = Path(out_dir) / "offline.json"
    if not path.exists():
        return None
    summary = read_json(path)
    return summary if summary.get("job_key") == key else None


def returns_to_go_rule(cfg: dict[str, Any], env_name: str, algo: str) -> dict[str, Any] | None:
    """How ``algo``'s returns-to-go are formed on ``env_name`` (recorded in ``offline.json``)."""
    if algo != "calql":
        return None
    params = config.offline_params(cfg, env_name, algo)
    failure = sparse_failure_reward(cfg, env_name)
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
