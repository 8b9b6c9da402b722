"""One study from runs of the same settings over disjoint cells (shards).

A study too long for one machine or one sitting can run in shards: the same config with a part of
its seeds each (e.g. an overlay config file holding ``seeds: [0, 1]``), on different machines or at
different times. :func:`keep` copies what a finished shard's analysis needs (its config, tidy
results, the jobs' summaries, times and logs of results, never datasets or policies: a few MB) to a
folder that can be committed or moved; :func:`assemble` checks that the shards ran the same
configuration on disjoint seeds, puts their cells' files under ``results/<name>/`` and rebuilds the
tables, statistics, figures, scorecard, provenance and report exactly as the workflow's aggregation
rules do. ``replication keep-shard`` and ``replication assemble`` run them; the cells' results
themselves are never recomputed.

Given the study's own config (``study``), shards may also differ in their name, environments and
claims: a study of three environments can take one environment's cells from another run of the same
settings (e.g. the mini study's Hopper cells for a C3 study of Hopper, Walker2d and HalfCheetah). Each
of the study's jobs must then be a job some shard ran, each cell comes from one shard, and only the
study's cells and the tidy rows of its jobs are kept.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from replication import tidy
from replication.io import write_text
from replication.plan import config
from replication.plan.config import read_yaml
from replication.plan.workflow import result_settings

if TYPE_CHECKING:
    from replication.plan.plan import Plan

# What a shard keeps of its cells: results (CSV), job summaries and dataset sidecars (JSON), job times
# (TSV). Datasets, policies, checkpoints, the online stage and logs stay behind.
KEPT_SUFFIXES = (".csv", ".json", ".tsv")
SKIPPED_PARTS = ("stage", "snapshots", "checkpoint", "logs", "finished")
SEED_FREE = ("seeds",)  # the only keys shards of one config may differ in
CELL_FREE = ("name", "envs", "seeds", "claims")  # the keys shards may differ in from a study's config


def kept_files(run: Path) -> list[Path]:
    """The files of ``run``'s cells that :func:`keep` copies (relative to ``run``)."""
    files = []
    for path in sorted((run / "cells").rglob("*")):
        rel = path.relative_to(run)
        if path.is_file() and path.suffix in KEPT_SUFFIXES and not set(rel.parts) & set(SKIPPED_PARTS):
            files.append(rel)
    return files


def keep(run: Path | str, out: Path | str) -> list[Path]:
    """Copy a finished shard's config, tidy results, provenance and kept cell files to ``out``."""
    run, out = Path(run), Path(out)
    for required in ("config.yaml", "tidy.csv"):
        if not (run / required).is_file():
            raise FileNotFoundError(f"{run / required} is missing: is {run} a finished run?")
    names = [Path("config.yaml"), Path("tidy.csv"), *kept_files(run)]
    names += [Path(p) for p in ("provenance.json", "provenance-invocations.json") if (run / p).is_file()]
    _copy(run, out, names)
    return names


def _copy(source: Path, target: Path, names: Sequence[Path]) -> None:
    """``source / name`` copied to ``target / name`` for each of ``names``."""
    for rel in names:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target / rel)


def merged_config(shards: Sequence[Path]) -> dict[str, Any]:
    """The first shard's configuration with the union of the shards' seeds (:func:`cell_owners` checks
    that the others ran the same); an error names a seed in two shards."""
    configs = [read_yaml(s / "config.yaml") for s in shards]
    seeds: list[int] = []
    for shard, cfg in zip(shards, configs, strict=True):
        overlap = sorted(set(seeds) & set(cfg["seeds"]))
        if overlap:
            raise ValueError(f"seeds {overlap} of {shard} are in another shard too: shards must be disjoint")
        seeds += cfg["seeds"]
    return {**configs[0], "seeds": sorted(seeds)}


def assemble(
    shards: Sequence[Path | str], results: Path | str = "results", study: dict[str, Any] | None = None
) -> Path:
    """Put the shards' cells under ``results/<name>/`` and rebuild the run's analysis there; ``study``:
    the assembled study's resolved config (default: the shards' common config with their seeds)."""
    shards = [Path(s) for s in shards]
    if not shards:
        raise ValueError("no shards given")
    from replication.plan.plan import Plan

    cfg = merged_config(shards) if study is None else study
    plan = Plan.build(cfg)
    owners = cell_owners(shards, cfg, plan, differ_in=SEED_FREE if study is None else CELL_FREE)
    out = Path(results) / cfg["name"]
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.yaml"
    write_text(config_file, yaml.safe_dump(cfg, sort_keys=False))  # as the Snakefile writes it
    for shard in shards:
        _copy(shard, out, [f for f in kept_files(shard) if owners.get(_cell_of(f)) == shard])
    tidy.write(_study_rows(cfg, plan, shards, owners), out / "tidy.csv")
    _aggregate(out, config_file, plan)
    return out


def _cell_of(rel: Path) -> tuple[str, int]:
    """(env, seed) of a kept file ``cells/<env>/seed<k>/...``."""
    return rel.parts[1], int(rel.parts[2].removeprefix("seed"))


def cell_owners(shards: Sequence[Path], cfg: dict[str, Any], plan: Plan, differ_in: Sequence[str]) -> dict[tuple, Path]:
    """The shard each cell of study ``cfg`` (planned as ``plan``) comes from; an error names a setting
    outside ``differ_in`` that differs, a cell in two shards, or a job of the study that no shard ran."""
    from replication.plan.plan import Plan

    owners: dict[tuple[str, int], Path] = {}
    ran: dict[tuple, set[str]] = {}  # (rule, env, seed, variant) of every shard's job: its learners
    for shard in shards:
        shard_cfg = read_yaml(shard / "config.yaml")
        mine, theirs = result_settings(cfg), result_settings(shard_cfg)  # checkpoints, job layout: no matter
        differ = sorted(k for k in set(mine) | set(theirs) if k not in differ_in and mine.get(k) != theirs.get(k))
        if differ:
            raise ValueError(f"{shard} ran other settings than the study {cfg['name']}: {', '.join(differ)} differ")
        for cell in {(e, int(s)) for e in shard_cfg["envs"] for s in shard_cfg["seeds"]}:
            if cell[0] in cfg["envs"] and cell[1] in cfg["seeds"]:
                if cell in owners:
                    raise ValueError(
                        f"cell {cell[0]} seed {cell[1]} is in {owners[cell]} and {shard}: one shard per cell"
                    )
                owners[cell] = shard
        for job in Plan.build(shard_cfg).every_job():
            ran.setdefault((job.rule, job.env, job.seed, job.variant), set()).update(job.algos)
    for job in plan.every_job():
        if (key := (job.rule, job.env, job.seed, job.variant)) not in ran or not set(job.algos) <= ran[key]:
            raise ValueError(f"the study's {job.rule} job of {job.env} seed {job.seed} {job.variant} is in no shard")
    return owners


def _study_rows(cfg: dict[str, Any], plan: Plan, shards: Sequence[Path], owners: dict[tuple, Path]) -> pd.DataFrame:
    """The tidy rows of the study's jobs, each cell's from the shard it comes from, in the order a run of
    the study collects them (its plan's cells in order; a cell's rows in its shard's order)."""
    from replication.analysis.selection import canonical
    from replication.plan import claims

    position: dict[tuple[str, int], int] = {}
    for i, job in enumerate(plan.grid()):
        position.setdefault((job.env, job.seed), i)
    parts = []
    for shard in shards:
        df = tidy.read([shard / "tidy.csv"])
        cells = [(env, int(seed)) for env, seed in zip(df["env"], df["seed"], strict=True)]
        df["_at"] = [position[c] if owners.get(c) == shard else -1 for c in cells]
        parts.append(df[df["_at"] >= 0])
    df = pd.concat(parts, ignore_index=True).sort_values("_at", kind="stable").drop(columns="_at")
    df = df.reset_index(drop=True)
    wanted = claims.rows_of(cfg, plan.every_job(), canonical(df))
    return df.loc[wanted.index].reset_index(drop=True)


def _aggregate(out: Path, config_file: Path, plan: Plan) -> None:
    """What rules/aggregate.smk and rules/provenance.smk run after ``collect``, in their order."""
    from replication.analysis.plotting import build_figures
    from replication.analysis.report import write_report
    from replication.analysis.scorecard import CLAIMS_FILE, build_scorecard
    from replication.analysis.statistics import build_statistics
    from replication.analysis.tables import build_tables
    from replication.plan import provenance

    tables, figures = list(plan.tables), list(plan.figures)
    results, run_cfg = [str(out / "tidy.csv")], config.load(config_file)
    build_tables(results, str(out / "tables"), run_cfg, tables=tables)
    build_statistics(results, str(out / "statistics"), run_cfg)
    build_figures(results, str(out / "figures"), run_cfg, figures=figures,
                  statistics_csv=str(out / "statistics" / "aggregate.csv"))  # fmt: skip
    build_scorecard(results, str(out / "scorecard"), run_cfg, claims_path=CLAIMS_FILE)
    provenance.write(str(config_file), str(out / "provenance.json"), [], run=out)
    write_report(
        out / "report.md",
        run_cfg,
        tables=[out / "tables" / f"{t}.md" for t in tables],
        figures=[out / "figures" / f"{f}.png" for f in figures],
        statistics=out / "statistics" / "aggregate.md",
        scorecard=out / "scorecard" / "S1.md",
        benchmarks=sorted(out.glob("cells/*/seed*/benchmarks/*.tsv")),
        finetune_summaries=sorted(out.glob("cells/*/seed*/finetune/calql/finetune.json")),
        provenance=out / "provenance.json",
    )
