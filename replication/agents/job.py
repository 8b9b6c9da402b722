"""The frame every job of a cell shares: the online run, the offline job and fine-tuning.

A job works on one cell (environment x seed, with the cell's env options) and writes under its own
directory. :class:`Job` holds what the three have in common: torch set-up and the device, quiet
libraries, the env options of the cell, making the env, loading and checking a dataset, the
evaluators (reporting and validation), the progress bar, the job key and checkpoint directory, the
tidy CSVs (tagged with an analysis cell's options) and the summary JSON (run info first, its
provenance last: :func:`replication.plan.provenance.job_record`). Each job
keeps its own loop, its own timings (a :class:`Timings` subclass) and its own checkpoint contents.

Seeding stays with each job: where it seeds (``d3rlpy.seed``, numpy generators) is part of its
RNG order, and the frame draws nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec

import numpy as np

from replication import tidy
from replication.agents import checkpoint
from replication.agents.datasets import DatasetError, Transitions, load_transitions
from replication.agents.envs import env_spaces, make_env, shared_env
from replication.agents.evaluation import Evaluator
from replication.envspecs import get_spec
from replication.io import write_json
from replication.plan import config, provenance
from replication.plan.variants import OfflineDataset
from replication.runinfo import configure_torch, run_info

ACTION_RANGE_TOL = 1e-4  # dataset actions may exceed the env's range by this fraction of it (rounding)

P = ParamSpec("P")


@dataclasses.dataclass
class Timings:
    """Seconds a job spent, by part; each job lists its own parts as fields of a subclass."""

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Add the seconds the block takes to field ``part``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, part, getattr(self, part) + time.perf_counter() - start)

    def summary(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Job:
    """One job of cell (``env_name``, ``seed``) writing under ``out_dir``.

    ``stage``: the job's name in its key and tidy rows; ``options``: the analysis cell's options,
    added to every tidy row the job writes (:meth:`write_tidy`).
    """

    stage = ""

    def __init__(
        self,
        cfg: dict[str, Any],
        env_name: str,
        seed: int,
        out_dir: Path | str,
        progress: bool | None = None,
        options: str = "",
    ):
        self.cfg = cfg
        self.env_name = env_name
        self.seed = seed
        self.out_dir = Path(out_dir)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.options = options
        self.env_options = config.env_options(cfg, env_name)
        self.spec = get_spec(env_name)
        self.device = "cpu"
        self.started = (provenance.now(), time.perf_counter())  # for the summary's provenance
        self.configure()

    def configure(self) -> None:
        """The job's own settings, derived from the frame's attributes; a subclass without other
        arguments than the frame's sets them here rather than in its own constructor."""

    def run(self) -> dict[str, Any]:
        """Do the job (or resume it); returns its summary."""
        raise NotImplementedError

    # ---- set-up

    def start(self, d3rlpy: bool = False) -> str:
        """Torch's threads and device (the job's ``device``); ``d3rlpy``: import it, quietly."""
        self.device = configure_torch(self.cfg)
        if d3rlpy:
            from replication.agents.learners import quiet_d3rlpy

            quiet_d3rlpy()
        return self.device

    def make_env(self, shared: bool = False):
        """The cell's env, built with the job's seed (``shared``: the process-wide instance)."""
        build = shared_env if shared else make_env
        return build(self.env_name, self.seed, **self.env_options)

    def load_dataset(self, path: Path | str, dataset: OfflineDataset) -> tuple[Transitions, dict[str, Any]]:
        """The transitions and metadata of dataset file ``path``, verified (:func:`check_dataset`)."""
        transitions, meta = load_transitions(path)  # verifies the hash and the episode structure
        check_dataset(transitions, self.env_name, self.cfg, meta, dataset)
        return transitions, meta

    def make_evaluator(self, section: str = "evaluation", env=None) -> Evaluator:
        """The reporting (``evaluation``) or ``validation`` evaluator of the cell; ``env``: one to reuse."""
        s = self.cfg[section]
        return Evaluator(self.env_name, self.seed, s["episodes"], s["seed_offset"], self.env_options, env)

    def progress_bar(self, total: int, initial: int, desc: str):
        """A tqdm bar when the job shows progress, else ``None``."""
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, unit="step", desc=desc)

    # ---- keys and checkpoints

    def job_key(self, *parts: Any) -> str:
        """What the job's results depend on: a checkpoint of other settings is never resumed."""
        return checkpoint.job_key(self.stage, self.cfg, self.env_name, self.seed, *parts)

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / checkpoint.CHECKPOINT_DIR

    # ---- outputs

    def base_row(self, **fields: Any) -> dict[str, Any]:
        """The identifying columns of the job's tidy rows."""
        return {"env": self.env_name, "suite": self.spec.suite, "seed": self.seed, "stage": self.stage, **fields}

    def write_tidy(self, rows: list[dict[str, Any]], name: str) -> None:
        """Tidy ``rows`` as ``out_dir/name``, tagged with the cell's options."""
        tidy.write(tidy.frame(rows), self.out_dir / name)
        if self.options:
            tidy.tag_options(self.out_dir / name, self.options)

    def write_summary(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Run info, env and seed, ``fields``, then the job's provenance, as ``out_dir/name`` (the job's
        completion marker)."""
        start, t0 = self.started
        summary = {**run_info(self.cfg, self.device), "env": self.env_name, "seed": self.seed, **fields}
        summary["provenance"] = provenance.job_record(self.cfg, start, time.perf_counter() - t0)
        write_json(self.out_dir / name, summary)
        return summary


def runner(job: Callable[P, Job], doc: str) -> Callable[P, dict[str, Any]]:
    """A function of ``job``'s arguments that builds the job and runs it (its summary returned); ``doc``:
    its docstring."""

    def run(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        return job(*args, **kwargs).run()

    run.__doc__ = doc
    run.__name__ = run.__qualname__ = f"run_{getattr(job, 'stage', 'job')}"
    run.__signature__ = inspect.signature(job).replace(return_annotation="dict[str, Any]")  # type: ignore[attr-defined]
    return run


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
