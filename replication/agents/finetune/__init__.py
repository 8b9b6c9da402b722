"""Online fine-tuning from the offline agent: IQL fine-tuning, PEX and Cal-QL fine-tuning.

The package: :mod:`~replication.agents.finetune.base` (the :class:`Agent` the loop drives, batches
from two buffers, the registry of methods), :mod:`~replication.agents.finetune.loop` (the job: the
budget loop, the C4 extension, checkpoints) and one module per method, holding all that is its own
(:mod:`~replication.agents.finetune.iql`, :mod:`~replication.agents.finetune.calql`,
:mod:`~replication.agents.finetune.pex`, :mod:`~replication.agents.finetune.wsrl`): its agent and
its builder, registered with :func:`~replication.agents.finetune.base.register`.

Settings. The job resolves its settings once, at its start: a
:class:`~replication.plan.settings.FinetuneSettings` holding the method's own settings (its class in
:data:`replication.plan.settings.METHOD_SETTINGS`), the offline learner's
(:class:`~replication.plan.settings.LearnerSettings`) and the shared ``finetune`` keys; the builder
and the agent get that object, never the config.

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
ends is cut. Before anything loads, the job runs the checks the config ran
(:func:`replication.plan.settings.check_finetune_start`): with nothing left,
:class:`~replication.plan.settings.FinetuneBudgetError` names the ledger's items and the fix; a
warm-up (PEX's, WSRL's) that leaves no update in the budget is refused naming its key.

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
* ``pex``: :mod:`replication.agents.finetune.pex`; batches ``finetune.pex_offline_fraction``
  offline dataset, the rest online buffer; the online actor learns by PEX's own update
  (:func:`replication.agents.finetune.pex.pex_update`: AWR on the policy set's actions), evaluation is
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

# Each method module registers its method as it is imported (a new method: one module, one name here).
from replication.agents.finetune import calql, iql, pex, wsrl  # noqa: F401
from replication.agents.finetune.base import METHODS, Agent, Method, MixedAgent, MixedSampler, mixing_rule, register
from replication.agents.finetune.loop import (
    EXTENDED_OPTION,
    FINISHED_OUTPUTS,
    TRAIN_SEED_OFFSET,
    Finetune,
    FinetuneTimings,
    build_agent,
    run_finetune,
    updates_per_step,
)

__all__ = [
    "EXTENDED_OPTION",
    "FINISHED_OUTPUTS",
    "METHODS",
    "TRAIN_SEED_OFFSET",
    "Agent",
    "Finetune",
    "FinetuneTimings",
    "Method",
    "MixedAgent",
    "MixedSampler",
    "build_agent",
    "mixing_rule",
    "register",
    "run_finetune",
    "updates_per_step",
]
