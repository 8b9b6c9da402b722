"""The grid of a run: every job the workflow runs, and where its outputs go.

The Snakefile asks this module for its targets, so the grid has one definition that the
workflow, the cost estimate and the tests share. Layout under ``results/<name>/``::

    cells/<env>/seed<k>/online/                   online SAC (shared by every variant of the cell)
    cells/<env>/seed<k>/newdata/<label>-<collector>.h5
    cells/<env>/seed<k>/offline/<algo>/<dataset>/ offline learner + recommendation
    cells/<env>/seed<k>/finetune/<method>/        fine-tuning from the offline agent
    tidy.csv, tables/, figures/, report.md        aggregation
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from replication import config
from replication.variants import OfflineDataset, offline_datasets

RESULTS_ROOT = Path("results")
FINETUNE_SOURCES = {"iql": "iql", "pex": "iql", "calql": "calql"}  # offline agent each method starts from


def results_dir(cfg: dict[str, Any]) -> Path:
    return RESULTS_ROOT / cfg["name"]


def cell_dir(cfg: dict[str, Any], env: str, seed: int) -> Path:
    return results_dir(cfg) / "cells" / env / f"seed{seed}"


def dataset_key(dataset: OfflineDataset) -> str:
    """Path segment naming an offline dataset: ``buffer-p<pause>`` or ``<label>-<collector>``."""
    return f"buffer-p{dataset.pause}" if not dataset.is_newdata else f"{dataset.label}-{dataset.collector}"


def parse_dataset_key(cfg: dict[str, Any], key: str) -> OfflineDataset:
    for dataset in offline_datasets(cfg):
        if dataset_key(dataset) == key:
            return dataset
    raise ValueError(f"unknown dataset {key!r}; this config has: {', '.join(map(dataset_key, offline_datasets(cfg)))}")


def dataset_file(cfg: dict[str, Any], env: str, seed: int, dataset: OfflineDataset) -> Path:
    cell = cell_dir(cfg, env, seed)
    if dataset.is_newdata:
        return cell / "newdata" / f"{dataset_key(dataset)}.h5"
    return cell / "online" / f"pause_{dataset.pause}" / "dataset_buffer.h5"


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of the grid: its rule, the cell, and its variant wildcards."""

    rule: str
    env: str
    seed: int
    algo: str = ""
    dataset: str = ""

    def output(self, cfg: dict[str, Any]) -> Path:
        cell = cell_dir(cfg, self.env, self.seed)
        if self.rule == "online":
            return cell / "online" / "curve.csv"
        if self.rule == "newdata":
            return cell / "newdata" / f"{self.dataset}.h5"
        if self.rule == "offline":
            return cell / "offline" / self.algo / self.dataset / "recommend.csv"
        if self.rule == "finetune":
            return cell / "finetune" / self.algo / "curve.csv"
        raise ValueError(f"unknown rule {self.rule!r}")


def finetune_dataset(cfg: dict[str, Any]) -> OfflineDataset:
    ft = cfg["finetune"]
    if ft["dataset"] == "buffer":
        return OfflineDataset("buffer", config.finetune_pause_step(cfg))
    from replication.datasets import dataset_name

    pause = round(cfg["newdata"]["pause"] * cfg["budget"]["total_steps"])
    return OfflineDataset(dataset_name(0.0), pause, "best" if ft["validation"] else "last")


def jobs(cfg: dict[str, Any]) -> list[Job]:
    """Every cell job of the grid (one online run per cell, shared by all its variants)."""
    out: list[Job] = []
    datasets = offline_datasets(cfg)
    methods = cfg["finetune"]["methods"]
    needed_algos = set(cfg["offline"]["algos"]) | {FINETUNE_SOURCES[m] for m in methods}
    for env in cfg["envs"]:
        for seed in cfg["seeds"]:
            out.append(Job("online", env, seed))
            out += [Job("newdata", env, seed, dataset=dataset_key(d)) for d in datasets if d.is_newdata]
            for algo in sorted(needed_algos):
                if algo in cfg["offline"]["algos"]:
                    out += [Job("offline", env, seed, algo, dataset_key(d)) for d in datasets]
                else:  # trained only as the starting point of fine-tuning
                    out.append(Job("offline", env, seed, algo, dataset_key(finetune_dataset(cfg))))
            out += [Job("finetune", env, seed, m) for m in methods]
    return out


def tidy_inputs(cfg: dict[str, Any]) -> list[Path]:
    """Every tidy CSV the aggregation reads."""
    return [j.output(cfg) for j in jobs(cfg) if j.rule in ("online", "offline", "finetune")]


def counts(cfg: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for job in jobs(cfg):
        out[job.rule] = out.get(job.rule, 0) + 1
    return out
