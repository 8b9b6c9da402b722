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
  use :func:`replication.agents.learners.load_learner`, which restores it). Other checkpoints are
  not kept.
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

Resumable: every ``offline.checkpoint_interval`` gradient steps the job writes ``checkpoint/``
(learner with optimisers, validation so far, the best files so far, RNG states;
:mod:`replication.agents.checkpoint`); a restarted job continues from it to the same outputs (on the CPU).

Training is d3rlpy's own update step in d3rlpy's own order (the loop of ``fitter``: one
``sample_transition_batch`` and one ``update`` per step, after the same scaler building and model
creation), without its logger; seeded (``d3rlpy.seed``) after the dataset is built and before the
learner is, it gives exactly the parameters of a plain ``fit`` in that order (checked by the tests
and ``benchmarks/bench_offline.py``). d3rlpy writes no log directory.

The d3rlpy side (learners, buffers, Cal-QL's returns-to-go, exports) is :mod:`replication.agents.learners`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from replication import tidy
from replication.agents import checkpoint, learners
from replication.agents.datasets import DatasetError, read_metadata
from replication.agents.evaluation import EpisodeRecord
from replication.agents.job import Job, Timings, runner
from replication.agents.policies import load_policy
from replication.io import read_json, write_json
from replication.plan.ledger import BudgetError, Ledger
from replication.plan.schema import episode_steps, validation_checkpoints, validation_costs
from replication.plan.settings import learner_settings
from replication.plan.variants import OfflineDataset, recommendation_ledger
from replication.plan.workflow import parse_dataset_key

log = logging.getLogger(__name__)

CHECK_BATCH = 256  # dataset observations used to check every policy export


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
class OfflineTimings(Timings):
    train_seconds: float = 0.0
    validation_seconds: float = 0.0
    evaluation_seconds: float = 0.0
    setup_seconds: float = 0.0


_LOOP_STATE = ("scores", "validation_records", "best_step", "done", "timings")  # what a checkpoint keeps


# ---- the job -------------------------------------------------------------------------------------


class OfflineJob(Job):
    """One learner's offline job (see the module docstring); :meth:`run` does the work."""

    stage = "offline"

    def __init__(
        self,
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
        options: str = "",
    ):
        super().__init__(cfg, env_name, seed, out_dir, progress, options)
        self.algo = algo
        self.dataset_path = Path(dataset_path)
        self.online_pause = Path(online_dir) / f"pause_{dataset.pause}"
        self.dataset = dataset
        self.precompute_returns = precompute_returns
        self.settings = learner_settings(cfg, env_name, algo)  # the learner's settings, read once
        self.params = self.settings.params
        self.gradient_steps = int(self.params["gradient_steps"])
        self.timings = OfflineTimings()
        self.scores: list[float] = []
        self.validation_records: dict[int, list[EpisodeRecord]] = {}
        self.best_step: int | None = None
        self.done = 0  # gradient steps trained
        self.resumed = False

    # ---- steps

    def prepare(self) -> None:
        """Outputs cleared, dataset verified, buffer and learner built (seeded), a checkpoint restored."""
        self.start(d3rlpy=True)
        import d3rlpy

        cfg, env_name, out_dir = self.cfg, self.env_name, self.out_dir
        if out_dir.resolve() in {self.dataset_path.resolve().parent, self.online_pause.resolve()}:
            raise ValueError(f"out_dir {out_dir} holds the run's inputs; give the offline job its own directory")
        out_dir.mkdir(parents=True, exist_ok=True)
        clear_outputs(out_dir)
        self.key = job_key(cfg, env_name, self.seed, self.algo, self.dataset_path, self.dataset)
        # one env for every learner of the job (each episode is reset with its own seed); built first,
        # so that the dataset check reads its spaces instead of building another env
        env = self.make_env(shared=True)
        transitions, self.meta = self.load_dataset(self.dataset_path, self.dataset)
        self.variants, self.skipped = recommendation_variants(cfg, env_name, self.dataset)
        self.online_val = self.online_validation()
        v = cfg["validation"]
        total = cfg["budget"]["total_steps"]
        count = validation_checkpoints(v["offline_fraction"], total, v["episodes"], episode_steps(cfg, env_name))
        self.steps = checkpoint_steps(self.gradient_steps, count)
        self.charged = validation_costs(cfg, env_name)[1]
        rng = np.random.default_rng(self.seed)
        self.check_obs = transitions.observations[
            rng.choice(len(transitions), min(CHECK_BATCH, len(transitions)), False)
        ]
        self.buffer = learners.offline_buffer(self.settings, transitions, self.precompute_returns)
        expected = len(transitions) - int(transitions.timeouts.sum())
        if self.buffer.transition_count != expected:
            raise DatasetError(f"d3rlpy sees {self.buffer.transition_count} transitions, the dataset holds {expected}")
        del transitions
        # seeded after the dataset is built (d3rlpy's dataset construction draws from numpy's global RNG):
        # the same order as ``dataset = load_dataset(...); d3rlpy.seed(seed); algo.fit(dataset, ...)``
        d3rlpy.seed(self.seed)
        self.learner = learners.build_learner(self.settings, self.device)
        learners.prepare(self.learner, self.buffer)
        self.validator = self.make_evaluator("validation", env)
        restored = checkpoint.restore_offline(self.ckpt_dir, self.key, self.learner, out_dir)
        if restored is not None:
            for name in _LOOP_STATE:
                setattr(self, name, restored[name])
        self.resumed = restored is not None

    def online_validation(self) -> dict[str, Any] | None:
        """The online run's validation at the dataset's pause, where a best-of variant needs it."""
        if not any(selection == "best-of" for _, selection, _ in self.variants):
            return None
        path = self.online_pause / "validation.json"
        if not path.exists():
            raise FileNotFoundError(f"best-of needs the online validation {path}; run the online phase")
        return read_json(path)

    def save_checkpoint(self) -> None:
        state = {name: getattr(self, name) for name in _LOOP_STATE}
        checkpoint.save_offline(self.ckpt_dir, self.key, self.learner, self.out_dir, state)

    def train(self) -> None:
        """Train to ``G`` gradient steps, validating at the checkpoint steps, checkpointing the job."""
        desc = f"{self.algo} {self.env_name} {self.dataset.label}@{self.dataset.pause}"
        bar = self.progress_bar(self.gradient_steps, self.done, desc)
        candidate = self.out_dir / "policy_candidate.pt"
        interval = int(self.cfg["offline"]["checkpoint_interval"])
        for step in checkpoint.boundaries(self.steps, interval, self.gradient_steps):
            if step <= self.done:
                continue
            with self.timings.timed("train_seconds"):
                learners.train(self.learner, self.buffer, step - self.done, bar)
                self.done = step
            if step not in self.steps:  # a checkpoint only
                self.save_checkpoint()
                continue
            with self.timings.timed("validation_seconds"):
                self.validate(step, candidate)
            if checkpoint.due(step, interval, self.gradient_steps):
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        learners.save_learnable(self.learner, self.out_dir / "learnable_last.d3")
        os.replace(candidate, self.out_dir / "policy_last.pt")

    def validate(self, step: int, candidate: Path) -> None:
        """Validate the learner at checkpoint ``step``; the best so far keeps its learner and policy."""
        policy = learners.export_policy(self.learner, candidate, self.check_obs)
        records = self.validator(policy)
        self.validation_records[step] = records
        self.scores.append(mean_score(records))
        if self.best_step is None or self.scores[-1] > max(self.scores[:-1]):  # ties: the earliest
            self.best_step = step
            learners.save_learnable(self.learner, self.out_dir / "learnable_best.d3")
            shutil.copyfile(candidate, self.out_dir / "policy_best.pt")

    def write_validation(self) -> dict[str, Any]:
        """``validation.json``: every checkpoint's score and records, the best and the last."""
        records = self.validation_records
        actual = sum(r.env_steps for recs in records.values() for r in recs)
        if actual > self.charged:
            raise AssertionError(f"offline validation spent {actual} env steps, more than the {self.charged} charged")
        validation = {
            "algo": self.algo,
            "dataset": self.dataset.label,
            "pause": self.dataset.pause,
            "gradient_steps": self.gradient_steps,
            "checkpoints": self.steps,
            "scores": self.scores,
            "episodes_per_checkpoint": self.cfg["validation"]["episodes"],
            "best_step": self.best_step,
            "best_score": self.scores[self.steps.index(self.best_step)],
            "last_step": self.steps[-1],
            "last_score": self.scores[-1],
            "charged_env_steps": self.charged,
            "actual_env_steps": actual,
            "records": {str(s): [dataclasses.asdict(r) for r in recs] for s, recs in records.items()},
        }
        write_json(self.out_dir / "validation.json", validation)
        return validation

    def evaluate_offline(self) -> dict[str, list[EpisodeRecord]]:
        """Reporting episodes of the offline policies the variants recommend (``best``, ``last``)."""
        evaluator = self.make_evaluator("evaluation", self.validator.env)
        needed = {"best" if mode == "full" else "last" for mode, _, _ in self.variants}
        records: dict[str, list[EpisodeRecord]] = {}
        for which in sorted(needed):
            # the same policy on the same seeds gives the same episodes: best == last is evaluated once
            same = self.best_step == self.steps[-1] and records
            policy = self.out_dir / f"policy_{which}.pt"
            records[which] = next(iter(records.values())) if same else evaluator(load_policy(policy))
        return records

    def recommend(self, validation: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Every variant's recommendation: ``recommend.csv``, ``records.json`` and its ledger; returns
        the best-of choice (or ``None``) and the ledgers."""
        with self.timings.timed("evaluation_seconds"):
            offline_records = self.evaluate_offline()
        base = self.base_row(stage="recommend", algo=self.algo, dataset=self.dataset.label, pause=self.dataset.pause)
        rows: list[dict[str, Any]] = []
        episodes: dict[str, Any] = {}
        ledgers: dict[str, Any] = {}
        best_of = None
        for validation_mode, selection, ledger in self.variants:
            key = f"{validation_mode}/{selection}"
            if selection == "offline":
                source = "offline-best" if validation_mode == "full" else "offline-last"
                records = offline_records["best" if validation_mode == "full" else "last"]
            else:
                best_of = self.best_of(validation)
                source = best_of["chosen"]
                if source == "offline-best":
                    records = offline_records["best"]
                else:
                    records = [EpisodeRecord(**r) for r in read_json(self.online_pause / "eval_best.json")]
            row_base = {**base, "validation": validation_mode, "selection": selection}
            rows += tidy.rows_from_records(row_base, records, ledger.spent)
            episodes[key] = {"source": source, "env_step": ledger.spent, "records": records}
            ledgers[key] = ledger.to_dict()
            ledger.save(self.out_dir / f"ledger_{validation_mode}_{selection}.json")
        self.write_tidy(rows, "recommend.csv")
        write_json(self.out_dir / "records.json", episodes)
        return best_of, ledgers

    def best_of(self, validation: dict[str, Any]) -> dict[str, Any]:
        """Best-of: the offline best only where its validation score beats the online best's."""
        online_score, offline_score = float(self.online_val["best_score"]), validation["best_score"]
        use_offline = offline_score > online_score  # (choice) ties keep the online policy
        return {
            "online_best_step": self.online_val["best_step"],
            "online_validation_score": online_score,
            "offline_best_step": self.best_step,
            "offline_validation_score": offline_score,
            "chosen": "offline-best" if use_offline else "online-best",
            "tie_rule": "online kept on ties",
        }

    def run(self) -> dict[str, Any]:
        """Prepare, train and validate, recommend; returns the summary written to ``offline.json``."""
        start = time.perf_counter()
        self.prepare()
        self.timings.setup_seconds = time.perf_counter() - start
        self.train()
        validation = self.write_validation()
        best_of, ledgers = self.recommend(validation)
        summary = self.write_summary(
            "offline.json",
            {
                "algo": self.algo,
                "dataset": self.dataset.label,
                "pause": self.dataset.pause,
                "collector": self.dataset.collector,
                "dataset_file": str(self.dataset_path),
                "dataset_sha256": self.meta.get("sha256"),
                "dataset_transitions": self.meta.get("transitions"),
                "params": self.params,
                "gradient_steps": self.gradient_steps,
                "checkpoints": self.steps,
                "best_step": self.best_step,
                "returns_to_go": learners.returns_to_go_rule(self.settings),
                "job_key": self.key,
                "code": checkpoint.code_fingerprint(),  # a restarted multi-learner job keeps it only if equal
                "resumed": self.resumed,
                "best_of": best_of,
                "ledgers": ledgers,
                "skipped_variants": self.skipped,
                "timings": {
                    **self.timings.summary(),
                    "gradient_steps_per_second": self.gradient_steps / max(self.timings.train_seconds, 1e-9),
                    "total_seconds": time.perf_counter() - start,
                },
            },
        )
        checkpoint.remove_checkpoint(self.ckpt_dir)
        log.info(
            "%s %s seed %d %s@%d: best checkpoint %d of %d, %.1f gradient steps/s",
            self.algo,
            self.env_name,
            self.seed,
            self.dataset.label,
            self.dataset.pause,
            self.best_step,
            self.gradient_steps,
            summary["timings"]["gradient_steps_per_second"],
        )
        return summary


run_offline = runner(
    OfflineJob,
    """Train ``algo`` on ``dataset_path``, validate its checkpoints, evaluate the recommendations.

    ``online_dir`` is the cell's online run (``pause_<dataset.pause>/validation.json`` and
    ``eval_best.json`` for best-of). ``precompute_returns``: Cal-QL's returns-to-go computed once
    per episode (:class:`~replication.agents.learners.ReturnsToGoPicker`; the same values, faster).
    ``options``: an analysis cell's, tagged on the tidy rows. Returns the summary written to
    ``offline.json``.
    """,
)


def run_offline_job(
    cfg: dict[str, Any],
    env_name: str,
    seed: int,
    algos: list[str],
    dataset_key: str,
    dataset_path: Path | str,
    online_dir: Path | str,
    out_dir: Path | str,
    options: str = "",
) -> dict[str, Any]:
    """Every learner of ``algos`` on one dataset of a cell, each in ``out_dir/<algo>``.

    A restarted job keeps the learners it had finished. Writes the learners' combined
    ``recommend.csv`` and ``offline.json`` (the learners' summaries); returns the latter.
    """
    dataset = parse_dataset_key(cfg, dataset_key)
    unknown = sorted(set(algos) - set(learners.ALGOS))
    if unknown or not algos:
        raise ValueError(f"--algo: unknown offline learner(s) {unknown}; valid: {', '.join(learners.ALGOS)}")
    out = Path(out_dir)
    summaries = {}
    for algo in algos:
        finished = finished_learner(out / algo, job_key(cfg, env_name, seed, algo, dataset_path, dataset))
        if finished is not None:  # a kill between its summary and its checkpoint's removal left one
            checkpoint.remove_checkpoint(out / algo / checkpoint.CHECKPOINT_DIR)
        else:
            finished = run_offline(
                cfg, env_name, seed, algo, dataset_path, online_dir, dataset, out / algo, options=options
            )
        summaries[algo] = finished
    tidy.write(tidy.read([out / a / "recommend.csv" for a in algos]), out / "recommend.csv")
    summary = {"algos": algos, "dataset": dataset_key, "summaries": summaries}
    write_json(out / "offline.json", summary)
    return summary


def finished_learner(out_dir: Path | str, key: str) -> dict[str, Any] | None:
    """The summary of a learner that already finished with ``key`` and this code in ``out_dir`` (a
    restarted multi-learner job keeps it), or ``None``."""
    path = Path(out_dir) / "offline.json"
    if not path.exists():
        return None
    summary = read_json(path)
    return summary if checkpoint.made_here(summary, key, "job_key") else None
