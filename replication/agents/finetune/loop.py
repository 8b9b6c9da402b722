"""Online fine-tuning from the offline agent: IQL fine-tuning, PEX and Cal-QL fine-tuning.

One job fine-tunes one method (``iql``, ``pex`` or ``calql``) of one cell (environment x seed) from
the offline agent of its source algorithm (:func:`replication.plan.vocabulary.finetune_source`: IQL for
``iql`` and ``pex``, Cal-QL for ``calql``), trained on the configured fine-tuning dataset
(:func:`replication.plan.workflow.finetune_dataset`, ``buffer`` at ``budget.finetune_pause`` by default).
The agent is the validated checkpoint (``learnable_best.d3``) when ``finetune.validation`` is true,
else the last one (``learnable_last.d3``), loaded with :func:`replication.agents.learners.load_learner`
(which restores the gradient-step counter that ``d3rlpy.load_learnable`` resets).

Budget. The run spends *exactly* what the cell's ledger has left,
``finetune_ledger(cfg, env).remaining`` env steps (``T`` minus online training up to the pause,
online/offline validation and newdata where the variant uses them); every env step is charged to the
ledger (``finetune``, one entry per evaluation interval) and the episode running when the budget
ends is cut. With nothing left, :class:`~replication.plan.ledger.BudgetError` names the ledger's items.

Training env. **(choice)** ``make_env(env, seed)`` with the run's own seed, as the online run and
newdata collection build theirs (Meta-World's set of task variations is fixed by that seed; a
different seed would fine-tune on other tasks than the ones evaluated); its first reset is seeded
with ``seed + TRAIN_SEED_OFFSET`` (40000, disjoint from the reporting 10000, validation 20000 and
newdata 30000 offsets), later resets continue the env's own RNG.

Learning curve. The agent's greedy policy (PEX: epsilon-greedy) is evaluated by the reporting evaluator (the online
run's episodes: ``evaluation.episodes`` seeded from ``seed + evaluation.seed_offset``; not charged)
at fine-tuning step 0 (the offline agent, before any online step: the level right at the switch;
for PEX, its policy set with the still untrained online actor, evaluated as PEX evaluates),
every ``evaluation.interval`` fine-tuning env steps, and at the end of the budget. Rows are tidy
(stage ``finetune``, algo = the method, dataset and pause of the offline data, validation ``full``
or ``none``), placed at their ledger-true env step: everything the ledger had spent before
fine-tuning plus the fine-tuning steps so far, so the last row is at ``T``.

Every env step is followed by ``finetune.updates_per_step`` gradient steps (a method may set its
own: :attr:`Agent.updates_per_step`; IQL and Cal-QL: no warm-up, the buffers already hold the
offline dataset). PEX first collects
``finetune.pex_initial_collection_steps`` env steps with its policy set and no update (its
reference's ``initial_collection_steps``, 5,000) **(choice)**: the reference value at paper scale,
scaled down with the budgets of the small configs. Exploration samples from the stochastic policies.

Methods.

* ``iql``: the offline IQL learner continues (weights, optimisers, step counter); its replay buffer
  starts as the offline dataset (size = the dataset's transitions) and online transitions are
  appended to it; batches are uniform over it.
* ``calql``: the offline Cal-QL learner continues; batches mix the offline dataset and an online
  buffer (:class:`MixedSampler`) by ``finetune.calql_mixing``: a number in (0, 1) = the offline
  fraction of every batch (the paper profile's 0.5, as the Cal-QL paper and its launch scripts), or
  ``proportional`` = every sample is offline with probability ``|D| / (|D| + n_online)`` (uniform
  over the union; the Cal-QL code's default, a **(choice)** for a sensitivity run).
* ``pex``: :mod:`replication.agents.pex`; batches ``finetune.pex_offline_fraction`` offline dataset, the
  rest online buffer; the online actor learns by PEX's own update
  (:func:`replication.agents.pex.pex_update`: AWR on the policy set's actions), evaluation is
  epsilon-greedy (``finetune.pex_eval_epsilon``).

Fixed-ratio batches (PEX, Cal-QL with a number) take their online share only once the online
buffer holds at least that many transitions; before that, the whole batch is offline. **(choice)**
(d3rlpy's ``MixedReplayBuffer`` crashes on an empty online buffer; a few online transitions repeated
to fill half a batch would over-weight them.)

Episode ends, as d3rlpy's own ``fit_online`` stores them: each step appends (observation, action,
reward); a termination closes the episode as terminal (its last step is a transition to a zero
next observation), a truncation closes it as a timeout (its last step has no stored next
observation and is not a transition, its reward counts in returns-to-go): the same convention as
the offline datasets.

Cal-QL returns-to-go online. d3rlpy 2.8.0 gives each sampled transition
``rewards_to_go = episode.rewards[index:]`` (the transition picker) and sums them discounted in
``TorchMiniBatch.from_batch``. Its online writer puts a transition into the buffer as soon as the
next step is written, so a transition of the *running* episode would be sampled with the rewards
seen so far (a partial sum that changes as the episode grows). **(choice)** Cal-QL's online buffer
is built with ``write_at_termination=True``: an episode's transitions enter the buffer only when it
ends (terminated, truncated, or cut at the end of the budget), so every online return-to-go is that
of a finished episode, exactly as for the offline data (Cal-QL's own code also computes Monte-Carlo
returns of completed online trajectories). Terminated episodes give the exact return, truncated ones
the discounted sum of their rewards without bootstrap, and sparse-reward environments use the same
failure rule as offline (:func:`replication.agents.learners.transition_picker`). Without a reward
scaler the returns are computed once per finished episode
(:class:`~replication.agents.learners.EpisodeReturnsPicker`, d3rlpy's own sum, so the same float32
values); with one, d3rlpy's picker computes them per sample.

SAC continuation (the baseline) needs no job: the online SAC run is not stopped at the pause, it
continues to ``T`` in the same run, so the aggregation takes the online ``curve.csv`` from the
fine-tuning pause on (:func:`replication.analysis.selection.sac_continuation`).

Analysis C4. ``extended_steps > 0`` continues fine-tuning that many env steps past the budget (the
workflow gives IQL ``analysis.c4.finetune_steps`` minus the budget, so that fine-tuning totals that; the
episode running at ``T`` is cut, then a new one starts). Those curve rows are tagged
``variant_options='extended=1'`` at env steps ``T + k``. The ledger refuses to overdraw ``T``, so
the extension is *not* in ``ledger.json``: ``finetune.json`` records it under ``extension`` with
``charged_to_ledger: false``.

Outputs in ``out_dir``: ``curve.csv`` (tidy), ``ledger.json``, ``learnable_final.d3`` (the learner at
the end of the budget; PEX: its online learner) and ``learnable_extended.d3`` after an extension,
and ``finetune.json`` (run info, method, steps, measured env steps/s and updates/s, evaluation time,
device; for Cal-QL and PEX ``mixing``: the offline share of all batches and that of the first and the
last batch, which :func:`replication.analysis.report.batch_mixing` reports; written last).

Resumable: every ``finetune.checkpoint_interval`` env steps the job writes ``checkpoint/`` (agent,
buffers, the training env mid-episode, ledger, curve, RNG states; :mod:`replication.agents.checkpoint`); a
restarted job continues from it to the same outputs (on the CPU).

Seeding: python, numpy and torch through ``d3rlpy.seed(seed)`` (d3rlpy's buffers sample with
numpy's global RNG), the mixing and PEX choices from their own generator; two runs with one seed
give identical curves on the CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from replication import tidy
from replication.agents import checkpoint, learners
from replication.agents.datasets import Transitions, read_metadata, sha256_of
from replication.agents.job import Job, Timings, runner
from replication.agents.learners import EpisodeReturnsPicker, empty_buffer
from replication.io import read_json
from replication.plan import config
from replication.plan.ledger import BudgetError, Ledger
from replication.plan.schema import episode_steps
from replication.plan.variants import finetune_ledger
from replication.plan.vocabulary import FINETUNE_METHODS, finetune_source
from replication.plan.workflow import finetune_dataset

log = logging.getLogger(__name__)

FINISHED_OUTPUTS = ("curve.csv", "finetune.json")  # the rule's outputs, kept by a finished run

METHODS = tuple(FINETUNE_METHODS)
TRAIN_SEED_OFFSET = 40_000  # (choice) the training env's first reset: seed + 40000
EXTENDED_OPTION = "extended=1"


# ---- batches from two sources ----------------------------------------------------------------


def mixing_rule(value: Any, key: str = "finetune.calql_mixing") -> str | float:
    """``'proportional'`` or an offline fraction in (0, 1); anything else is an error naming ``key``."""
    if value == "proportional":
        return "proportional"
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"config key {key}: {value!r} is neither 'proportional' nor a number in (0, 1)")
    return fraction


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


def calql_online_picker(cfg: dict[str, Any], env_name: str, learner):
    """The transition picker of Cal-QL's online buffer (see the module docstring)."""
    if learner.config.reward_scaler is not None:
        return learners.transition_picker(cfg, env_name, "calql")
    params = config.offline_params(cfg, env_name, "calql")
    failure = learners.sparse_failure_reward(cfg, env_name)
    rule = None if failure is None else (failure, learners.failure_return(params, failure))
    return EpisodeReturnsPicker(float(learner.config.gamma), rule)


# ---- the three methods -----------------------------------------------------------------------


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


class CalQLAgent(MixedAgent):
    method = "calql"


class PEXAgent(MixedAgent):
    """PEX: the online learner of :func:`replication.agents.pex.expand_policy` acting through the policy set."""

    method = "pex"

    def __init__(self, offline_learner, offline_buffer, online_buffer, settings: dict[str, Any], rng, device):
        from replication.agents.pex import PolicyExpansion, check_transfer, expand_policy, parameters_digest

        online = expand_policy(offline_learner, device)
        fraction = mixing_rule(settings["pex_offline_fraction"], "finetune.pex_offline_fraction")
        super().__init__(online, offline_buffer, online_buffer, fraction, rng)
        self.transfer = check_transfer(offline_learner, online)
        self.update_start = int(settings["pex_initial_collection_steps"])
        eval_rng = rng.spawn(1)[0]  # evaluation's draws: a stream of their own
        self.pex = PolicyExpansion(
            offline_learner, online, settings["pex_beta"], rng, device, settings["pex_eval_epsilon"], eval_rng
        )
        self._digest = parameters_digest
        self.offline_digest = parameters_digest(offline_learner.impl.modules.policy)

    def explore(self, obs):
        return self.pex.act(obs)

    def update(self, batch) -> None:
        from replication.agents.pex import pex_update

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


def build_agent(
    cfg: dict[str, Any],
    env_name: str,
    method: str,
    learner,
    transitions: Transitions,
    rng: np.random.Generator,
    device: str = "cpu",
) -> Agent:
    """The fine-tuning agent of ``method`` around the loaded offline ``learner`` and its dataset."""
    import d3rlpy

    if method not in METHODS:
        raise ValueError(f"unknown fine-tuning method {method!r}; valid: {', '.join(METHODS)}")
    if method == "wsrl":  # its own source check (CQL or Cal-QL) and buffers: replication.agents.wsrl
        from replication.agents.wsrl import build_wsrl_agent

        return build_wsrl_agent(cfg, env_name, learner, transitions, rng, device)
    expected = d3rlpy.algos.CalQL if method == "calql" else d3rlpy.algos.IQL
    if type(learner) is not expected:
        raise TypeError(f"{method} fine-tuning starts from a {expected.__name__} agent, got {type(learner).__name__}")
    cache = episode_steps(cfg, env_name) + 1
    ft = cfg["finetune"]
    if method == "iql":
        return IQLAgent(learner, learners.replay_buffer(transitions), cache)
    if method == "calql":
        offline_buffer = learners.offline_buffer(cfg, env_name, "calql", transitions)
        online_buffer = empty_buffer(
            offline_buffer, cache, calql_online_picker(cfg, env_name, learner), write_at_termination=True
        )
        return CalQLAgent(learner, offline_buffer, online_buffer, mixing_rule(ft["calql_mixing"]), rng)
    offline_buffer = learners.replay_buffer(transitions)
    online_buffer = empty_buffer(offline_buffer, cache)
    return PEXAgent(learner, offline_buffer, online_buffer, ft, rng, device)


# ---- the job ---------------------------------------------------------------------------------


def budget_ledger(cfg: dict[str, Any], env_name: str) -> Ledger:
    """The ledger fine-tuning starts from; an error naming its items when nothing is left."""
    ledger = finetune_ledger(cfg, env_name)
    if ledger.remaining <= 0:
        raise BudgetError(
            f"no fine-tuning budget left in {env_name}: before fine-tuning the variant has spent {ledger.spent} of "
            f"budget.total_steps={ledger.total} env steps ({ledger.describe()}); pause earlier or lower the "
            "validation fractions / newdata.size"
        )
    return ledger


def check_pex_start(cfg: dict[str, Any], method: str, budget_steps: int) -> None:
    """PEX must reach its first update within the fine-tuning budget: else a clear error."""
    start = int(cfg["finetune"]["pex_initial_collection_steps"])
    if method == "pex" and start >= budget_steps:
        raise ValueError(
            f"finetune.pex_initial_collection_steps={start} leaves PEX no update in its fine-tuning budget of "
            f"{budget_steps} env steps; lower it below the budget"
        )


@dataclasses.dataclass
class FinetuneTimings(Timings):
    act_seconds: float = 0.0
    env_seconds: float = 0.0
    store_seconds: float = 0.0
    sample_seconds: float = 0.0
    update_seconds: float = 0.0
    loop_seconds: float = 0.0  # the whole training loop, evaluations excluded
    eval_seconds: float = 0.0
    setup_seconds: float = 0.0
    env_steps: int = 0
    updates: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "env_steps_per_second": self.env_steps / max(self.loop_seconds, 1e-9),
            "updates_per_second": self.updates / max(self.update_seconds, 1e-9),
            "updates_per_second_with_sampling": self.updates / max(self.update_seconds + self.sample_seconds, 1e-9),
        }


def updates_per_step(agent: Agent, cfg: dict[str, Any]) -> int:
    """Gradient updates after each env step: the agent's own number, else ``finetune.updates_per_step``."""
    own = agent.updates_per_step
    return int(cfg["finetune"]["updates_per_step"] if own is None else own)


def join_options(*options: str) -> str:
    return ";".join(o for o in options if o)


class Finetune(Job):
    """One fine-tuning job (see the module docstring); :meth:`run` does the work.

    ``variant_options``: tags of every curve row (the job's own, in its key); ``options``: an
    analysis cell's, tagged on the written tidy file.
    """

    stage = "finetune"

    def __init__(
        self,
        cfg: dict[str, Any],
        env_name: str,
        seed: int,
        method: str,
        offline_dir: Path | str,
        dataset_path: Path | str,
        out_dir: Path | str,
        extended_steps: int = 0,
        progress: bool | None = None,
        variant_options: str = "",
        options: str = "",
    ):
        from replication.agents import wsrl  # here: wsrl builds on this module

        if method not in METHODS:
            raise ValueError(f"unknown fine-tuning method {method!r}; valid: {', '.join(METHODS)}")
        if int(extended_steps) != extended_steps or extended_steps < 0:
            raise ValueError(f"extended_steps must be a non-negative integer, got {extended_steps!r}")
        super().__init__(cfg, env_name, seed, out_dir, progress, options)
        self.method = method
        self.source = finetune_source(cfg, method)
        self.offline_dir = Path(offline_dir)
        self.dataset_path = Path(dataset_path)
        self.extended_steps = int(extended_steps)
        self.variant_options = variant_options
        self.ledger = budget_ledger(cfg, env_name)  # fails fast, before anything is loaded
        check_pex_start(cfg, method, self.ledger.remaining)
        wsrl.check_start(cfg, method, self.ledger.remaining)
        self.start_spent = self.ledger.spent
        self.budget_steps = self.ledger.remaining
        self.dataset = finetune_dataset(cfg)
        self.which = "best" if cfg["finetune"]["validation"] else "last"
        self.interval = int(cfg["evaluation"]["interval"])
        self.updates_per_step = int(cfg["finetune"]["updates_per_step"])
        self.timings = FinetuneTimings()
        self.rows: list[dict[str, Any]] = []
        self.agent: Agent | None = None
        self.env = None
        self.obs: np.ndarray | None = None
        self.checkpoint_interval = int(cfg["finetune"]["checkpoint_interval"])
        self.budget_timings: dict[str, Any] | None = None
        self.resumed_from: list[tuple[str, int]] = []

    # ---- setup

    def check_offline_run(self) -> dict[str, Any]:
        """The offline run's validation record, checked against what this job expects."""
        path = self.offline_dir / "validation.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run the offline {self.source} job first")
        validation = read_json(path)
        expected = {"algo": self.source, "dataset": self.dataset.label, "pause": self.dataset.pause}
        for key, value in expected.items():
            if key in validation and validation[key] != value:
                raise ValueError(
                    f"{self.offline_dir}: offline run has {key}={validation[key]!r}; {self.method} fine-tuning "
                    f"needs {key}={value!r}"
                )
        return validation

    def prepare(self) -> dict[str, Any] | None:
        """Env, dataset, seeds, the offline learner and its agent, evaluator; a checkpoint restored.

        Returns the position of the checkpoint to continue from, or ``None``.
        """
        import d3rlpy

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.validation = self.check_offline_run()
        self.env = self.make_env()  # first: the dataset check reads its spaces
        transitions, self.meta = self.load_dataset(self.dataset_path, self.dataset)
        d3rlpy.seed(self.seed)
        rng = np.random.default_rng([self.seed, TRAIN_SEED_OFFSET])
        learner = learners.load_learner(self.offline_dir, self.which, self.device)
        self.start_grad_step = int(learner.grad_step)
        self.agent = build_agent(self.cfg, self.env_name, self.method, learner, transitions, rng, self.device)
        self.updates_per_step = updates_per_step(self.agent, self.cfg)
        del transitions
        self.obs = self.env.reset(seed=self.seed + TRAIN_SEED_OFFSET)[0]
        self.evaluator = self.make_evaluator()
        self.key = self.finetune_key(self.meta.get("sha256"))
        self.offline_episodes = checkpoint.buffer_episodes(self.agent)  # a checkpoint refers to them
        return self.restore_checkpoint()

    def curve_row(self) -> dict[str, Any]:
        return self.base_row(
            algo=self.method,
            dataset=self.dataset.label,
            validation="full" if self.cfg["finetune"]["validation"] else "none",
            selection="",
            pause=self.dataset.pause,
        )

    def evaluate(self, env_step: int, options: str) -> None:
        with self.timings.timed("eval_seconds"):
            records = self.evaluator(self.agent.greedy)
        self.rows += tidy.rows_from_records({**self.curve_row(), "variant_options": options}, records, env_step)

    # ---- checkpoints (replication.agents.checkpoint)

    CHECKPOINTED = ("agent", "env", "ledger", "rows", "timings", "budget_timings", "resumed_from")

    def finetune_key(self, dataset_sha: str | None) -> str:
        """The job key: settings, the offline learner's file and the dataset, extension and options."""
        learnable = self.offline_dir / f"learnable_{self.which}.d3"
        inputs = (sha256_of(learnable), dataset_sha, self.extended_steps, self.variant_options)
        return self.job_key(self.method, self.which, *inputs)

    def save_checkpoint(self, phase: str, step: int, last: int, obs: np.ndarray) -> None:
        objects = {name: getattr(self, name) for name in self.CHECKPOINTED}
        objects["position"] = {"phase": phase, "step": step, "last": last, "obs": obs}
        where, what = {"phase": phase, "step": step}, f"{self.method} fine-tuning"
        checkpoint.save_agent(self.ckpt_dir, self.key, what, where, objects, self.agent, self.offline_episodes)

    def restore_checkpoint(self) -> dict[str, Any] | None:
        """Continue from the job's checkpoint: its position (phase, step, last evaluation, observation) or ``None``."""
        objects = checkpoint.restore_agent(self.ckpt_dir, self.key, self.agent, self.offline_episodes)
        if objects is None:
            return None
        for name in self.CHECKPOINTED:
            setattr(self, name, objects[name])
        position = objects["position"]
        self.resumed_from.append((position["phase"], position["step"]))
        return position

    # ---- the loop

    def segment(
        self, steps: int, start_step: int, options: str, charge: bool, bar=None, phase: str = "", at: dict | None = None
    ) -> None:
        """``steps`` env steps of fine-tuning (each with its updates), evaluated every interval and at the end.

        Starts a new episode; the episode running after the last step is cut (a timeout).
        ``charge``: charge the steps to the ledger (the budget) or not (the C4 extension). Every
        ``finetune.checkpoint_interval`` steps the job is checkpointed as ``phase``; ``at``: the
        position of a checkpoint to continue from.
        """
        agent, env, t = self.agent, self.env, self.timings
        clock = time.perf_counter
        loop_start = clock()
        eval_before = t.eval_seconds
        obs = at["obs"] if at else self.obs if self.obs is not None else env.reset()[0]
        first, last = (at["step"], at["last"]) if at else (0, 0)
        per_step = self.updates_per_step
        for step in range(first + 1, steps + 1):
            t0 = clock()
            action = agent.explore(obs)
            t1 = clock()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            t2 = clock()
            agent.store(obs, action, float(reward))
            if terminated or truncated:
                agent.end_episode(bool(terminated))
                obs = env.reset()[0]
            elif step == steps:
                agent.end_episode(False)  # the budget (or the extension) ends: cut the running episode
            else:
                obs = next_obs
            t3 = clock()
            t.act_seconds += t1 - t0
            t.env_seconds += t2 - t1
            t.store_seconds += t3 - t2
            updates = per_step if t.env_steps >= agent.update_start else 0
            for _ in range(updates):
                t4 = clock()
                batch = agent.batch()
                t5 = clock()
                agent.update(batch)
                t.sample_seconds += t5 - t4
                t.update_seconds += clock() - t5
            t.env_steps += 1
            t.updates += updates
            if bar is not None:
                bar.update(1)
            if step % self.interval == 0 or step == steps:
                if charge:
                    self.ledger.charge("finetune", step - last, f"fine-tuning steps {last + 1}-{step}")
                    env_step = self.ledger.spent
                else:
                    env_step = start_step + step
                last = step
                self.evaluate(env_step, options)
            if phase and checkpoint.due(step, self.checkpoint_interval, steps):
                t.loop_seconds += clock() - loop_start - (t.eval_seconds - eval_before)
                self.save_checkpoint(phase, step, last, obs)
                loop_start, eval_before = clock(), t.eval_seconds
        self.obs = None  # the next segment starts a new episode
        t.loop_seconds += clock() - loop_start - (t.eval_seconds - eval_before)

    def train(self, at: dict[str, Any] | None) -> dict[str, Any] | None:
        """Fine-tune for the budget, then the C4 extension (if any); returns the extension's record."""
        done = 0 if at is None else at["step"] + (self.budget_steps if at["phase"] == "extended" else 0)
        bar = self.progress_bar(self.budget_steps + self.extended_steps, done, f"{self.method} {self.env_name}")
        if at is None:
            self.evaluate(self.ledger.spent, self.variant_options)  # fine-tuning step 0: the offline agent
        if at is None or at["phase"] == "budget":
            options = self.variant_options
            self.segment(self.budget_steps, self.start_spent, options, charge=True, bar=bar, phase="budget", at=at)
            at = None
            if self.ledger.remaining != 0:
                raise AssertionError(f"fine-tuning left {self.ledger.remaining} env steps of the budget unspent")
            self.budget_timings = self.timings.summary()
            learners.save_learnable(self.agent.learner, self.out_dir / "learnable_final.d3")
        extension = None
        if self.extended_steps:
            options = join_options(self.variant_options, EXTENDED_OPTION)
            spent = self.ledger.spent
            self.segment(self.extended_steps, spent, options, charge=False, bar=bar, phase="extended", at=at)
            learners.save_learnable(self.agent.learner, self.out_dir / "learnable_extended.d3")
            extension = {
                "env_steps": self.extended_steps,
                "env_step_range": [self.ledger.spent, self.ledger.spent + self.extended_steps],
                "charged_to_ledger": False,
                "variant_options": EXTENDED_OPTION,
                "note": "analysis C4: fine-tuning continued beyond the total budget T; these env steps are outside "
                "the ledger, which never exceeds T",
            }
        if bar is not None:
            bar.close()
        self.env.close()
        self.evaluator.close()
        return extension

    def write_outputs(self, extension: dict[str, Any] | None, start: float) -> dict[str, Any]:
        """``curve.csv``, ``ledger.json`` and ``finetune.json`` (written last)."""
        self.write_tidy(self.rows, "curve.csv")
        self.ledger.save(self.out_dir / "ledger.json")
        budget_timings, e = self.budget_timings, self.cfg["evaluation"]
        return self.write_summary(
            "finetune.json",
            {
                "method": self.method,
                "source_algo": self.source,
                "offline_dir": str(self.offline_dir),
                "offline_checkpoint": self.which,
                "offline_checkpoint_step": self.validation.get(f"{self.which}_step"),
                "start_grad_step": self.start_grad_step,
                "final_grad_step": int(self.agent.learner.grad_step),
                "dataset": self.dataset.label,
                "pause": self.dataset.pause,
                "dataset_file": str(self.dataset_path),
                "dataset_sha256": self.meta.get("sha256"),
                "dataset_transitions": self.meta.get("transitions"),
                "initial_buffer_transitions": int(self.agent.initial_transitions),
                "train_env": {"make_env_seed": self.seed, "first_reset_seed": self.seed + TRAIN_SEED_OFFSET},
                "ledger_before": finetune_ledger(self.cfg, self.env_name).to_dict(),
                "budget_env_steps": self.budget_steps,
                "env_steps": self.budget_steps,
                "updates_per_step": self.updates_per_step,
                "updates": budget_timings["updates"],
                "extension": extension,
                "evaluation": {"interval": self.interval, "episodes": e["episodes"], "seed_offset": e["seed_offset"]},
                "returns_to_go": learners.returns_to_go_rule(self.cfg, self.env_name, self.source),
                **self.agent.stats(),
                "timings": {**budget_timings, "with_extension": self.timings.summary() if extension else None},
                "total_seconds": time.perf_counter() - start,
                "resumed_from": self.resumed_from,
            },
        )

    def run(self) -> dict[str, Any]:
        """Set up, fine-tune, write the outputs; returns the summary written to ``finetune.json``.

        A run that finished before with the same key and code (its batch job killed later) puts its
        outputs back instead (:func:`replication.agents.checkpoint.take_finished`)."""
        start = time.perf_counter()
        key = self.finetune_key(read_metadata(self.dataset_path).get("sha256"))
        if checkpoint.take_finished(self.out_dir, key, FINISHED_OUTPUTS):
            return read_json(self.out_dir / "finetune.json")
        self.start(d3rlpy=True)
        at = self.prepare()
        self.timings.setup_seconds = time.perf_counter() - start
        extension = self.train(at)
        summary = self.write_outputs(extension, start)
        checkpoint.keep_finished(self.out_dir, self.key, FINISHED_OUTPUTS)
        checkpoint.remove_checkpoint(self.ckpt_dir)
        budget_timings = self.budget_timings
        log.info(
            "%s %s seed %d: %d env steps, %.0f env steps/s, %.0f updates/s",
            self.method,
            self.env_name,
            self.seed,
            self.budget_steps,
            budget_timings["env_steps_per_second"],
            budget_timings["updates_per_second"],
        )
        return summary


run_finetune = runner(
    Finetune,
    """Fine-tune ``method`` online from the offline agent in ``offline_dir`` for the cell's remaining budget.

    ``dataset_path``: the offline dataset the agent was trained on (the fine-tuning buffers start
    from it). ``extended_steps``: analysis C4, env steps beyond the budget (rows tagged
    ``extended=1``, outside the ledger). ``variant_options``: extra tags for every row (e.g.
    ``reward=binary``); ``options``: an analysis cell's, tagged on the written curve. Returns the
    summary written to ``finetune.json``.
    """,
)
