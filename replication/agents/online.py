"""The online phase of a cell: SB3 SAC from scratch, with everything the variants branch from.

One run per (environment, seed) serves every variant. At each pause point ``T_k`` it keeps:

* ``pause_<T_k>/dataset_buffer.h5``: the replay buffer up to ``T_k`` as an offline dataset;
* ``pause_<T_k>/validation.json``: online validation of evenly spaced policy snapshots (best and
  last), with the env steps that validation is charged;
* ``pause_<T_k>/policy_best.pt``, ``policy_last.pt``: those two policies (TorchScript);
* ``pause_<T_k>/eval_best.json``: the reporting evaluation of the best snapshot;

C1's control (:class:`OnlineControl`, its own light job on the finished run: no training) adds
``control.csv`` (tidy, stage ``recommend``, ``algo=sac``, ``selection=online``): the validated best
snapshot as a recommendation without any offline learner, at every buffer pause where a best-of
recommendation exists, placed at that recommendation's ledger step
(:func:`replication.plan.variants.control_ledger`; ``pause_<T_k>/ledger_control.json``), and
``control.json`` (its summary and provenance).

Learning curve: the current policy is evaluated every ``evaluation.interval`` env steps on its
own env (``curve.csv``, tidy). These reporting episodes are not charged to any budget: they
measure, they do not train. Validation episodes are charged, but only to the variants that use
validation (their ledgers); SAC itself never sees them.

The run is resumable: every ``online.checkpoint_interval`` steps it writes the model, the
replay buffer, the environments' simulator states and the RNG states (those SAC goes on with, taken
after the evaluation and pause work of that step); a restarted run continues from there and ends
with the same numbers as an uninterrupted one (on CPU). A pause's files are staged first (sealed
under ``stage/`` before the next checkpoint) and published into ``pause_<T_k>/`` when the run ends,
so a rerun after Snakemake deleted them, from a checkpoint past the pause, still writes them
(:mod:`replication.agents.checkpoint`).

SAC does not notice its pauses: everything done between two ``learn`` calls (snapshots,
evaluation, validation, datasets, checkpoints) runs in :func:`replication.agents.rngs.isolated_rng`,
which puts back the global RNG states SB3 samples its batches and actions from. The run ends with
the same SAC weights as one uninterrupted ``learn`` of the same seed and settings (a test checks
it), so adding or moving a pause point changes nothing that SAC does.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from replication import tidy
from replication.agents import checkpoint
from replication.agents.datasets import Transitions, save_dataset
from replication.agents.envs import make_env
from replication.agents.evaluation import EpisodeRecord
from replication.agents.job import Job, Timings, runner
from replication.agents.policies import export_sac_actor, load_policy, sac_policy
from replication.agents.rngs import isolated_rng
from replication.io import atomic_path, read_json, write_json
from replication.plan import config
from replication.plan.ledger import BudgetError
from replication.plan.settings import OnlineSettings, online_settings
from replication.plan.variants import CONTROL_SELECTION, control_ledger

log = logging.getLogger(__name__)


def pause_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"pause_{step}"


def build_sac(settings: OnlineSettings, seed: int, device: str = "cpu"):
    """An SB3 SAC agent with ``settings`` (:func:`replication.plan.settings.online_settings`; replay capacity = T)."""
    from stable_baselines3 import SAC

    p = settings.sac
    env = make_env(settings.env, seed, **settings.env_options)
    return SAC(
        "MlpPolicy",
        env,
        learning_rate=p["learning_rate"],
        buffer_size=settings.total_steps,
        learning_starts=p["learning_starts"],
        batch_size=p["batch_size"],
        tau=p["tau"],
        gamma=p["gamma"],
        train_freq=p["train_freq"],
        gradient_steps=p["gradient_steps"],
        ent_coef=p["ent_coef"],
        replay_buffer_kwargs={"handle_timeout_termination": True},
        optimize_memory_usage=False,
        policy_kwargs={"net_arch": list(p["net_arch"])},
        seed=seed,
        device=device,
        verbose=0,
    )


def stored_steps(rb) -> int:
    """Steps in an SB3 replay buffer whose capacity is the whole budget (it never evicts)."""
    return rb.buffer_size if rb.full else rb.pos


def buffer_transitions(model, size: int | None = None) -> Transitions:
    """The first ``size`` steps of ``model``'s replay buffer, episode-ordered, cut at the end.

    SB3 stores actions scaled to [-1, 1]; the dataset holds them in the env's own range.
    ``dones`` covers both episode ends; ``timeouts`` marks truncations, so terminals are
    ``dones and not timeouts``. The episode still running at ``size`` is cut: its last stored
    step becomes a timeout.
    """
    rb = model.replay_buffer
    stored = stored_steps(rb)
    n = stored if size is None else size
    if n > stored:
        raise ValueError(f"replay buffer holds {stored} steps; cannot take {n}")
    obs = rb.observations[:n, 0]
    next_obs = rb.next_observations[:n, 0]
    dones = rb.dones[:n, 0].astype(bool)
    timeouts = rb.timeouts[:n, 0].astype(bool)
    terminals = dones & ~timeouts
    timeouts = timeouts.copy()
    if not (terminals[-1] or timeouts[-1]):
        timeouts[-1] = True
    ends = terminals | timeouts
    inner = ~ends[:-1]
    if not np.array_equal(obs[1:][inner], next_obs[:-1][inner]):
        raise AssertionError("replay buffer is not episode-ordered: next observation differs from the next step")
    space = model.action_space
    actions = space.low + 0.5 * (rb.actions[:n, 0] + 1.0) * (space.high - space.low)
    return Transitions(obs, actions, rb.rewards[:n, 0], terminals, timeouts)


def select_candidates(snapshots: list[int], pause: int, count: int) -> list[int]:
    """``count`` snapshot steps evenly spaced up to ``pause`` (targets ``pause * i / count``).

    Each target takes the latest snapshot at or before it; duplicates are dropped. The last
    candidate is always the snapshot at the pause itself.
    """
    available = sorted(s for s in snapshots if s <= pause)
    if not available:
        raise ValueError(f"no policy snapshot at or before step {pause}")
    chosen = []
    for i in range(1, count + 1):
        target = pause * i / count
        eligible = [s for s in available if s <= target] or available[:1]
        if eligible[-1] not in chosen:
            chosen.append(eligible[-1])
    return chosen


@dataclasses.dataclass
class OnlineTimings(Timings):
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    validation_seconds: float = 0.0
    dataset_seconds: float = 0.0


@dataclasses.dataclass
class OnlineState:
    """What the online loop carries between chunks (checkpointed with the model)."""

    curve_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    snapshots: list[int] = dataclasses.field(default_factory=list)
    timings: OnlineTimings = dataclasses.field(default_factory=OnlineTimings)
    resumed_from: list[int] = dataclasses.field(default_factory=list)


class OnlineRun(Job):
    """The online phase of one (environment, seed) cell, writing under ``out_dir``."""

    stage = "online"

    def configure(self) -> None:
        """The budget, pauses, intervals, evaluators and validation schedule of the run."""
        self.settings = s = online_settings(self.cfg, self.env_name)  # what the run reads of its config
        self.total = s.total_steps
        self.pauses = list(s.pauses)
        self.snapshot_interval = s.snapshot_interval
        self.checkpoint_interval = s.checkpoint_interval
        self.eval_interval = s.eval_interval
        self.evaluator = self.make_evaluator()
        self.validator = self.make_evaluator("validation", self.evaluator.env)
        self.val_count = s.validation_candidates
        self.val_charge = s.validation_charge

    def boundaries(self) -> list[int]:
        """Steps at which the loop stops to evaluate, snapshot, pause or checkpoint."""
        points = set(self.pauses) | {self.total}
        for interval in (self.eval_interval, self.snapshot_interval, self.checkpoint_interval):
            points |= set(range(interval, self.total + 1, interval))
        return sorted(points)

    # ---- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, model, state: OnlineState) -> None:
        rb = model.replay_buffer
        n = stored_steps(rb)

        def fill(tmp: Path) -> dict[str, Any]:
            np.savez(
                tmp / "buffer.npz",
                observations=rb.observations[:n],
                next_observations=rb.next_observations[:n],
                actions=rb.actions[:n],
                rewards=rb.rewards[:n],
                dones=rb.dones[:n],
                timeouts=rb.timeouts[:n],
            )
            model.replay_buffer = None
            try:
                payload = checkpoint.dumps({"model": model, "state": state, "rng": checkpoint.rng_states()})
            finally:
                model.replay_buffer = rb
            (tmp / "state.pkl").write_bytes(payload)
            return {"num_timesteps": model.num_timesteps, "buffer_pos": n}

        meta = checkpoint.write_checkpoint(self.ckpt_dir, self.job_key(), fill)
        checkpoint.log_saved("online", model.num_timesteps, meta)

    def load_checkpoint(self):
        """The model and loop state of the last checkpoint (made with these settings), or ``None``."""
        found = checkpoint.find_checkpoint(self.ckpt_dir, self.job_key())  # also one cut short mid-swap
        if found is None:
            return None
        path = found[0]
        from stable_baselines3.common.buffers import ReplayBuffer

        blob = checkpoint.loads((path / "state.pkl").read_bytes())
        model, state = blob["model"], blob["state"]
        rb = ReplayBuffer(
            self.total,
            model.observation_space,
            model.action_space,
            device=model.device,
            n_envs=1,
            optimize_memory_usage=False,
            handle_timeout_termination=True,
        )
        with np.load(path / "buffer.npz") as arrays:
            n = len(arrays["rewards"])
            for key in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
                getattr(rb, key)[:n] = arrays[key]
        rb.pos = n % rb.buffer_size
        rb.full = n == rb.buffer_size
        model.replay_buffer = rb
        checkpoint.set_rng_states(blob["rng"])
        state.resumed_from.append(int(model.num_timesteps))
        return model, state

    # ---- work at boundaries -----------------------------------------------------------------

    def snapshot_path(self, step: int) -> Path:
        return self.out_dir / "snapshots" / f"step_{step}.pt"

    def evaluate_curve(self, model, state: OnlineState) -> None:
        with state.timings.timed("eval_seconds"):
            records = self.evaluator(sac_policy(model))
        state.curve_rows += tidy.rows_from_records(self.base_row(algo="sac"), records, model.num_timesteps)

    def pause(self, model, state: OnlineState, step: int) -> None:
        """Validation, dataset and policies at pause ``step``, staged (:mod:`replication.agents.checkpoint`)."""
        staged = checkpoint.staged_pause(self.out_dir, step)
        tmp = checkpoint.new_stage(staged)
        with state.timings.timed("validation_seconds"):
            self.validate(tmp, state, step)
        with state.timings.timed("dataset_seconds"):
            save_dataset(
                buffer_transitions(model, step),
                tmp / "dataset_buffer.h5",
                env=self.env_name,
                seed=self.seed,
                pause=step,
                strategy="buffer",
                collector="online-sac",
                env_options=self.env_options,
            )
        checkpoint.seal_stage(tmp, staged, self.job_key())

    def validate(self, out: Path, state: OnlineState, step: int) -> None:
        """Validation of the snapshots up to pause ``step``: the best and last policies, their records."""
        candidates = select_candidates(state.snapshots, step, self.val_count)
        scores, actual = [], 0
        for s in candidates:
            records = self.validator(load_policy(self.snapshot_path(s)))
            scores.append(float(np.mean([r.score for r in records])))
            actual += sum(r.env_steps for r in records)
        best = candidates[int(np.argmax(scores))]  # ties: the earliest
        shutil.copyfile(self.snapshot_path(best), out / "policy_best.pt")
        shutil.copyfile(self.snapshot_path(step), out / "policy_last.pt")
        best_records = self.evaluator(load_policy(out / "policy_best.pt"))
        write_json(out / "eval_best.json", [dataclasses.asdict(r) for r in best_records])
        write_json(
            out / "validation.json",
            {
                "pause": step,
                "candidates": candidates,
                "scores": scores,
                "episodes_per_candidate": self.settings.validation_episodes,
                "best_step": best,
                "best_score": scores[candidates.index(best)],
                "last_step": step,
                "last_score": scores[candidates.index(step)] if step in candidates else None,
                "charged_env_steps": self.val_charge,
                "actual_env_steps": actual,
            },
        )

    # ---- the loop ---------------------------------------------------------------------------

    def run(self, device: str | None = None) -> dict[str, Any]:
        """Run (or resume) the phase on ``device`` (default: the config's, set up here)."""
        if device is None:
            device = self.start()
        self.device = device
        self.out_dir.mkdir(parents=True, exist_ok=True)
        restored = self.load_checkpoint()
        if restored is None:  # a fresh start: nothing staged by an earlier run counts
            checkpoint.clear_stage(self.out_dir)
        model, state = restored if restored else (build_sac(self.settings, self.seed, device), OnlineState())
        bar = self.progress_bar(self.total, model.num_timesteps, f"online {self.env_name}")
        t = state.timings
        for boundary in self.boundaries():
            if boundary <= model.num_timesteps:
                continue
            with t.timed("train_seconds"):
                model.learn(boundary - model.num_timesteps, reset_num_timesteps=False, log_interval=None)
            if bar is not None:
                bar.update(boundary - bar.n)
                bar.set_postfix(steps_per_s=f"{model.num_timesteps / max(t.train_seconds, 1e-9):.0f}")
            with isolated_rng():  # SAC must not notice its pauses: see replication.agents.rngs
                self.at_boundary(model, state, boundary)
            if boundary % self.checkpoint_interval == 0 and boundary < self.total:
                # after the side work: the checkpoint keeps the RNG states SAC goes on with
                with isolated_rng():
                    self.save_checkpoint(model, state)
        if bar is not None:
            bar.close()
        return self.finish(model, state)

    def at_boundary(self, model, state: OnlineState, boundary: int) -> None:
        """Snapshot, evaluation and pause work due at ``boundary`` (the checkpoint follows, in :meth:`run`)."""
        if boundary % self.snapshot_interval == 0 or boundary in self.pauses:
            export_sac_actor(model, self.snapshot_path(boundary))
            state.snapshots.append(boundary)
        if boundary % self.eval_interval == 0 or boundary in self.pauses:
            self.evaluate_curve(model, state)
            log.info(
                "%s seed %d: step %d, training %.0f steps/s",
                self.env_name,
                self.seed,
                boundary,
                model.num_timesteps / max(state.timings.train_seconds, 1e-9),
            )
        if boundary in self.pauses:
            self.pause(model, state, boundary)

    def finish(self, model, state: OnlineState) -> dict[str, Any]:
        """The curve, the model and every pause's files (published from the stage), then the summary."""
        self.write_tidy(state.curve_rows, "curve.csv")
        for step in self.pauses:
            checkpoint.publish_stage(self.out_dir, step, pause_dir(self.out_dir, step), self.job_key())
        buffer = io.BytesIO()
        model.save(buffer)
        with atomic_path(self.out_dir / "model.zip") as tmp:
            tmp.write_bytes(buffer.getvalue())
        t = state.timings
        summary = self.write_summary(
            "online.json",
            {
                "total_steps": self.total,
                "pauses": self.pauses,
                "snapshots": state.snapshots,
                "resumed_from": state.resumed_from,
                "timings": {
                    "train_seconds": t.train_seconds,
                    "train_steps_per_second": self.total / max(t.train_seconds, 1e-9),
                    "eval_seconds": t.eval_seconds,
                    "validation_seconds": t.validation_seconds,
                    "dataset_seconds": t.dataset_seconds,
                },
            },
        )
        checkpoint.remove_checkpoint(self.ckpt_dir)
        checkpoint.clear_stage(self.out_dir)
        return summary


class OnlineControl(Job):
    """C1's control of a finished online run in ``out_dir``: ``control.csv`` (module docstring)."""

    stage = "recommend"

    def run(self) -> dict[str, Any]:
        """Write the control's rows: the best snapshot's reporting evaluation at each buffer pause."""
        if not (self.out_dir / "online.json").exists():
            raise FileNotFoundError(f"C1's control needs the finished online run in {self.out_dir}; run it first")
        rows, pauses = [], []
        for pause in config.pause_steps(self.cfg):
            try:
                ledger = control_ledger(self.cfg, self.env_name, pause)
            except BudgetError:  # the best-of recommendation it controls for does not exist there
                continue
            out = pause_dir(self.out_dir, pause)
            ledger.save(out / "ledger_control.json")
            records = [EpisodeRecord(**r) for r in read_json(out / "eval_best.json")]
            base = self.base_row(algo="sac", validation="full", selection=CONTROL_SELECTION, pause=pause)
            rows += tidy.rows_from_records(base, records, ledger.spent)
            pauses.append(pause)
        self.write_tidy(rows, "control.csv")
        return self.write_summary("control.json", {"pauses": pauses, "rows": len(rows)})


run_control = runner(
    OnlineControl,
    """Write C1's control (``control.csv``) of the finished online run in ``out_dir``; ``options``: an
    analysis cell's, tagged on its rows. Returns the pauses it covers and its number of rows.""",
)


run_online = runner(
    OnlineRun,
    """Run (or resume) the online phase of one cell; ``options``: an analysis cell's, tagged on its
    tidy rows. Returns its summary.""",
)
