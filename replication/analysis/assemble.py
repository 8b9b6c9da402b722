"""One study from runs of the same configuration over disjoint seeds (shards).

A study too long for one machine or one sitting can run in shards: the same config with a part of
its seeds each (e.g. an overlay config file holding ``seeds: [0, 1]``), on different machines or at
different times. :func:`keep` copies what a finished shard's analysis needs (its config, tidy
results, the jobs' summaries, times and logs of results, never datasets or policies: a few MB) to a
folder that can be committed or moved; :func:`assemble` checks that the shards ran the same
configuration on disjoint seeds, puts their cells' files under ``results/<name>/`` and rebuilds the
tables, statistics, figures, scorecard, provenance and report exactly as the workflow's aggregation
rules do. ``replication assemble`` runs both; the cells' results themselves are never recomputed.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from replication import tidy
from replication.io import write_text
from replication.plan import config
from replication.plan.config import read_yaml

# What a shard keeps of its cells: results (CSV), job summaries and dataset sidecars (JSON), job times
# (TSV). Datasets, policies, checkpoints, the online stage and logs stay behind.
KEPT_SUFFIXES = (".csv", ".json", ".tsv")
SKIPPED_PARTS = ("stage", "snapshots", "checkpoint", "logs", "finished")
SEED_FREE = ("seeds",)  # the only keys shards may differ in


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
    """The shards' common configuration with the union of their seeds; an error names any difference."""
    configs = [read_yaml(s / "config.yaml") for s in shards]
    first = configs[0]
    for shard, cfg in zip(shards[1:], configs[1:], strict=True):
        differ = sorted(k for k in set(first) | set(cfg) if k not in SEED_FREE and first.get(k) != cfg.get(k))
        if differ:
            raise ValueError(f"{shard} ran another configuration than {shards[0]}: {', '.join(differ)} differ")
    seeds: list[int] = []
    for shard, cfg in zip(shards, configs, strict=True):
        overlap = sorted(set(seeds) & set(cfg["seeds"]))
        if overlap:
            raise ValueError(f"seeds {overlap} of {shard} are in another shard too: shards must be disjoint")
        seeds += cfg["seeds"]
    return {**first, "seeds": sorted(seeds)}


def assemble(shards: Sequence[Path | str], results: Path | str = "results") -> Path:
    """Put the shards' cells under ``results/<name>/`` and rebuild the run's analysis there."""
    shards = [Path(s) for s in shards]
    if not shards:
        raise ValueError("no shards given")
    cfg = merged_config(shards)
    out = Path(results) / cfg["name"]
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.yaml"
    write_text(config_file, yaml.safe_dump(cfg, sort_keys=False))  # as the Snakefile writes it
    for shard in shards:
        _copy(shard, out, kept_files(shard))
    tidy.write(tidy.read([s / "tidy.csv" for s in shards]), out / "tidy.csv")
    _aggregate(out, config_file, cfg)
    return out


def _aggregate(out: Path, config_file: Path, cfg: dict[str, Any]) -> None:
    """What rules/aggregate.smk and rules/provenance.smk run after ``collect``, in their order."""
    from replication.analysis.plotting import build_figures
    from replication.analysis.report import write_report
    from replication.analysis.scorecard import CLAIMS_FILE, build_scorecard
    from replication.analysis.statistics import build_statistics
    from replication.analysis.tables import build_tables
    from replication.plan import provenance
    from replication.plan.plan import Plan

    plan = Plan.build(cfg)
    tables, figures = list(plan.tables), list(plan.figures)
    results, run_cfg = [str(out / "tidy.csv")], config.load(config_file)
    build_tables(results, str(out / "tables"), run_cfg, tables=tables)
    build_statistics(results, str(out / "statistics"), run_cfg)
    build_figures(results, str(out / "figures"), run_cfg, figures=figures,
                  statistics_csv=str(out / "statistics" / "aggregate.csv"))  # fmt: skip
    build_scorecard(results, str(out / "scorecard"), run_cfg, claims_path=CLAIMS_FILE)
    provenance.write(str(config_file), str(out / "provenance.json"), [])
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
