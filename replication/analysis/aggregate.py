"""Tables T1-T3 from the tidy results, and the selection helpers every report module shares.

The tidy table (:mod:`replication.analysis.tidy`) holds one row per (cell, variant, env step, metric). This
module picks variants out of it, pairs each variant with the online SAC run it branched from, and
builds the tables of protocol.md section 6:

* T1, final-policy recommendation: per environment and pause point, online SAC at the pause vs
  the policy recommended from IQL / CQL / Cal-QL (validated), mean +- std over seeds, and the
  paired difference to online;
* T2, validation ablation: validation ``full`` vs ``none``, ``buffer`` vs ``newdata`` datasets;
* T3, fine-tuning: final performance per environment and method, with SAC continuation (the online
  run past the fine-tuning pause) as the baseline.

What the results must contain is read from the run's configuration (:class:`Expected`); anything
missing is an error that names it (:class:`MissingResultsError`), never an empty cell.

Conventions:

* "online at the pause point": the online evaluation at ``env_step == pause``, or the nearest one
  before it;
* a variant with ``variant_options`` (e.g. ``delay=10``) pairs with the online run of the same
  options when the results hold one, else with the plain online run;
* "final": the last evaluation at or before the total budget ``T`` (``budget.total_steps``);
* standard deviations are sample standard deviations over seeds (ddof=1).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from replication.agents import normalize
from replication.analysis import tidy
from replication.io import write_text
from replication.plan import vocabulary

NORMALIZED = normalize.NORMALIZED
OFFLINE_ALGOS = vocabulary.OFFLINE_ALGOS
FINETUNE_METHODS = tuple(vocabulary.FINETUNE_METHODS)

ENV_NAMES = {
    "hopper": "Hopper",
    "halfcheetah": "HalfCheetah",
    "walker2d": "Walker2d",
    "ant": "Ant",
    "humanoid": "Humanoid",
    "kitchen": "Kitchen",
    "kitchen-sparse": "Kitchen Sparse",
    "sawyer-push": "Sawyer Push",
    "sawyer-coffee": "Sawyer Coffee",
    "sawyer-basketball": "Sawyer Basketball",
    "sawyer-lift": "Sawyer Lift",
    "sawyer-drape": "Sawyer Drape",
}
ALGO_NAMES = {"sac": "Online SAC", "iql": "IQL", "cql": "CQL", "calql": "Cal-QL", "pex": "PEX"}
FINETUNE_NAMES = {"sac": "SAC continuation", "iql": "IQL FT", "pex": "PEX", "calql": "Cal-QL FT"}
METRIC_NAMES = {"return": "return", "subtasks": "subtasks", "success": "success", NORMALIZED: "normalized"}


class MissingResultsError(ValueError):
    """The results lack rows that a table, figure or claim needs."""


# --------------------------------------------------------------------------------------------
# What a run's results must contain


@dataclasses.dataclass(frozen=True)
class Expected:
    """The environments, seeds and variants a run's configuration asks for."""

    envs: tuple[str, ...]
    seeds: tuple[int, ...]
    total_steps: int
    algos: tuple[str, ...] = OFFLINE_ALGOS
    datasets: tuple[str, ...] = ("buffer", "newdata")
    finetune_methods: tuple[str, ...] = FINETUNE_METHODS
    finetune_dataset: str = "buffer"
    finetune_validation: str = "full"
    finetune_pause: int = 0
    c4_envs: tuple[str, ...] = ()
    c5_env: str | None = None
    c5_rewards: tuple[str, ...] = ()
    granularity_envs: tuple[str, ...] = ()
    granularity_delays: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Expected:
        """What the resolved configuration ``cfg`` makes the workflow produce."""
        total = int(cfg["budget"]["total_steps"])
        envs = tuple(cfg["envs"])
        ft = cfg["finetune"]
        newdata = ft["dataset"] == "newdata"
        ft_pause = vocabulary.newdata_pause_step(cfg) if newdata else vocabulary.finetune_pause_step(cfg)
        c4, c5, gran = (cfg["analysis"][k] for k in ("c4", "c5", "reward_granularity"))
        return cls(
            envs=envs,
            seeds=tuple(int(s) for s in cfg["seeds"]),
            total_steps=total,
            algos=tuple(cfg["offline"]["algos"]),
            datasets=dataset_names(cfg),
            finetune_methods=tuple(ft["methods"]),
            finetune_dataset=str(ft["dataset"]),
            finetune_validation="full" if ft.get("validation", True) else "none",
            finetune_pause=int(ft_pause),
            c4_envs=tuple(e for e in c4["envs"] if e in envs) if c4.get("enabled") else (),
            c5_env=c5["env"] if c5.get("enabled") else None,
            c5_rewards=tuple(c5["rewards"]) if c5.get("enabled") else (),
            granularity_envs=tuple(gran["envs"]) if gran.get("enabled") else (),
            granularity_delays=tuple(int(d) for d in gran["delays"]) if gran.get("enabled") else (),
        )


def dataset_names(cfg: dict[str, Any]) -> tuple[str, ...]:
    """Tidy ``dataset`` names of the configured offline datasets.

    ``newdata`` collected with epsilon 0 is ``newdata``; with epsilon e > 0 it is ``newdata-eps{e}``.
    """
    names: list[str] = []
    for d in cfg["offline"]["datasets"]:
        if d == "newdata":
            names += [vocabulary.dataset_name(eps) for eps in cfg["newdata"]["epsilon"]]
        else:
            names.append(str(d))
    return tuple(names)


def load_config(path: Path | str | None) -> dict[str, Any]:
    """The resolved configuration of ``path``, or the paper profile (``config/defaults.yaml``)."""
    from replication.plan import config

    return config.load(path) if path else config.resolve()


# --------------------------------------------------------------------------------------------
# Reading and selecting


def canonical_options(text: str) -> str:
    """``variant_options`` with keys sorted and blanks removed (``b=2; a=1`` -> ``a=1;b=2``)."""
    return ";".join(sorted(f"{k}={v}" for k, v in parse_options(text).items()))


def parse_options(text: str) -> dict[str, str]:
    out = {}
    for part in str(text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"variant option {part!r} is not key=value (in {text!r})")
        out[key.strip()] = value.strip()
    return out


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A tidy table ready for selection: canonical options and a ``normalized_score`` metric."""
    tidy.validate(df)
    df = df.copy()
    for col in tidy.VARIANT_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    df["variant_options"] = df["variant_options"].map(canonical_options)
    df["env"] = df["env"].astype(str)
    df["seed"] = df["seed"].astype(int)
    df["pause"] = df["pause"].astype(int)
    df["env_step"] = df["env_step"].astype(int)
    df["value"] = df["value"].astype(float)
    return normalize.add_normalized_score(df)


def load_results(paths: Iterable[Path | str]) -> pd.DataFrame:
    """Read tidy CSV files and :func:`prepare` them."""
    paths = list(paths)
    if not paths:
        raise MissingResultsError("no tidy results files given")
    return prepare(tidy.read(paths))


def select(
    df: pd.DataFrame,
    metric: str,
    *,
    stage: str,
    algo: str | Sequence[str] | None = None,
    dataset: str | Sequence[str] | None = None,
    validation: str | Sequence[str] | None = None,
    selection: str | Sequence[str] | None = None,
    options: str | None = "",
    envs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of ``metric`` of one stage; ``None`` for a filter means any value.

    ``options`` is matched exactly after canonicalisation (``""``: only the plain variant).
    """
    mask = (df["metric"] == metric) & (df["stage"] == stage)
    for col, want in (("algo", algo), ("dataset", dataset), ("validation", validation), ("selection", selection)):
        if want is None:
            continue
        mask &= df[col].isin([want] if isinstance(want, str) else list(want))
    if options is not None:
        mask &= df["variant_options"] == canonical_options(options)
    if envs is not None:
        mask &= df["env"].isin(list(envs))
    return df[mask]


def describe(**filters: Any) -> str:
    """``stage=recommend algo=cql ...`` for messages."""
    parts = []
    for k, v in filters.items():
        if v is None:
            continue
        if k == "options":
            v = v or "(none)"
        parts.append(f"{k}={v if isinstance(v, str | int) else '|'.join(map(str, v))}")
    return " ".join(parts)


def check_complete(rows: pd.DataFrame, what: str, axes: dict[str, Sequence[Any]], hint: str = "") -> None:
    """Raise :class:`MissingResultsError` unless ``rows`` hold every combination of ``axes``."""
    cols = list(axes)
    have = set(rows[cols].drop_duplicates().itertuples(index=False, name=None)) if len(rows) else set()
    missing = [combo for combo in itertools.product(*axes.values()) if combo not in have]
    if not missing:
        return
    absent = []
    for col, values in axes.items():
        present = set(rows[col])
        if gone := [v for v in values if v not in present]:
            absent.append(f"{col}={', '.join(map(str, gone))}")
    shown = "; ".join(", ".join(f"{c}={v}" for c, v in zip(cols, combo, strict=True)) for combo in missing[:8])
    more = f" (and {len(missing) - 8} more)" if len(missing) > 8 else ""
    total = len(list(itertools.product(*axes.values())))
    raise MissingResultsError(
        f"missing results for {what}: "
        + (f"no rows at all for {'; '.join(absent)}. " if absent else "")
        + f"{len(missing)} of {total} combinations have no rows: {shown}{more}. "
        + (hint or "Check that the workflow finished these jobs, or remove them from the configuration.")
    )


def available(
    df: pd.DataFrame, stage: str, cols: Sequence[str] = ("algo", "dataset", "validation", "selection")
) -> str:
    """Which variants of ``stage`` the results do hold (for error messages)."""
    rows = df[df["stage"] == stage][list(cols) + ["variant_options"]].drop_duplicates()
    if rows.empty:
        return f"the results have no {stage} rows at all"
    items = sorted(" ".join(f"{c}={r[c] or '-'}" for c in [*cols, "variant_options"]) for _, r in rows.iterrows())
    return f"{stage} rows present: " + "; ".join(items[:12]) + (" ..." if len(items) > 12 else "")


# --------------------------------------------------------------------------------------------
# Pairing variants with the online run


def online_curve(df: pd.DataFrame, metric: str, options: str = "", envs: Sequence[str] | None = None) -> pd.DataFrame:
    """The online SAC curve (``env, seed, env_step, value``) of the given variant options.

    For an environment without an online run of exactly these options, the plain run is used.
    """
    plain = select(df, metric, stage="online", algo="sac", options="", envs=envs)
    if not canonical_options(options):
        return plain[["env", "seed", "env_step", "value"]]
    own = select(df, metric, stage="online", algo="sac", options=options, envs=envs)
    curve = pd.concat([own, plain[~plain["env"].isin(set(own["env"]))]], ignore_index=True)
    return curve[["env", "seed", "env_step", "value"]]


def value_at_or_before(curve: pd.DataFrame, keys: pd.DataFrame, step_col: str, what: str) -> pd.DataFrame:
    """``keys`` with ``at_step`` and ``at_value``: the curve's last point at or before ``keys[step_col]``."""
    left = keys.reset_index(drop=True).assign(_row=lambda d: np.arange(len(d)))
    left = left.sort_values(step_col, kind="stable")
    right = curve.rename(columns={"env_step": "at_step", "value": "at_value"}).sort_values("at_step", kind="stable")
    merged = pd.merge_asof(
        left, right, left_on=step_col, right_on="at_step", by=["env", "seed"], direction="backward"
    ).sort_values("_row")
    bad = merged[merged["at_value"].isna()]
    if len(bad):
        combos = sorted({(r.env, int(r.seed), int(getattr(r, step_col))) for r in bad.itertuples()})
        shown = "; ".join(f"env={e}, seed={s}, step={p}" for e, s, p in combos[:8])
        raise MissingResultsError(f"missing results for {what}: no evaluation at or before {shown}")
    return merged.drop(columns="_row").reset_index(drop=True)


def recommendation_pairs(
    df: pd.DataFrame,
    metric: str,
    *,
    algo: str | Sequence[str] | None = None,
    dataset: str | Sequence[str] | None = None,
    validation: str | Sequence[str] | None = None,
    selection: str | Sequence[str] | None = None,
    options: str = "",
    envs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Recommendation rows with the online value at their pause point (``online_value``) and ``diff``."""
    rec = select(
        df,
        metric,
        stage="recommend",
        algo=algo,
        dataset=dataset,
        validation=validation,
        selection=selection,
        options=options,
        envs=envs,
    )
    if rec.empty:
        what = describe(stage="recommend", algo=algo, dataset=dataset, validation=validation, selection=selection)
        raise MissingResultsError(f"no results for {what} options={options or '(none)'}; {available(df, 'recommend')}")
    curve = online_curve(df, metric, options, envs=sorted(set(rec["env"])))
    out = value_at_or_before(curve, rec, "pause", "online SAC at the pause point")
    out = out.rename(columns={"at_step": "online_step", "at_value": "online_value"})
    out["diff"] = out["value"] - out["online_value"]
    return out


def final_values(
    curve: pd.DataFrame, total_steps: int, what: str, keys: Sequence[str] = ("env", "seed")
) -> pd.DataFrame:
    """Per run, the last evaluation at or before ``total_steps`` (``final_step``, ``final``).

    A run whose last evaluation lies more than two evaluation intervals before ``total_steps`` is
    incomplete: an error, not a silently early "final" value.
    """
    keys = list(keys)
    inside = curve[curve["env_step"] <= total_steps].sort_values([*keys, "env_step"])
    if inside.empty:
        raise MissingResultsError(f"missing results for {what}: no evaluation at or before step {total_steps}")
    last = inside.groupby(keys, sort=True).tail(1)
    gaps = inside.groupby(keys, sort=True)["env_step"].apply(
        lambda s: float(np.median(np.diff(s))) if len(s) > 1 else 0
    )
    last = last.set_index(keys).join(gaps.rename("gap")).reset_index()
    short = last[last["env_step"] < total_steps - 2 * last["gap"]]
    if len(short):
        shown = "; ".join(
            ", ".join(f"{k}={r[k]}" for k in keys) + f" ends at {int(r['env_step'])}"
            for _, r in short.head(8).iterrows()
        )
        raise MissingResultsError(
            f"incomplete results for {what}: runs stop before the budget of {total_steps} env steps ({shown}); "
            "resume the workflow to finish them"
        )
    return last[[*keys, "env_step", "value"]].rename(columns={"env_step": "final_step", "value": "final"})


def finetune_curves(df: pd.DataFrame, metric: str, expected: Expected, method: str, options: str = "") -> pd.DataFrame:
    """Fine-tuning rows of ``method`` from the configured dataset and validation."""
    return select(
        df,
        metric,
        stage="finetune",
        algo=method,
        dataset=expected.finetune_dataset,
        validation=expected.finetune_validation,
        options=options,
        envs=expected.envs,
    )


def sac_continuation(
    df: pd.DataFrame, metric: str, expected: Expected, envs: Sequence[str] | None = None
) -> pd.DataFrame:
    """The online SAC curve from the fine-tuning pause on (the SAC-continuation baseline)."""
    curve = online_curve(df, metric, envs=envs or expected.envs)
    return curve[curve["env_step"] >= expected.finetune_pause]


def switch_levels(df: pd.DataFrame, metric: str, expected: Expected, method: str, curves: pd.DataFrame) -> pd.DataFrame:
    """Per (env, seed): the score of the offline agent a fine-tuning run starts from, and its step.

    That is the validated offline policy's recommendation row (``selection=offline``) at the
    fine-tuning pause when the results hold it (``source=recommend``), else the fine-tuning
    curve's first evaluation (``source=first evaluation``). PEX starts from the offline IQL agent.
    """
    start_algo = "iql" if method == "pex" else method
    rec = select(
        df,
        metric,
        stage="recommend",
        algo=start_algo,
        dataset=expected.finetune_dataset,
        validation=expected.finetune_validation,
        selection="offline",
        options="",
    )
    rec = rec[rec["pause"] == expected.finetune_pause][["env", "seed", "env_step", "value"]]
    first = (
        curves.sort_values("env_step").groupby(["env", "seed"], sort=True).head(1)[["env", "seed", "env_step", "value"]]
    )
    merged = first.merge(rec, on=["env", "seed"], how="left", suffixes=("_first", "_rec"))
    use_rec = merged["value_rec"].notna()
    return pd.DataFrame(
        {
            "env": merged["env"],
            "seed": merged["seed"],
            "switch_step": np.where(use_rec, merged["env_step_rec"], merged["env_step_first"]).astype(int),
            "switch": np.where(use_rec, merged["value_rec"], merged["value_first"]),
            "source": np.where(use_rec, "recommend", "first evaluation"),
        }
    )


# --------------------------------------------------------------------------------------------
# Tables


def _mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(dtype=float)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


def final_policy_table(df: pd.DataFrame, expected: Expected, metric: str = "score") -> pd.DataFrame:
    """T1: the validated recommendation of every offline algorithm vs online SAC, both at the pause
    (``diff_*``, as protocol.md defines T1) and after as many env steps as the recommendation spent
    (``diff_matched_*``: the pause plus its validation and newdata steps; budget-matched)."""
    pairs = recommendation_pairs(
        df, metric, algo=expected.algos, dataset=expected.datasets, validation="full", envs=expected.envs
    )
    curve = online_curve(df, metric, envs=expected.envs)
    matched = value_at_or_before(curve, pairs[["env", "seed", "env_step"]], "env_step", "online SAC at the ledger step")
    pairs["online_matched"] = matched["at_value"].to_numpy()
    pairs["diff_matched"] = pairs["value"] - pairs["online_matched"]
    selections = sorted(set(pairs["selection"]))
    for ds in expected.datasets:
        rows = pairs[pairs["dataset"] == ds]
        if rows.empty:
            raise MissingResultsError(
                f"missing results for T1: no recommendation rows for dataset={ds} validation=full; "
                f"{available(df, 'recommend')}"
            )
        check_complete(
            rows,
            f"T1 (recommend, dataset={ds}, validation=full)",
            {
                "env": expected.envs,
                "seed": expected.seeds,
                "algo": expected.algos,
                "selection": selections,
                "pause": sorted(set(rows["pause"])),
            },
        )
    out = []
    for (env, pause, ds, sel, algo), g in pairs.groupby(["env", "pause", "dataset", "selection", "algo"], sort=False):
        g = g.groupby("seed").mean(numeric_only=True)  # one value per seed
        out.append(
            {
                "env": env,
                "pause": int(pause),
                "dataset": ds,
                "selection": sel,
                "algo": algo,
                "n_seeds": len(g),
                "online_mean": _mean_std(g["online_value"])[0],
                "online_std": _mean_std(g["online_value"])[1],
                "recommend_mean": _mean_std(g["value"])[0],
                "recommend_std": _mean_std(g["value"])[1],
                "diff_mean": _mean_std(g["diff"])[0],
                "diff_std": _mean_std(g["diff"])[1],
                "online_matched_mean": _mean_std(g["online_matched"])[0],
                "online_matched_std": _mean_std(g["online_matched"])[1],
                "diff_matched_mean": _mean_std(g["diff_matched"])[0],
                "diff_matched_std": _mean_std(g["diff_matched"])[1],
                "env_step_mean": float(g["env_step"].mean()),
                "metric": metric,
            }
        )
    return _ordered(pd.DataFrame(out), expected, ["env", "dataset", "selection", "pause", "algo"])


def validation_table(df: pd.DataFrame, expected: Expected, metric: str = "score") -> pd.DataFrame:
    """T2: validated (``full``) vs unvalidated (``none``) recommendations, per dataset.

    Compared at every pause where each configured dataset has both validation modes. The
    ``diff_*`` columns of a ``full`` row are its paired difference to the ``none`` row of the same
    dataset (blank for the ``none`` rows themselves).
    """
    rec = select(df, metric, stage="recommend", algo=expected.algos, dataset=expected.datasets, envs=expected.envs)
    pauses_of = {
        (ds, val): set(rec[(rec["dataset"] == ds) & (rec["validation"] == val)]["pause"])
        for ds in expected.datasets
        for val in ("full", "none")
    }
    common = sorted(set.intersection(*pauses_of.values())) if pauses_of else []
    if not common:
        shown = "; ".join(
            f"dataset={ds} validation={val}: {sorted(p) or 'no rows'}" for (ds, val), p in pauses_of.items()
        )
        raise MissingResultsError(
            f"missing results for T2: no pause point has both validation=full and validation=none for every dataset "
            f"({', '.join(expected.datasets)}); pauses found: {shown}"
        )
    rec = rec[rec["pause"].isin(common)]
    variants = rec[["dataset", "validation", "selection"]].drop_duplicates().itertuples(index=False, name=None)
    for ds, val, sel in sorted(variants):
        check_complete(
            rec[(rec["dataset"] == ds) & (rec["validation"] == val) & (rec["selection"] == sel)],
            f"T2 (recommend, dataset={ds}, validation={val}, selection={sel})",
            {"env": expected.envs, "seed": expected.seeds, "algo": expected.algos, "pause": common},
        )
    keys = ["env", "pause", "algo", "dataset", "seed"]
    none = rec[rec["validation"] == "none"]
    if none["selection"].nunique() > 1:
        none = none[none["selection"] == "offline"]
    none = none.groupby(keys, as_index=False)["value"].mean().rename(columns={"value": "none_value"})
    rec = rec.merge(none, on=keys, how="left")
    rec["diff"] = np.where(rec["validation"] == "none", np.nan, rec["value"] - rec["none_value"])
    out = []
    for (env, pause, algo, ds, val, sel), g in rec.groupby(
        ["env", "pause", "algo", "dataset", "validation", "selection"], sort=False
    ):
        g = g.groupby("seed").mean(numeric_only=True)
        is_none = val == "none"
        out.append(
            {
                "env": env,
                "pause": int(pause),
                "algo": algo,
                "dataset": ds,
                "validation": val,
                "selection": sel,
                "n_seeds": len(g),
                "mean": _mean_std(g["value"])[0],
                "std": _mean_std(g["value"])[1],
                "diff_vs_none_mean": np.nan if is_none else _mean_std(g["diff"])[0],
                "diff_vs_none_std": np.nan if is_none else _mean_std(g["diff"])[1],
                "env_step_mean": float(g["env_step"].mean()),
                "metric": metric,
            }
        )
    return _ordered(pd.DataFrame(out), expected, ["env", "pause", "algo", "dataset", "validation", "selection"])


def finetune_table(df: pd.DataFrame, expected: Expected, metric: str = "score") -> pd.DataFrame:
    """T3: final performance of each fine-tuning method and of SAC continuation, per environment."""
    if not expected.finetune_methods:
        raise MissingResultsError("T3 needs fine-tuning results, but finetune.methods is empty in the configuration")
    sac = sac_continuation(df, metric, expected)
    check_complete(sac, "T3 (online SAC continuation)", {"env": expected.envs, "seed": expected.seeds})
    sac_final = final_values(sac, expected.total_steps, "SAC continuation")
    sac_switch = value_at_or_before(
        online_curve(df, metric, envs=expected.envs),
        sac_final[["env", "seed"]].assign(pause=expected.finetune_pause),
        "pause",
        "online SAC at the fine-tuning pause",
    ).rename(columns={"at_value": "switch"})
    rows = {"sac": (sac_final, sac_switch[["env", "seed", "switch"]])}
    for method in expected.finetune_methods:
        curves = finetune_curves(df, metric, expected, method)
        what = (
            f"T3 (finetune algo={method} dataset={expected.finetune_dataset} validation={expected.finetune_validation})"
        )
        if curves.empty:
            raise MissingResultsError(f"missing results for {what}: no rows; {available(df, 'finetune')}")
        check_complete(curves, what, {"env": expected.envs, "seed": expected.seeds})
        switch = switch_levels(df, metric, expected, method, curves)[["env", "seed", "switch"]]
        rows[method] = (final_values(curves, expected.total_steps, what), switch)
    out = []
    for method, (final, switch) in rows.items():
        merged = final.merge(switch, on=["env", "seed"]).merge(
            sac_final[["env", "seed", "final"]].rename(columns={"final": "sac_final"}), on=["env", "seed"]
        )
        merged["diff"] = merged["final"] - merged["sac_final"]
        for env, g in merged.groupby("env", sort=False):
            out.append(
                {
                    "env": env,
                    "method": method,
                    "n_seeds": len(g),
                    "switch_mean": _mean_std(g["switch"])[0],
                    "switch_std": _mean_std(g["switch"])[1],
                    "final_mean": _mean_std(g["final"])[0],
                    "final_std": _mean_std(g["final"])[1],
                    "diff_vs_sac_mean": _mean_std(g["diff"])[0],
                    "diff_vs_sac_std": _mean_std(g["diff"])[1],
                    "final_step_mean": float(g["final_step"].mean()),
                    "metric": metric,
                }
            )
    return _ordered(pd.DataFrame(out), expected, ["env", "method"], method_order=("sac", *expected.finetune_methods))


def _ordered(
    table: pd.DataFrame, expected: Expected, by: list[str], method_order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows in the configuration's order of environments, algorithms and datasets."""
    orders = {
        "env": list(expected.envs),
        "algo": list(expected.algos),
        "dataset": list(expected.datasets),
        "validation": ["full", "none"],
        "selection": ["best-of", "offline"],
        "method": list(method_order or ()),
    }
    table = table.copy()
    sort_cols = []
    for col in by:
        if col in orders and orders[col]:
            cats = orders[col] + sorted(set(table[col]) - set(orders[col]))
            table[f"_{col}"] = table[col].map({v: i for i, v in enumerate(cats)})
            sort_cols.append(f"_{col}")
        else:
            sort_cols.append(col)
    table = table.sort_values(sort_cols, kind="stable").drop(columns=[c for c in sort_cols if c.startswith("_")])
    return table.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Display: Markdown and LaTeX


def env_name(env: str) -> str:
    return ENV_NAMES.get(env, env.replace("-", " ").title())


def format_steps(steps: float) -> str:
    """``200000`` -> ``200K``, ``1000000`` -> ``1M``."""
    steps = float(steps)
    if abs(steps) >= 1e6:
        return f"{steps / 1e6:.3g}M"
    if abs(steps) >= 1e3:
        return f"{steps / 1e3:.3g}K"
    return f"{steps:.0f}"


def _decimals(scale: float) -> int:
    return 0 if scale >= 100 else 1 if scale >= 10 else 2


def _cell(mean: float, std: float, decimals: int, signed: bool = False) -> str:
    m = f"{mean:+.{decimals}f}" if signed else f"{mean:.{decimals}f}"
    return f"{m} ± {std:.{decimals}f}" if np.isfinite(std) else f"{m} (1 seed)"


def display_tables(name: str, table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Human-readable versions of a table (title, frame of strings)."""
    if name == "T1":
        return _display_t1(table)
    if name == "T2":
        return _display_t2(table)
    if name == "T3":
        return _display_t3(table)
    raise ValueError(f"unknown table {name!r}")


def _display_t1(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    out = []
    for (ds, sel), part in table.groupby(["dataset", "selection"], sort=False):
        rows = []
        for (env, pause), g in part.groupby(["env", "pause"], sort=False):
            d = _decimals(max(abs(g["online_mean"]).max(), abs(g["recommend_mean"]).max()))
            first = g.iloc[0]
            row = {"Environment": env_name(env), "Pause": format_steps(pause)}
            row["Online SAC @ pause"] = _cell(first["online_mean"], first["online_std"], d)
            row["Spent"] = format_steps(g["env_step_mean"].mean())
            row["Online SAC @ spent"] = _cell(first["online_matched_mean"], first["online_matched_std"], d)
            for _, r in g.iterrows():
                label = ALGO_NAMES.get(r["algo"], r["algo"])
                row[label] = _cell(r["recommend_mean"], r["recommend_std"], d)
                row[f"Δ {label}"] = _cell(r["diff_matched_mean"], r["diff_matched_std"], d, signed=True)
            rows.append(row)
        n = int(part["n_seeds"].min())
        title = (
            f"T1. Final-policy recommendation (dataset {ds}, validation full, selection {sel}): "
            f"{_metric_note(part)}, mean ± std over {n} seeds. Spent: env steps the recommendation used (pause, "
            "validation and newdata steps); Δ: paired difference to online SAC after the same env steps "
            "(budget-matched; its last evaluation if the run ends before). The difference at the pause is in the CSV."
        )
        out.append((title, pd.DataFrame(rows)))
    return out


def _display_t2(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    rows = []
    multi_pause = table["pause"].nunique() > 1
    for (env, pause, algo, ds), g in table.groupby(["env", "pause", "algo", "dataset"], sort=False):
        d = _decimals(abs(g["mean"]).max())
        row = {"Environment": env_name(env)}
        if multi_pause:
            row["Pause"] = format_steps(pause)
        row["Algorithm"] = ALGO_NAMES.get(algo, algo)
        row["Dataset"] = ds
        deltas, spent = {}, {}
        for _, r in g.iterrows():
            label = f"{r['validation']}/{r['selection']}"
            row[label] = _cell(r["mean"], r["std"], d)
            spent[f"Spent ({r['validation']})"] = format_steps(r["env_step_mean"])
            if r["validation"] != "none":
                deltas[f"Δ {label}"] = _cell(r["diff_vs_none_mean"], r["diff_vs_none_std"], d, signed=True)
        rows.append({**row, **deltas, **spent})
    pauses = ", ".join(format_steps(p) for p in sorted(set(table["pause"])))
    title = (
        f"T2. Validation ablation at pause {pauses}: {_metric_note(table)}, mean ± std over "
        f"{int(table['n_seeds'].min())} seeds; columns are validation/selection; "
        "Δ: paired difference to the unvalidated (none/offline) recommendation. Spent: env steps each side used "
        "(validation charges its episodes: the validated side spent more of the budget)."
    )
    return [(title, pd.DataFrame(rows))]


def _display_t3(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    rows = []
    for env, g in table.groupby("env", sort=False):
        d = _decimals(abs(g["final_mean"]).max())
        row = {"Environment": env_name(env)}
        for _, r in g.iterrows():
            label = FINETUNE_NAMES.get(r["method"], r["method"])
            row[label] = _cell(r["final_mean"], r["final_std"], d)
            if r["method"] != "sac":
                row[f"Δ {label}"] = _cell(r["diff_vs_sac_mean"], r["diff_vs_sac_std"], d, signed=True)
        rows.append(row)
    title = (
        f"T3. Fine-tuning, final performance: {_metric_note(table)} at the last evaluation within the budget, "
        f"mean ± std over {int(table['n_seeds'].min())} seeds; Δ: paired difference to SAC continuation."
    )
    return [(title, pd.DataFrame(rows))]


def _metric_note(table: pd.DataFrame) -> str:
    metric = str(table["metric"].iloc[0]) if len(table) else "score"
    if metric == "score":
        return "score (return, subtasks completed or success rate, by environment)"
    return "normalized score" if metric == NORMALIZED else metric


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``frame``, with ``|`` inside cells escaped."""
    frame = frame.map(lambda v: str(v).replace("|", "\\|")).rename(columns=lambda c: str(c).replace("|", "\\|"))
    return frame.to_markdown(index=False, disable_numparse=True)


def markdown(title: str, frame: pd.DataFrame) -> str:
    return f"**{title}**\n\n" + markdown_table(frame) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
}
_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": r"$-$", "·": r"$\cdot$"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    for sym, tex in _LATEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def latex(title: str, frame: pd.DataFrame, label: str) -> str:
    """A booktabs ``table`` environment."""
    cols = list(frame.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(title)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{" + "l" * min(2, len(cols)) + "r" * max(0, len(cols) - 2) + "}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in cols) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.astype(str).itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write_table(name: str, table: pd.DataFrame, out_dir: Path | str) -> list[Path]:
    """Write ``name``.csv (numbers), ``name``.md and ``name``.tex (display) under ``out_dir``."""
    out_dir = Path(out_dir)
    csv_path, md_path, tex_path = (out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex"))
    write_text(csv_path, table.to_csv(index=False))
    shown = display_tables(name, table)
    write_text(md_path, "\n".join(markdown(title, frame) for title, frame in shown))
    write_text(
        tex_path,
        "\n".join(latex(title, frame, f"tab:{name.lower()}-{i}") for i, (title, frame) in enumerate(shown)),
    )
    return [csv_path, md_path, tex_path]


TABLES = {"T1": final_policy_table, "T2": validation_table, "T3": finetune_table}


def build_tables(
    tidy_csv_paths: Sequence[Path | str],
    out_dir: Path | str,
    cfg: dict[str, Any] | None = None,
    *,
    metric: str = "score",
    tables: Sequence[str] = ("T1", "T2", "T3"),
) -> dict[str, list[Path]]:
    """Build tables ``tables`` from tidy CSV files; write CSV, Markdown and LaTeX under ``out_dir``.

    ``cfg`` is the run's resolved configuration (default: the paper profile); it says which
    environments, seeds and variants the results must hold. Returns the written paths by table.
    """
    df = load_results(tidy_csv_paths)
    expected = Expected.from_config(cfg if cfg is not None else load_config(None))
    written = {}
    for name in tables:
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; valid: {', '.join(TABLES)}")
        written[name] = write_table(name, TABLES[name](df, expected, metric), out_dir)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m replication.analysis.aggregate --results R.csv ... --out DIR [--config FILE]``."""
    parser = argparse.ArgumentParser(description="Build tables T1-T3 from tidy results.")
    parser.add_argument("--results", nargs="+", required=True, help="tidy results CSV files")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--config", help="run configuration file (default: the paper profile)")
    parser.add_argument("--metric", default="score", help="score (default) or normalized_score")
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    args = parser.parse_args(argv)
    build_tables(args.results, args.out, load_config(args.config), metric=args.metric, tables=args.tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
