"""The tidy results format: one row per (cell, variant, env step, metric).

Every stage writes its results as rows of these columns (CSV); aggregation concatenates them and
every figure and table is built from that one table.

Columns:

* ``env``, ``suite``, ``seed``: the cell;
* ``stage``: ``online`` (SAC learning curve), ``recommend`` (final-policy recommendation at a
  pause point) or ``finetune`` (fine-tuning learning curve);
* ``algo``: ``sac`` for the online run, else the offline algorithm or fine-tuning method
  (``iql``, ``cql``, ``calql``, ``pex``, ``wsrl``);
* ``dataset``: ``buffer``, ``newdata`` or ``newdata-eps0.1`` etc. (empty for online rows);
* ``validation``: ``full`` (validated collector and checkpoint), ``none`` (last checkpoints, no
  validation charged), empty for online rows;
* ``selection``: ``offline`` (the offline policy) or ``best-of`` (validated choice between the
  best online and the best offline checkpoint); ``online`` for C1's control (``algo=sac``, no
  dataset: online SAC's validated best snapshot, no offline learner); empty for other stages;
* ``variant_options``: free-form extras as ``key=value;...`` (e.g. ``reward=binary``,
  ``extended=1``), empty by default;
* ``pause``: the pause point (env steps of online training) the variant branched from; 0 for
  online rows;
* ``env_step``: the ledger-true env step: every env step the variant had spent when measured;
* ``metric``: ``score`` (the env's reported metric), ``return``, ``success``, ``subtasks``, ...;
* ``value``: the mean over the evaluation's episodes;
* ``episodes``: how many episodes the value averages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from replication.io import atomic_path

COLUMNS = (
    "env",
    "suite",
    "seed",
    "stage",
    "algo",
    "dataset",
    "validation",
    "selection",
    "variant_options",
    "pause",
    "env_step",
    "metric",
    "value",
    "episodes",
)
STAGES = ("online", "recommend", "finetune")
VARIANT_COLUMNS = ("stage", "algo", "dataset", "validation", "selection", "variant_options")


def rows_from_records(base: dict[str, Any], records: Sequence[Any], env_step: int) -> list[dict[str, Any]]:
    """Tidy rows (score, return, and success/subtasks where defined) of one evaluation."""
    import numpy as np

    metrics: dict[str, list[float]] = {"score": [], "return": [], "length": []}
    for r in records:
        metrics["score"].append(r.score)
        metrics["return"].append(r.episode_return)
        metrics["length"].append(r.length)
        if r.success is not None:
            metrics.setdefault("success", []).append(float(r.success))
        if r.subtasks is not None:
            metrics.setdefault("subtasks", []).append(float(r.subtasks))
    return [
        {**base, "env_step": int(env_step), "metric": m, "value": float(np.mean(v)), "episodes": len(v)}
        for m, v in metrics.items()
    ]


def frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A tidy frame with every column, defaults filled, in the canonical order."""
    df = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in df:
            df[col] = "" if col not in ("seed", "pause", "env_step", "value", "episodes") else 0
    for col in ("dataset", "validation", "selection", "variant_options"):
        df[col] = df[col].fillna("").astype(str)
    return df[list(COLUMNS)]


def validate(df: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"tidy results lack columns {missing}")
    bad = sorted(set(df["stage"]) - set(STAGES))
    if bad:
        raise ValueError(f"tidy results have unknown stages {bad}; valid: {', '.join(STAGES)}")


def write(df: pd.DataFrame, path: Path | str) -> None:
    validate(df)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read(paths: Iterable[Path | str]) -> pd.DataFrame:
    """Concatenate tidy CSV files."""
    frames = [pd.read_csv(p, keep_default_na=False, dtype={c: str for c in VARIANT_COLUMNS}) for p in paths]
    df = pd.concat(frames, ignore_index=True) if frames else frame([])
    validate(df)
    return df


def tag_options(path: Path | str, options: str) -> None:
    """Set ``variant_options`` of every row of a tidy file (results of an analysis cell)."""
    if not options:
        return
    df = read([path])
    df["variant_options"] = [";".join(filter(None, [options, o])) for o in df["variant_options"]]
    write(df, path)
