"""Aggregates across environments with rliable: IQM and probability of improvement, with 95% CIs.

Scores are normalised (:mod:`replication.analysis.normalize`) and arranged as ``(num_seeds x num_envs)``
matrices, one per variant. The interquartile mean (IQM) and its stratified-bootstrap confidence
interval come from ``rliable.library.get_interval_estimates`` with ``rliable.metrics.aggregate_iqm``;
the probability of improvement over online SAC from ``rliable.metrics.probability_of_improvement``.

Repeatability: rliable's bootstrap draws its resampling indices from NumPy's *global* random
state (``np.random.choice`` in ``StratifiedBootstrap.update_indices``); its ``random_state``
argument does not reach them. Every interval here is therefore computed inside
:func:`seeded_global_rng`, which seeds the global state and restores it afterwards, and each
variant is bootstrapped from the same seed, so that an interval does not depend on which other
variants were computed before it.

Two groups of variants make the aggregate figure F5 (:func:`aggregate_scores`):

* final-policy recommendation: online SAC at a pause point ``P`` and every recommendation variant
  at ``P``; ``P`` is the latest pause at which every recommendation variant of the results was run
  for every environment and seed (for the default configuration, the ``newdata`` pause), so that
  all of them are compared at one point of the budget. A variant's probability of improvement is
  budget-matched: over online SAC after as many env steps as that variant spent (pause, validation
  and newdata steps), not over online SAC at ``P``;
* fine-tuning: SAC continuation and every fine-tuning method, at the final evaluation (both spend
  the whole budget).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from replication.analysis import labels
from replication.analysis import selection as sel
from replication.analysis.selection import Expected, MissingResultsError
from replication.io import write_text
from replication.plan import config

DEFAULT_REPS = 5000  # without a config; runs use config statistics.bootstrap_reps
DEFAULT_SEED = 0
CONFIDENCE = 0.95


@functools.cache
def rliable_library() -> ModuleType:
    """``rliable.library`` (imported lazily: it pulls in ``arch`` and its bootstrap code).

    rliable 1.2.0 imports ``arch.bootstrap``; arch 7.2.0 does not import under pandas 3, which
    is why the lock pins pandas 2.3.
    """
    import rliable.library as library

    return library


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed NumPy's global random state for the block, then restore the previous state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean over all runs and tasks (rliable ``aggregate_iqm``)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y), averaged over tasks (rliable ``probability_of_improvement``)."""
    from rliable import metrics

    return float(metrics.probability_of_improvement(np.asarray(scores_x, float), np.asarray(scores_y, float)))


def iqm_sorted(scores: np.ndarray) -> float:
    """The same number as :func:`iqm`, by sorting (fast, for the bootstrap).

    ``scipy.stats.trim_mean(x, 0.25, axis=None)``, which rliable calls, drops ``int(0.25 n)``
    values at each end of the ``n`` scores and averages the rest; its argument checking costs about
    a millisecond per call, which dominates a bootstrap of thousands of replications.
    """
    flat = np.sort(np.asarray(scores, dtype=float), axis=None)
    cut = int(0.25 * flat.size)
    return float(flat[cut : flat.size - cut].mean())


def poi_pairwise(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """The same number as :func:`probability_of_improvement`, from pair counts (fast, for the bootstrap).

    rliable computes each task's P(X > Y) as the Mann-Whitney U statistic divided by the number of
    pairs, i.e. the fraction of (run of X, run of Y) pairs where X is higher, ties counting one half.
    """
    x = np.asarray(scores_x, float)[:, None, :]
    y = np.asarray(scores_y, float)[None, :, :]
    per_task = ((x > y).astype(float) + 0.5 * (x == y)).mean(axis=(0, 1))
    return float(per_task.mean())


def config_reps(cfg: dict[str, Any]) -> int:
    """Bootstrap replications of a resolved config (``statistics.bootstrap_reps``)."""
    return int(cfg.get("statistics", {}).get("bootstrap_reps", DEFAULT_REPS))


def bootstrap_interval(
    scores: np.ndarray | Sequence[np.ndarray],
    statistic: Callable[..., float],
    *,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """(point, lower, upper) of ``statistic`` with a stratified-bootstrap percentile interval.

    ``scores`` is one ``(num_seeds x num_envs)`` matrix (seeds resampled within each environment)
    or a list of such matrices, resampled independently (rliable's
    ``StratifiedIndependentBootstrap``).
    """
    library = rliable_library()
    data = _matrix(scores) if isinstance(scores, np.ndarray) else [_matrix(s) for s in scores]

    def func(*args: np.ndarray) -> np.ndarray:
        return np.array([statistic(*args)])

    with seeded_global_rng(seed):
        point, interval = library.get_interval_estimates(
            {"x": data}, func, reps=reps, confidence_interval_size=confidence
        )
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def _matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"scores must be a non-empty (num_seeds x num_envs) matrix, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores hold NaN or infinite values")
    return scores


def iqm_intervals(
    score_dict: Mapping[str, np.ndarray],
    *,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """IQM with its stratified-bootstrap interval for every variant of ``score_dict``."""
    rows = []
    for label, scores in score_dict.items():
        _, lo, hi = bootstrap_interval(scores, iqm_sorted, reps=reps, seed=seed, confidence=confidence)
        rows.append({"variant": label, "iqm": iqm(scores), "iqm_lo": lo, "iqm_hi": hi})
    return pd.DataFrame(rows, columns=["variant", "iqm", "iqm_lo", "iqm_hi"])


def poi_intervals(
    pairs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Probability of improvement of X over Y with its interval, for every ``label: (X, Y)``."""
    rows = []
    for label, (x, y) in pairs.items():
        _, lo, hi = bootstrap_interval([x, y], poi_pairwise, reps=reps, seed=seed, confidence=confidence)
        rows.append({"variant": label, "poi": probability_of_improvement(x, y), "poi_lo": lo, "poi_hi": hi})
    return pd.DataFrame(rows, columns=["variant", "poi", "poi_lo", "poi_hi"])


# --------------------------------------------------------------------------------------------
# Score matrices from the tidy results


def score_matrix(values: pd.DataFrame, envs: Sequence[str], seeds: Sequence[int], what: str) -> np.ndarray:
    """``(num_seeds x num_envs)`` matrix of ``values`` (columns ``env, seed, value``)."""
    sel.check_complete(values, what, {"env": list(envs), "seed": list(seeds)})
    table = values.groupby(["seed", "env"])["value"].mean().unstack("env")
    return table.loc[list(seeds), list(envs)].to_numpy(dtype=float)


def recommendation_variants(df: pd.DataFrame, expected: Expected) -> list[tuple[str, str, str, str]]:
    """Every (algo, dataset, validation, selection) of the plain recommendation rows, in config order."""
    rec = sel.select(
        df, sel.NORMALIZED, stage="recommend", algo=expected.algos, dataset=expected.datasets, envs=expected.envs
    )
    if rec.empty:
        raise MissingResultsError(f"no recommendation results; {sel.available(df, 'recommend')}")
    found = set(
        rec[["algo", "dataset", "validation", "selection"]].drop_duplicates().itertuples(index=False, name=None)
    )
    order = {
        "algo": list(expected.algos),
        "dataset": list(expected.datasets),
        "validation": ["full", "none"],
        "selection": ["best-of", "offline"],
    }

    def key(v: tuple[str, str, str, str]) -> tuple:
        return tuple(order[c].index(x) if x in order[c] else 99 for c, x in zip(order, v, strict=True)) + v

    return sorted(found, key=key)


def comparison_pause(df: pd.DataFrame, expected: Expected) -> int:
    """The latest pause at which every recommendation variant was run for every environment and seed."""
    rec = sel.select(
        df, sel.NORMALIZED, stage="recommend", algo=expected.algos, dataset=expected.datasets, envs=expected.envs
    )
    variants = recommendation_variants(df, expected)
    need = len(variants) * len(expected.envs) * len(expected.seeds)
    complete = []
    for pause, rows in rec.groupby("pause"):
        have = rows[["algo", "dataset", "validation", "selection", "env", "seed"]].drop_duplicates()
        have = have[have["seed"].isin(expected.seeds)]
        if len(have) == need:
            complete.append(int(pause))
    if not complete:
        raise MissingResultsError(
            "no pause point has every recommendation variant for every environment and seed, so the aggregate "
            f"cannot compare them at one point of the budget; variants found: {variants}. Pass pause= explicitly "
            "or finish the missing jobs"
        )
    return max(complete)


def variant_label(algo: str, dataset: str, validation: str, selection: str) -> str:
    return f"{labels.ALGO_NAMES.get(algo, algo)} · {dataset} · {validation}/{selection}"


@dataclasses.dataclass
class AggregateGroup:
    """One group of F5: its baseline's label, every variant's score matrix (the baseline's first), and
    for each variant the baseline matrix its probability of improvement is taken over, with its label."""

    name: str
    baseline: str
    scores: dict[str, np.ndarray]
    versus: dict[str, tuple[str, np.ndarray]]


def _online_at_ledger(
    online: pd.DataFrame, rows: pd.DataFrame, envs: Sequence[str], seeds: Sequence[int]
) -> tuple[str, np.ndarray]:
    """Online SAC after as many env steps as each recommendation row spent (budget-matched baseline)."""
    at = sel.value_at_or_before(online, rows[["env", "seed", "env_step"]], "env_step", "online SAC at the ledger step")
    label = f"Online SAC @ {labels.format_steps(rows['env_step'].mean())} (same env steps)"
    return label, score_matrix(at.rename(columns={"at_value": "value"}), envs, seeds, label)


def aggregate_scores(df: pd.DataFrame, expected: Expected, pause: int | None = None) -> list[AggregateGroup]:
    """The groups of F5 (:class:`AggregateGroup`)."""
    metric, envs, seeds = sel.NORMALIZED, expected.envs, expected.seeds
    pause = comparison_pause(df, expected) if pause is None else int(pause)
    groups = []
    online = sel.online_curve(df, metric, envs=envs)
    keys = pd.DataFrame([(e, s, pause) for e in envs for s in seeds], columns=["env", "seed", "pause"])
    at_pause = sel.value_at_or_before(online, keys, "pause", "online SAC at the pause point")
    baseline = f"Online SAC @ {labels.format_steps(pause)}"
    rec_group = {baseline: score_matrix(at_pause.rename(columns={"at_value": "value"}), envs, seeds, baseline)}
    rec_versus = {}
    for variant in recommendation_variants(df, expected):
        rows = sel.select(
            df, metric, stage="recommend", envs=envs, **dict(zip(sel.VARIANT_FILTERS, variant, strict=True))
        )
        rows = rows[rows["pause"] == pause]
        label = variant_label(*variant)
        rec_group[label] = score_matrix(rows, envs, seeds, f"F5 recommendation {label} at pause {pause}")
        rec_versus[label] = _online_at_ledger(online, rows, envs, seeds)
    name = f"Final-policy recommendation @ {labels.format_steps(pause)}"
    groups.append(AggregateGroup(name, baseline, rec_group, rec_versus))
    if expected.finetune_methods:
        sac = sel.final_values(sel.sac_continuation(df, metric, expected), expected.total_steps, "SAC continuation")
        baseline = labels.FINETUNE_NAMES["sac"]
        ft_group = {baseline: score_matrix(sac.rename(columns={"final": "value"}), envs, seeds, baseline)}
        for method in expected.finetune_methods:
            label = expected.finetune_name(method)
            curves = sel.finetune_curves(df, metric, expected, method)
            if curves.empty:
                raise MissingResultsError(
                    f"missing results for F5 fine-tuning {label}: {sel.available(df, 'finetune')}"
                )
            sel.check_complete(curves, f"F5 fine-tuning {label}", {"env": envs, "seed": seeds})
            final = sel.final_values(curves, expected.total_steps, label)
            ft_group[label] = score_matrix(final.rename(columns={"final": "value"}), envs, seeds, label)
        versus = {label: (baseline, ft_group[baseline]) for label in ft_group if label != baseline}
        groups.append(AggregateGroup("Fine-tuning (final)", baseline, ft_group, versus))
    return groups


def aggregate_table(
    df: pd.DataFrame,
    expected: Expected,
    *,
    pause: int | None = None,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """IQM (with CI) of every F5 variant, and its probability of improvement over the group's baseline."""
    out = []
    for group in aggregate_scores(df, expected, pause):
        iqms = iqm_intervals(group.scores, reps=reps, seed=seed, confidence=confidence)
        pairs = {label: (group.scores[label], base) for label, (_, base) in group.versus.items()}
        pois = poi_intervals(pairs, reps=reps, seed=seed, confidence=confidence)
        table = iqms.merge(pois, on="variant", how="left")
        table.insert(0, "group", group.name)
        table.insert(2, "baseline", [group.versus[v][0] if v in group.versus else "" for v in table["variant"]])
        table["n_seeds"], table["n_envs"] = len(expected.seeds), len(expected.envs)
        out.append(table)
    return pd.concat(out, ignore_index=True)


def _interval(point: float, lo: float, hi: float, one_seed: bool = False) -> str:
    if not np.isfinite(point):
        return "—"
    return f"{point:.3f}" if one_seed else f"{point:.3f} [{lo:.3f}, {hi:.3f}]"


def aggregate_markdown(table: pd.DataFrame, confidence: float = CONFIDENCE) -> str:
    """F5's numbers; with one seed, points without intervals (one run per environment has no spread)."""
    seeds = int(table["n_seeds"].iloc[0])
    one = seeds == 1
    iqm, poi = ("IQM", "P(improvement)") if one else ("IQM [CI]", "P(improvement) [CI]")
    rows = [
        {
            "Group": r["group"],
            "Variant": r["variant"],
            iqm: _interval(r["iqm"], r["iqm_lo"], r["iqm_hi"], one),
            poi: _interval(r["poi"], r["poi_lo"], r["poi_hi"], one),
            "over": r["baseline"] or "—",
        }
        for _, r in table.iterrows()
    ]
    intervals = (
        "1 seed: no intervals (a bootstrap over one run per environment has no spread)"
        if one
        else f"with {confidence:.0%} stratified-bootstrap intervals (rliable)"
    )
    title = (
        f"F5. Aggregates across {int(table['n_envs'].iloc[0])} environments of normalised scores "
        f"({seeds} seed{'' if one else 's'}): interquartile mean and probability of improvement over the "
        "baseline named in column 'over' (budget-matched: a recommendation is compared with online SAC after as "
        f"many env steps as it spent), {intervals}."
    )
    return labels.markdown(title, pd.DataFrame(rows))


def build_statistics(
    tidy_csv_paths: Sequence[Path | str],
    out_dir: Path | str,
    cfg: dict[str, Any] | None = None,
    *,
    pause: int | None = None,
    reps: int | None = None,
    seed: int = DEFAULT_SEED,
) -> list[Path]:
    """Write ``aggregate.csv`` and ``aggregate.md`` (the numbers of F5) under ``out_dir``.

    ``reps``: bootstrap replications (default: the config's ``statistics.bootstrap_reps``).
    """
    df = sel.load_results(tidy_csv_paths)
    cfg = cfg if cfg is not None else config.load()
    expected = Expected.from_config(cfg)
    table = aggregate_table(df, expected, pause=pause, reps=reps or config_reps(cfg), seed=seed)
    out_dir = Path(out_dir)
    csv_path, md_path = out_dir / "aggregate.csv", out_dir / "aggregate.md"
    write_text(csv_path, table.to_csv(index=False))
    write_text(md_path, aggregate_markdown(table))
    return [csv_path, md_path]
