"""Selecting rows of the tidy results: the library the tables, statistics, scorecard and figures share.

The tidy table (:mod:`replication.tidy`) holds one row per (cell, variant, env step, metric). This
module picks variants out of it and pairs each variant with the online SAC run it branched from.
What the results must contain is read from the run's configuration (:class:`Expected`); anything
missing is an error that names it (:class:`MissingResultsError`), never an empty cell.

Conventions:

* "online at the pause point": the online evaluation at ``env_step == pause``, or the nearest one
  before it;
* a variant with ``variant_options`` (e.g. ``delay=10``) pairs with the online run of the same
  options when the results hold one, else with the plain online run;
* "final": the last evaluation at or before the total budget ``T`` (``budget.total_steps``).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from replication import tidy
from replication.analysis import labels, normalize
from replication.plan import vocabulary

NORMALIZED = normalize.NORMALIZED
OFFLINE_ALGOS = vocabulary.OFFLINE_ALGOS
FINETUNE_METHODS = tuple(vocabulary.FINETUNE_METHODS)
VARIANT_FILTERS = ("algo", "dataset", "validation", "selection")  # the columns that name a variant


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
    wsrl_source: str = vocabulary.FINETUNE_METHODS["wsrl"]
    wsrl_keep_offline_data: bool = False
    calql_mixing: str = "0.5"  # finetune.calql_mixing: the offline share of Cal-QL's fine-tuning batches
    pex_beta: float = 10.0  # finetune.pex_beta: PEX's choice inverse temperature
    claims: tuple[str, ...] | None = None  # config key claims: the claims the run planned (None: every claim)

    def finetune_settings(self, method: str) -> str:
        """The settings that shape a fine-tuning method's runs beyond its name (T3 states them)."""
        if method == "calql":
            return f"calql_mixing={self.calql_mixing}"
        if method == "pex":
            return f"pex_beta={self.pex_beta:g}"
        return ""

    def finetune_source(self) -> dict[str, str]:
        """The ``dataset`` and ``validation`` of the offline agents that fine-tuning starts from."""
        return {"dataset": self.finetune_dataset, "validation": self.finetune_validation}

    def start_algo(self, method: str) -> str:
        """The offline algorithm whose agent fine-tuning ``method`` starts from."""
        return self.wsrl_source if method == "wsrl" else vocabulary.FINETUNE_METHODS.get(method, method)

    def finetune_name(self, method: str) -> str:
        """The display name of fine-tuning ``method`` in this run (WSRL says whether it kept offline data)."""
        return labels.finetune_name(method, keep_offline_data=self.wsrl_keep_offline_data)

    def finetune_names(self) -> dict[str, str]:
        """Display names of SAC continuation and of every configured fine-tuning method."""
        return {m: self.finetune_name(m) for m in ("sac", *self.finetune_methods)}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Expected:
        """What the resolved configuration ``cfg`` makes the workflow produce."""
        total = int(cfg["budget"]["total_steps"])
        envs = tuple(cfg["envs"])
        ft = cfg["finetune"]
        newdata = ft["dataset"] == "newdata"
        ft_pause = vocabulary.newdata_pause_step(cfg) if newdata else vocabulary.finetune_pause_step(cfg)
        c4, c5, gran = (cfg["analysis"][k] for k in ("c4", "c5", "reward_granularity"))
        wsrl = ft.get("wsrl") or {}
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
            c5_env=vocabulary.c5_env(cfg),
            c5_rewards=tuple(c5["rewards"]) if vocabulary.c5_env(cfg) else (),
            granularity_envs=tuple(gran["envs"]) if gran.get("enabled") else (),
            granularity_delays=tuple(int(d) for d in gran["delays"]) if gran.get("enabled") else (),
            wsrl_source=str(wsrl.get("source", vocabulary.FINETUNE_METHODS["wsrl"])),
            wsrl_keep_offline_data=bool(wsrl.get("keep_offline_data", False)),
            calql_mixing=f"{ft['calql_mixing']:g}" if ft["calql_mixing"] != "proportional" else "proportional",
            pex_beta=float(ft["pex_beta"]),
            claims=tuple(cfg["claims"]) if cfg.get("claims") else None,
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
    return normalize.add_normalized_score(canonical(df))


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """A validated copy of a tidy table with canonical options and typed columns (same index)."""
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
    return df


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
    variant = {"algo": algo, "dataset": dataset, "validation": validation, "selection": selection}
    rec = select(df, metric, stage="recommend", options=options, envs=envs, **variant)
    if rec.empty:
        what = describe(stage="recommend", **variant)
        raise MissingResultsError(f"no results for {what} options={options or '(none)'}; {available(df, 'recommend')}")
    curve = online_curve(df, metric, options, envs=sorted(set(rec["env"])))
    out = value_at_or_before(curve, rec, "pause", "online SAC at the pause point")
    out = out.rename(columns={"at_step": "online_step", "at_value": "online_value"})
    out["diff"] = out["value"] - out["online_value"]
    return out


CONTROL = {"algo": "sac", "validation": "full", "selection": "online"}  # C1's control (tidy rows of the online run)


def control_pairs(
    df: pd.DataFrame, metric: str, rec: pd.DataFrame, options: str = "", envs: Sequence[str] | None = None
) -> pd.DataFrame:
    """``rec`` (recommendation rows) with C1's control of the same (env, seed, pause) as ``control_value``
    (online SAC's validated best snapshot, no offline learner) and ``diff = value - control_value``."""
    control = select(df, metric, stage="recommend", options=options, envs=envs, **CONTROL)
    control = control[["env", "seed", "pause", "env_step", "value"]].rename(
        columns={"value": "control_value", "env_step": "control_step"}
    )
    if control.duplicated(["env", "seed", "pause"]).any():
        raise ValueError("C1's control has more than one row per (env, seed, pause)")
    out = rec.merge(control, on=["env", "seed", "pause"], how="left")
    lacking = out[out["control_value"].isna()]
    if len(lacking):
        combos = sorted({(r.env, int(r.seed), int(r.pause)) for r in lacking.itertuples()})
        shown = "; ".join(f"env={e}, seed={s}, pause={p}" for e, s, p in combos[:8])
        raise MissingResultsError(
            f"missing results for C1's control ({describe(stage='recommend', **CONTROL)}, the online run's "
            f"control.csv): none at {shown}"
            + (f" (and {len(combos) - 8} more)" if len(combos) > 8 else "")
            + "; the online runs write it"
        )
    out["diff"] = out["value"] - out["control_value"]
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
    source = expected.finetune_source()
    return select(df, metric, stage="finetune", algo=method, options=options, envs=expected.envs, **source)


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
    curve's first evaluation (``source=first evaluation``). PEX starts from the offline IQL agent, WSRL
    from its ``finetune.wsrl.source`` (CQL or Cal-QL).
    """
    start_algo = expected.start_algo(method)
    rec = select(df, metric, stage="recommend", algo=start_algo, selection="offline", **expected.finetune_source())
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
