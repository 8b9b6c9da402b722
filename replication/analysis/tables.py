"""Tables T1-T3 of docs/protocol.md section 6 from the tidy results.

* T1, final-policy recommendation: per environment and pause point, online SAC at the pause vs
  the policy recommended from IQL / CQL / Cal-QL (validated), mean +- std over seeds, and the
  paired difference to online; and C1's control (``algo=sac``, ``selection=online``: online SAC's
  validated best snapshot, no offline learner) in rows of its own;
* T2, validation ablation: validation ``full`` vs ``none``, ``buffer`` vs ``newdata`` datasets;
* T3, fine-tuning: final performance per environment and method (IQL, PEX, Cal-QL, WSRL: those in
  ``finetune.methods``), with SAC continuation (the online run past the fine-tuning pause) as the baseline;
  its ``settings`` column (and title) name the run's Cal-QL batch mix and PEX's inverse temperature;
* L1, learning sanity: per environment, dataset and pause, the behaviour policy (online SAC at the
  pause) next to each offline learner trained on its data, without validation: did offline RL on the
  agent's own data recover, exceed or lose the level of the policy that collected it?

Rows are selected with :mod:`replication.analysis.selection`; standard deviations are sample
standard deviations over seeds (ddof=1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from replication.analysis.labels import ALGO_NAMES, FINETUNE_NAMES, env_name, format_steps, markdown
from replication.analysis.selection import (
    CONTROL,
    NORMALIZED,
    Expected,
    MissingResultsError,
    available,
    check_complete,
    final_values,
    finetune_curves,
    load_results,
    online_curve,
    recommendation_pairs,
    sac_continuation,
    select,
    switch_levels,
    value_at_or_before,
)
from replication.io import write_text
from replication.plan import config
from replication.plan.vocabulary import TABLES

# --------------------------------------------------------------------------------------------
# Tables


def _mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(dtype=float)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


def _mean_std_columns(g: pd.DataFrame, **columns: str) -> dict[str, float]:
    """``{name}_mean`` and ``{name}_std`` over seeds of column ``columns[name]``, in that order."""
    out = {}
    for name, col in columns.items():
        out[f"{name}_mean"], out[f"{name}_std"] = _mean_std(g[col])
    return out


def final_policy_table(df: pd.DataFrame, expected: Expected, metric: str = "score") -> pd.DataFrame:
    """T1: the validated recommendation of every offline algorithm vs online SAC, both at the pause
    (``diff_*``, as docs/protocol.md defines T1) and after as many env steps as the recommendation spent
    (``diff_matched_*``: the pause plus its validation and newdata steps; budget-matched)."""
    pairs = recommendation_pairs(
        df, metric, algo=expected.algos, dataset=expected.datasets, validation="full", envs=expected.envs
    )
    control = recommendation_pairs(df, metric, envs=expected.envs, **CONTROL)
    buffer = pairs[pairs["dataset"] == "buffer"]
    check_complete(
        control,
        "T1 (C1's control: online SAC's validated best snapshot)",
        {"env": expected.envs, "seed": expected.seeds, "pause": sorted(set(buffer["pause"]))},
        "The online runs write it (control.csv); rerun them.",
    )
    pairs = pd.concat([pairs, control], ignore_index=True)
    curve = online_curve(df, metric, envs=expected.envs)
    matched = value_at_or_before(curve, pairs[["env", "seed", "env_step"]], "env_step", "online SAC at the ledger step")
    pairs["online_matched"] = matched["at_value"].to_numpy()
    pairs["diff_matched"] = pairs["value"] - pairs["online_matched"]
    selections = sorted(set(pairs["selection"]) - {CONTROL["selection"]})
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
                **_mean_std_columns(
                    g,
                    online="online_value",
                    recommend="value",
                    diff="diff",
                    online_matched="online_matched",
                    diff_matched="diff_matched",
                ),
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
        mean, std = _mean_std(g["value"])
        diff_mean, diff_std = (np.nan, np.nan) if val == "none" else _mean_std(g["diff"])
        out.append(
            {
                "env": env,
                "pause": int(pause),
                "algo": algo,
                "dataset": ds,
                "validation": val,
                "selection": sel,
                "n_seeds": len(g),
                "mean": mean,
                "std": std,
                "diff_vs_none_mean": diff_mean,
                "diff_vs_none_std": diff_std,
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
                    **_mean_std_columns(g, switch="switch", final="final", diff_vs_sac="diff"),
                    "final_step_mean": float(g["final_step"].mean()),
                    "metric": metric,
                    "settings": expected.finetune_settings(method),
                }
            )
    return _ordered(pd.DataFrame(out), expected, ["env", "method"], method_order=("sac", *expected.finetune_methods))


LEARNING_BAND = 0.1  # (choice) L1 reads a learner within 10% of the behaviour policy as "recovered"


def learning_reading(diff: float, behaviour: float, band: float = LEARNING_BAND) -> str:
    """``exceeded``, ``recovered`` or ``lost``: the learner's mean against the behaviour policy's, within
    ``band`` x its magnitude (at least 1, so that a level near zero is not read from noise)."""
    margin = band * max(abs(behaviour), 1.0)
    return "exceeded" if diff > margin else "lost" if diff < -margin else "recovered"


def learning_table(df: pd.DataFrame, expected: Expected, metric: str = "score") -> pd.DataFrame:
    """L1: every offline learner without validation (its last checkpoint; for newdata, data collected by
    the last online policy) next to the behaviour policy, online SAC at the same pause; paired over seeds."""
    pairs = recommendation_pairs(
        df,
        metric,
        algo=expected.algos,
        dataset=expected.datasets,
        validation="none",
        selection="offline",  # the only selection without validation scores
        envs=expected.envs,
    )
    check_complete(
        pairs,
        "L1 (recommend, validation=none)",
        {"env": expected.envs, "seed": expected.seeds, "algo": expected.algos, "dataset": expected.datasets},
    )
    out = []
    for (env, ds, pause, algo), g in pairs.groupby(["env", "dataset", "pause", "algo"], sort=False):
        g = g.groupby("seed").mean(numeric_only=True)
        row = {"env": env, "dataset": ds, "pause": int(pause), "algo": algo, "n_seeds": len(g)}
        row.update(_mean_std_columns(g, behaviour="online_value", learner="value", diff="diff"))
        row["reading"] = learning_reading(row["diff_mean"], row["behaviour_mean"])
        out.append({**row, "metric": metric})
    return _ordered(pd.DataFrame(out), expected, ["env", "dataset", "pause", "algo"])


def _ordered(
    table: pd.DataFrame, expected: Expected, by: list[str], method_order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows in the configuration's order of environments, algorithms and datasets."""
    orders = {
        "env": list(expected.envs),
        "algo": list(expected.algos),
        "dataset": list(expected.datasets),
        "validation": ["full", "none"],
        "selection": ["best-of", "offline", "online"],
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


def _decimals(scale: float) -> int:
    return 0 if scale >= 100 else 1 if scale >= 10 else 2


def _spread(seeds: int | pd.DataFrame) -> str:
    """What a table's cells are, for its title: over how many seeds (a table's fewest ``n_seeds``)."""
    n = int(seeds["n_seeds"].min()) if isinstance(seeds, pd.DataFrame) else int(seeds)
    return "values of 1 seed (no ± std: one run has no spread)" if n == 1 else f"mean ± std over {n} seeds"


def _cell(mean: float, std: float, decimals: int, signed: bool = False) -> str:
    m = f"{mean:+.{decimals}f}" if signed else f"{mean:.{decimals}f}"
    return f"{m} ± {std:.{decimals}f}" if np.isfinite(std) else f"{m} (1 seed)"


def display_tables(
    name: str, table: pd.DataFrame, names: Mapping[str, str] | None = None
) -> list[tuple[str, pd.DataFrame]]:
    """Human-readable versions of a table (title, frame of strings); ``names``: display names of the
    fine-tuning methods (default :data:`~replication.analysis.labels.FINETUNE_NAMES`)."""
    if name == "T1":
        return _display_t1(table)
    if name == "T2":
        return _display_t2(table)
    if name == "T3":
        return _display_t3(table, names or FINETUNE_NAMES)
    if name == "L1":
        return _display_l1(table)
    raise ValueError(f"unknown table {name!r}")


def _display_t1(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    out = []
    for (ds, sel), part in table.groupby(["dataset", "selection"], sort=False):
        if sel == CONTROL["selection"]:
            out.append(_display_t1_control(part))
            continue
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
        title = (
            f"T1. Final-policy recommendation (dataset {ds}, validation full, selection {sel}): "
            f"{_metric_note(part)}, {_spread(part)}. Spent: env steps the recommendation used (pause, "
            "validation and newdata steps); Δ: paired difference to online SAC after the same env steps "
            "(budget-matched; its last evaluation if the run ends before). The difference at the pause is in the CSV."
        )
        out.append((title, pd.DataFrame(rows)))
    return out


def _display_t1_control(part: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    rows = []
    for (env, pause), g in part.groupby(["env", "pause"], sort=False):
        r = g.iloc[0]
        d = _decimals(max(abs(r["online_mean"]), abs(r["recommend_mean"])))
        rows.append(
            {
                "Environment": env_name(env),
                "Pause": format_steps(pause),
                "Online SAC @ pause": _cell(r["online_mean"], r["online_std"], d),
                "Spent": format_steps(r["env_step_mean"]),
                "Online SAC @ spent": _cell(r["online_matched_mean"], r["online_matched_std"], d),
                "Best SAC snapshot": _cell(r["recommend_mean"], r["recommend_std"], d),
                "Δ": _cell(r["diff_matched_mean"], r["diff_matched_std"], d, signed=True),
            }
        )
    title = (
        f"T1. C1's control, online SAC's validated best snapshot without an offline learner (the online side of "
        f"best-of, charged its ledger): {_metric_note(part)}, {_spread(part)}. "
        "Δ: paired difference to online SAC after the same env steps. The claims compare the recommendation "
        "with this control (C1.1-C1.4)."
    )
    return title, pd.DataFrame(rows)


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
        f"T2. Validation ablation at pause {pauses}: {_metric_note(table)}, {_spread(table)}; "
        "columns are validation/selection; "
        "Δ: paired difference to the unvalidated (none/offline) recommendation. Spent: env steps each side used "
        "(validation charges its episodes: the validated side spent more of the budget)."
    )
    return [(title, pd.DataFrame(rows))]


def _display_t3(table: pd.DataFrame, names: Mapping[str, str]) -> list[tuple[str, pd.DataFrame]]:
    rows = []
    for env, g in table.groupby("env", sort=False):
        d = _decimals(abs(g["final_mean"]).max())
        row = {"Environment": env_name(env)}
        for _, r in g.iterrows():
            label = names.get(r["method"], FINETUNE_NAMES.get(r["method"], r["method"]))
            row[label] = _cell(r["final_mean"], r["final_std"], d)
            if r["method"] != "sac":
                row[f"Δ {label}"] = _cell(r["diff_vs_sac_mean"], r["diff_vs_sac_std"], d, signed=True)
        rows.append(row)
    title = (
        f"T3. Fine-tuning, final performance: {_metric_note(table)} at the last evaluation within the budget, "
        f"{_spread(table)}; Δ: paired difference to SAC continuation."
    )
    if "settings" in table:
        settings = [f"{names.get(m, FINETUNE_NAMES.get(m, m))}: {s}" for m, s in _method_settings(table)]
        title += f" Settings: {'; '.join(settings)}." if settings else ""
    return [(title, pd.DataFrame(rows))]


def _method_settings(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, settings) of T3's methods that have settings (``calql_mixing=0.5``, ``pex_beta=10``)."""
    pairs = table[["method", "settings"]].fillna("").astype(str).drop_duplicates()
    return [(m, s) for m, s in pairs.itertuples(index=False) if s]


def _display_l1(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    rows = []
    one_seed = int(table["n_seeds"].min()) == 1
    for (env, ds, pause), g in table.groupby(["env", "dataset", "pause"], sort=False):
        d = _decimals(max(abs(g["behaviour_mean"]).max(), abs(g["learner_mean"]).max()))
        first = g.iloc[0]
        row = {"Environment": env_name(env), "Dataset": ds, "Pause": format_steps(pause)}
        row["Behaviour: SAC @ pause"] = _cell(first["behaviour_mean"], first["behaviour_std"], d)
        for _, r in g.iterrows():
            label = ALGO_NAMES.get(r["algo"], r["algo"])
            row[label] = _cell(r["learner_mean"], r["learner_std"], d)
            diff = f"{r['diff_mean']:+.{d}f}" if one_seed else _cell(r["diff_mean"], r["diff_std"], d, signed=True)
            row[f"Δ {label}"] = f"{diff} ({r['reading']}{', 1 seed' if one_seed else ''})"
        rows.append(row)
    seeds = int(table["n_seeds"].min())
    title = (
        f"L1. Learning sanity: {_metric_note(table)}, {_spread(seeds)}, of "
        "the behaviour policy (online SAC evaluated at the pause: the latest policy in the data) and of each "
        "offline learner trained on that data, without validation (its last checkpoint). Δ: paired difference "
        f"learner - behaviour, read as recovered within ±{LEARNING_BAND:.0%} of the behaviour's level (of 1 where the "
        "level is below 1), exceeded above, lost below"
        + ("; with one seed the reading is of one run, not of an interval." if seeds == 1 else ".")
    )
    return [(title, pd.DataFrame(rows))]


def _metric_note(table: pd.DataFrame) -> str:
    metric = str(table["metric"].iloc[0]) if len(table) else "score"
    if metric == "score":
        return "score (return, subtasks completed or success rate, by environment)"
    return "normalized score" if metric == NORMALIZED else metric


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


def write_table(
    name: str, table: pd.DataFrame, out_dir: Path | str, names: Mapping[str, str] | None = None
) -> list[Path]:
    """Write ``name``.csv (numbers), ``name``.md and ``name``.tex (display) under ``out_dir``; ``names``:
    display names of the fine-tuning methods (see :func:`display_tables`)."""
    out_dir = Path(out_dir)
    csv_path, md_path, tex_path = (out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex"))
    write_text(csv_path, table.to_csv(index=False))
    shown = display_tables(name, table, names)
    write_text(md_path, "\n".join(markdown(title, frame) for title, frame in shown))
    write_text(
        tex_path,
        "\n".join(latex(title, frame, f"tab:{name.lower()}-{i}") for i, (title, frame) in enumerate(shown)),
    )
    return [csv_path, md_path, tex_path]


BUILDERS = {"T1": final_policy_table, "T2": validation_table, "T3": finetune_table, "L1": learning_table}


def build_tables(
    tidy_csv_paths: Sequence[Path | str],
    out_dir: Path | str,
    cfg: dict[str, Any] | None = None,
    *,
    metric: str = "score",
    tables: Sequence[str] = TABLES,
) -> dict[str, list[Path]]:
    """Build tables ``tables`` from tidy CSV files; write CSV, Markdown and LaTeX under ``out_dir``.

    ``cfg`` is the run's resolved configuration (default: the paper profile); it says which
    environments, seeds and variants the results must hold. Returns the written paths by table.
    """
    df = load_results(tidy_csv_paths)
    expected = Expected.from_config(cfg if cfg is not None else config.load())
    written = {}
    for name in tables:
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; valid: {', '.join(TABLES)}")
        written[name] = write_table(name, BUILDERS[name](df, expected, metric), out_dir, expected.finetune_names())
    return written
