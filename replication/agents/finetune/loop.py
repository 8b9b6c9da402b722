"""The fine-tuning job: the budget loop every method runs (see :mod:`replication.agents.finetune`)."""

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
from replication.agents.finetune import base
from replication.agents.finetune.base import Agent
from replication.agents.job import Job, Timings, runner
from replication.io import read_json
from replication.plan.settings import FinetuneSettings, check_finetune_start, finetune_settings
from replication.plan.variants import finetune_ledger
from replication.plan.workflow import finetune_dataset

log = logging.getLogger(__name__)

FINISHED_OUTPUTS = ("curve.csv", "finetune.json")  # the rule's outputs, kept by a finished run

TRAIN_SEED_OFFSET = 40_000  # (choice) the training env's first reset: seed + 40000
EXTENDED_OPTION = "extended=1"


def build_agent(
    settings: FinetuneSettings, learner, transitions: Transitions, rng: np.random.Generator, device: str = "cpu"
) -> Agent:
    """The fine-tuning agent of ``settings.method`` (from the registry) around the loaded offline ``learner``
    and its dataset."""
    return base.get(settings.method).build(settings, learner, transitions, rng, device)


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


def updates_per_step(agent: Agent, default: int) -> int:
    """Gradient updates after each env step: the agent's own number, else ``default`` (the job's
    ``finetune.updates_per_step``)."""
    own = agent.updates_per_step
    return int(default if own is None else own)


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
        base.get(method)  # an unknown method: an error listing the registered ones
        if int(extended_steps) != extended_steps or extended_steps < 0:
            raise ValueError(f"extended_steps must be a non-negative integer, got {extended_steps!r}")
        super().__init__(cfg, env_name, seed, out_dir, progress, options)
        self.settings = finetune_settings(cfg, env_name, method)  # the config read once; the agent gets this
        self.method = method
        self.source = self.settings.source.algo
        self.offline_dir = Path(offline_dir)
        self.dataset_path = Path(dataset_path)
        self.extended_steps = int(extended_steps)
        self.variant_options = variant_options
        check_finetune_start(cfg, env_name, self.settings.own)  # fails fast, before anything loads; as the config
        self.ledger = finetune_ledger(cfg, env_name)
        self.start_spent = self.ledger.spent
        self.budget_steps = self.ledger.remaining
        self.dataset = finetune_dataset(cfg)
        self.which = "best" if self.settings.validation else "last"
        self.interval = int(cfg["evaluation"]["interval"])
        self.updates_per_step = self.settings.updates_per_step
        self.timings = FinetuneTimings()
        self.rows: list[dict[str, Any]] = []
        self.agent: Agent | None = None
        self.env = None
        self.obs: np.ndarray | None = None
        self.checkpoint_interval = self.settings.checkpoint_interval
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
        self.agent = build_agent(self.settings, learner, transitions, rng, self.device)
        self.updates_per_step = updates_per_step(self.agent, self.settings.updates_per_step)
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
            validation="full" if self.settings.validation else "none",
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
                "returns_to_go": learners.returns_to_go_rule(self.settings.source),
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
