"""Per-suite score normalisation, so that scores can be aggregated across environments.

The tidy ``score`` metric is the environment's reported metric (:mod:`replication.tidy`). This
module maps it onto a common scale where 0 is "nothing" and 1 is "solved / expert":

* locomotion: ``(return - random) / (expert - random)`` with the reference returns of
  ``config/reference_returns.yaml`` (a choice of this project; the file says where each number
  comes from);
* Kitchen (``kitchen``, ``kitchen-sparse``): subtasks completed / number of subtasks (4);
* Meta-World: the success rate as is.

The normalised values are added to a tidy table as rows of a new metric, ``normalized_score``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from replication.envspecs import specs
from replication.io import PROJECT_ROOT

REFERENCE_FILE = PROJECT_ROOT / "config" / "reference_returns.yaml"
SCORE = "score"
NORMALIZED = "normalized_score"
DEFAULT_KITCHEN_SUBTASKS = 4


@dataclasses.dataclass(frozen=True)
class Reference:
    """Returns of a random and of an expert policy in one locomotion environment."""

    random: float
    expert: float
    source: str = ""

    def __post_init__(self) -> None:
        if not self.expert > self.random:
            raise ValueError(f"reference expert return {self.expert} must exceed the random return {self.random}")


def load_references(path: Path | str = REFERENCE_FILE) -> dict[str, Reference]:
    """The reference returns of every locomotion environment in ``path``."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    refs = {}
    for env, entry in raw.items():
        unknown = set(entry) - {"random", "expert", "source"}
        if unknown or not {"random", "expert"} <= set(entry):
            raise ValueError(f"{path}: {env}: expected keys random, expert (and source); got {sorted(entry)}")
        refs[env] = Reference(float(entry["random"]), float(entry["expert"]), str(entry.get("source", "")))
    return refs


def kitchen_subtasks(env: str) -> int:
    """How many subtasks a Kitchen environment asks for (from ``config/envs.yaml``; 4 by default)."""
    spec = specs().get(env)
    tasks = (spec.kwargs.get("tasks_to_complete") if spec else None) or ()
    return len(tasks) or DEFAULT_KITCHEN_SUBTASKS


def normalize_values(
    env: str, suite: str, values: np.ndarray | pd.Series, references: dict[str, Reference] | None = None
) -> np.ndarray:
    """Normalised scores of ``values`` (the ``score`` metric) of one environment."""
    values = np.asarray(values, dtype=float)
    if suite == "locomotion":
        references = load_references() if references is None else references
        if env not in references:
            raise ValueError(
                f"no reference returns for locomotion environment {env!r}; add random and expert returns for it "
                f"to {REFERENCE_FILE} (known: {', '.join(sorted(references))})"
            )
        ref = references[env]
        return (values - ref.random) / (ref.expert - ref.random)
    if suite == "kitchen":
        n = kitchen_subtasks(env)
        if np.any((values < 0) | (values > n)):
            raise ValueError(
                f"{env}: score values outside [0, {n}] cannot be subtask counts; the Kitchen score must be the "
                "number of subtasks completed"
            )
        return values / n
    if suite == "metaworld":
        if np.any((values < 0) | (values > 1)):
            raise ValueError(
                f"{env}: score values outside [0, 1] cannot be success rates; the Meta-World score must be success"
            )
        return values.copy()
    raise ValueError(f"{env}: unknown suite {suite!r}; cannot normalise (known: locomotion, kitchen, metaworld)")


def add_normalized_score(df: pd.DataFrame, references: dict[str, Reference] | None = None) -> pd.DataFrame:
    """``df`` with a ``normalized_score`` row beside every ``score`` row.

    Existing ``normalized_score`` rows are dropped and recomputed, so the result is the same
    whichever stage wrote the input.
    """
    references = load_references() if references is None else references
    base = df[df["metric"] != NORMALIZED]
    scores = base[base["metric"] == SCORE]
    if scores.empty:
        raise ValueError("the results have no 'score' rows to normalise")
    parts = []
    for (env, suite), rows in scores.groupby(["env", "suite"], sort=False):
        rows = rows.copy()
        rows["value"] = normalize_values(str(env), str(suite), rows["value"].to_numpy(), references)
        rows["metric"] = NORMALIZED
        parts.append(rows)
    return pd.concat([base, *parts], ignore_index=True)
