"""Figures F1-F6 from the tidy results: one seaborn style, PNG and PDF, sized for a paper page.

* F1: recommendation curve: online SAC learning curve and the validated recommendation of every
  offline algorithm at each pause point, one panel per environment;
* F2: fine-tuning curves of IQL, PEX, Cal-QL and WSRL fine-tuning (those in ``finetune.methods``) vs SAC
  continuation after the pause;
* F3: analysis C4: IQL fine-tuning with the extended budget (the drop and the recovery);
* F4: analysis C5: Cal-QL fine-tuning in Kitchen with binary vs accumulated reward;
* F5: aggregate IQM with 95% intervals per variant and probability of improvement (rliable);
* F6: reward granularity (optional study): score at a pause point against the reward delay K.

Curves are plotted against the ledger-true ``env_step``: every env step a variant spent, so
validation and data collection shift a variant to the right of the online curve. Lines are means
over seeds, bands +- one standard deviation; markers with error bars likewise. With one seed a
figure draws no band, error bar or interval (one run has no spread) and its legend or axis says
:data:`ONE_SEED`. Every PNG is at least :data:`MIN_WIDTH_PX` pixels wide. Every figure raises
:class:`~replication.analysis.selection.MissingResultsError` naming what is missing, never an empty panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from replication.analysis import labels  # noqa: E402
from replication.analysis import selection as sel  # noqa: E402
from replication.analysis import statistics as stats  # noqa: E402
from replication.analysis.selection import Expected, MissingResultsError  # noqa: E402
from replication.io import atomic_path  # noqa: E402
from replication.plan import config, vocabulary  # noqa: E402

_COLORS = sns.color_palette("colorblind", 10)
COLORS = {
    "sac": (0.25, 0.25, 0.25),
    "iql": _COLORS[0],
    "cql": _COLORS[1],
    "calql": _COLORS[2],
    "pex": _COLORS[4],
    "wsrl": _COLORS[6],
    "binary": _COLORS[3],
    "accumulated": _COLORS[2],
}
ALGO_MARKERS = {"iql": "o", "cql": "s", "calql": "^"}  # F1: shape and colour tell the algorithms apart
PANEL = (2.0, 1.65)  # inches per panel: four panels fill a 8-inch-wide page row
NCOLS = 4
SCORE = "score"
DPI = 200  # PNG resolution, raised where a figure would be narrower than MIN_WIDTH_PX
MIN_WIDTH_PX = 1200
ONE_SEED = "1 seed: no intervals"


def style() -> Any:
    """A context manager with the figures' style (seaborn whitegrid, paper context, embedded fonts)."""
    rc = {
        **sns.axes_style("whitegrid"),
        **sns.plotting_context("paper", font_scale=1.0),
        "axes.titlesize": 9,
        "axes.labelsize": 8,
        "xtick.labelsize": 7,
        "ytick.labelsize": 7,
        "legend.fontsize": 8,
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "figure.dpi": 100,
        "grid.linewidth": 0.5,
        "lines.linewidth": 1.3,
    }
    return plt.rc_context(rc)


def _steps_axis(ax: plt.Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: labels.format_steps(x) if x else "0"))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))


def _metric_of(env: str) -> str:
    from replication.envspecs import specs

    spec = specs().get(env)
    return spec.metric if spec else SCORE


def _panel_title(env: str, metric: str) -> str:
    shown = labels.METRIC_NAMES.get(_metric_of(env) if metric == SCORE else metric, metric)
    return f"{labels.env_name(env)} ({shown})"


def _grid(n: int, ncols: int = NCOLS, panel: tuple[float, float] = PANEL) -> tuple[plt.Figure, list[plt.Axes]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows + 0.45), layout="constrained", squeeze=False
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _legend(fig: plt.Figure, handles: Sequence[Any], n_panels: int = 4, ncols: int | None = None) -> None:
    """One legend for all panels: above them in rows (read left to right), or beside one or two panels."""
    handles = list(handles)
    if n_panels <= 2:
        width, height = fig.get_size_inches()
        longest = max(len(h.get_label()) for h in handles)
        fig.set_size_inches(width + 0.5 + 0.055 * longest, height)  # room for the legend beside the panels
        fig.legend(handles=handles, loc="outside right center", frameon=False)
        return
    width = fig.get_size_inches()[0]
    ncols = max(1, min(len(handles), ncols or int(width / 1.45)))
    rows = math.ceil(len(handles) / ncols)
    # matplotlib fills legend columns first; order the handles so that rows read left to right
    grid = [handles[r * ncols : (r + 1) * ncols] for r in range(rows)]
    ordered = [grid[r][c] for c in range(ncols) for r in range(rows) if c < len(grid[r])]
    fig.legend(handles=ordered, loc="outside upper center", ncols=ncols, frameon=False)


def _line(color: Any, label: str, **kw: Any) -> Line2D:
    return Line2D([], [], color=color, label=label, **kw)


def mean_curve(curve: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds at each env step (``env_step, mean, std, n``).

    Seeds whose evaluations fall on different env steps are interpolated onto the union of their
    steps, within the range every seed covers.
    """
    steps = curve.groupby("seed")["env_step"].apply(lambda s: tuple(sorted(s)))
    if steps.nunique() > 1:
        lo = curve.groupby("seed")["env_step"].min().max()
        hi = curve.groupby("seed")["env_step"].max().min()
        grid = np.unique(curve["env_step"][(curve["env_step"] >= lo) & (curve["env_step"] <= hi)])
        parts = []
        for seed, g in curve.sort_values("env_step").groupby("seed"):
            parts.append(
                pd.DataFrame({"seed": seed, "env_step": grid, "value": np.interp(grid, g["env_step"], g["value"])})
            )
        curve = pd.concat(parts, ignore_index=True)
    out = curve.groupby("env_step")["value"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"}).fillna({"std": 0.0})


def _plot_curve(ax: plt.Axes, curve: pd.DataFrame, color: Any, **kw: Any) -> None:
    """The mean over seeds, with a band of +- one standard deviation when there are several seeds."""
    m = mean_curve(curve)
    ax.plot(m["env_step"], m["mean"], color=color, **kw)
    if curve["seed"].nunique() > 1:
        ax.fill_between(m["env_step"], m["mean"] - m["std"], m["mean"] + m["std"], color=color, alpha=0.18, lw=0)


def _spread(values: pd.Series, seeds: Sequence[int]) -> pd.Series | None:
    """Error-bar lengths (std over seeds), or ``None`` with one seed: no bar at all."""
    return values.fillna(0) if len(seeds) > 1 else None


def _seed_note(expected: Expected) -> list[Line2D]:
    """A legend entry saying that a one-seed figure draws no intervals (none with several seeds)."""
    return [_line("none", ONE_SEED)] if len(expected.seeds) == 1 else []


def _require_envs(curve: pd.DataFrame, expected: Expected, envs: Sequence[str], what: str) -> None:
    if curve.empty:
        raise MissingResultsError(f"missing results for {what}: no rows")
    sel.check_complete(curve, what, {"env": list(envs), "seed": list(expected.seeds)})


# --------------------------------------------------------------------------------------------
# F1: recommendation curve


def fig_recommendation_curve(
    df: pd.DataFrame,
    expected: Expected,
    *,
    metric: str = SCORE,
    dataset: str = "buffer",
    selections: Sequence[str] = ("offline", "best-of"),
) -> plt.Figure:
    """F1: online SAC learning curve and the recommendation of each offline algorithm at each pause.

    Colour and shape: the offline algorithm; filled markers: the validated offline policy
    (``selection=offline``); open markers: the validated best of the online and offline policies
    (``best-of``); black crosses: C1's control, online SAC's validated best snapshot without an
    offline learner (``algo=sac, selection=online``), at the best-of recommendation's step. Every
    marker sits at its ledger-true env step (pause plus the validation steps it spent): markers of one
    pause overlap rather than being shifted off their step.
    """
    envs = expected.envs
    online = sel.online_curve(df, metric, envs=envs)
    _require_envs(online, expected, envs, "F1 online SAC curve")
    pairs = sel.recommendation_pairs(
        df, metric, algo=expected.algos, dataset=dataset, validation="full", selection=list(selections), envs=envs
    )
    sel.check_complete(
        pairs,
        f"F1 recommendations (dataset={dataset}, validation=full)",
        {"env": envs, "seed": expected.seeds, "algo": expected.algos, "selection": list(selections)},
    )
    pauses = sorted(set(pairs["pause"]))
    sel.check_complete(pairs, "F1 recommendations at every pause point", {"env": envs, "pause": pauses})
    control = sel.select(df, metric, stage="recommend", envs=envs, **sel.CONTROL)
    sel.check_complete(control, "F1 C1's control (the online runs' control.csv)", {"env": envs, "seed": expected.seeds})
    with style():
        fig, axes = _grid(len(envs))
        for ax, env in zip(axes, envs, strict=True):
            _plot_curve(ax, online[online["env"] == env], COLORS["sac"], lw=1.2)
            for pause in pauses:
                ax.axvline(pause, color="0.8", lw=0.6, ls=":", zorder=0)
            for algo in expected.algos:
                for chosen in selections:
                    g = pairs[(pairs["env"] == env) & (pairs["algo"] == algo) & (pairs["selection"] == chosen)]
                    s = g.groupby("pause").agg(x=("env_step", "mean"), y=("value", "mean"), e=("value", "std"))
                    filled = chosen == "offline"
                    ax.errorbar(
                        s["x"],
                        s["y"],
                        yerr=_spread(s["e"], expected.seeds),
                        fmt=ALGO_MARKERS.get(algo, "o"),
                        ms=3.5,
                        lw=0.8,
                        capsize=1.5,
                        color=COLORS.get(algo),
                        mfc=COLORS.get(algo) if filled else "white",
                        mew=0.9,
                        zorder=3,
                        alpha=0.85,
                    )
            c = control[control["env"] == env]
            c = c.groupby("pause").agg(x=("env_step", "mean"), y=("value", "mean"), e=("value", "std"))
            ax.errorbar(c["x"], c["y"], yerr=_spread(c["e"], expected.seeds), fmt="x", ms=4, lw=0.8,
                        capsize=1.5, color="black", zorder=4, alpha=0.85)  # fmt: skip
            ax.set_title(_panel_title(env, metric))
            _steps_axis(ax)
        for ax in axes:
            ax.set_xlabel("env steps" if ax.get_subplotspec().is_last_row() else "")
        handles = [_line(COLORS["sac"], "Online SAC")]
        handles.append(_line("black", "validated SAC snapshot (control)", marker="x", ls="", ms=4))
        handles += [
            _line(COLORS[a], labels.ALGO_NAMES.get(a, a), marker=ALGO_MARKERS.get(a, "o"), ls="", ms=4)
            for a in expected.algos
        ]
        if "offline" in selections:
            handles.append(_line("0.3", "offline policy", marker="o", ls="", ms=4))
        if "best-of" in selections:
            handles.append(_line("0.3", "best of online/offline", marker="o", ls="", ms=4, mfc="white"))
        handles += _seed_note(expected)
        _legend(fig, handles, len(envs), ncols=1 + len(expected.algos))  # a row of variants, a row of marker kinds
    return fig


# --------------------------------------------------------------------------------------------
# F2: fine-tuning curves


def fig_finetune_curves(df: pd.DataFrame, expected: Expected, *, metric: str = SCORE) -> plt.Figure:
    """F2: each fine-tuning method vs SAC continuation, from the fine-tuning pause to the budget."""
    envs, methods = expected.envs, expected.finetune_methods
    if not methods:
        raise MissingResultsError("F2 needs fine-tuning results, but finetune.methods is empty in the configuration")
    online = sel.online_curve(df, metric, envs=envs)
    _require_envs(online, expected, envs, "F2 SAC continuation")
    context_start = expected.finetune_pause - 0.25 * (expected.total_steps - expected.finetune_pause)
    curves = {}
    for method in methods:
        c = sel.finetune_curves(df, metric, expected, method)
        c = c[c["env_step"] <= expected.total_steps]
        _require_envs(c, expected, envs, f"F2 fine-tuning {method} (dataset={expected.finetune_dataset})")
        curves[method] = c
    with style():
        fig, axes = _grid(len(envs))
        for ax, env in zip(axes, envs, strict=True):
            o = online[(online["env"] == env) & (online["env_step"] >= context_start)]
            o = o[o["env_step"] <= expected.total_steps]
            before, after = o[o["env_step"] <= expected.finetune_pause], o[o["env_step"] >= expected.finetune_pause]
            _plot_curve(ax, before, COLORS["sac"], lw=1.0, alpha=0.5)
            _plot_curve(ax, after, COLORS["sac"], lw=1.2)
            for method in methods:
                c = curves[method]
                _plot_curve(ax, c[c["env"] == env], COLORS.get(method), lw=1.2)
            ax.axvline(expected.finetune_pause, color="0.5", lw=0.8, ls="--", zorder=0)
            ax.set_title(_panel_title(env, metric))
            _steps_axis(ax)
            ax.set_xlabel("env steps" if ax.get_subplotspec().is_last_row() else "")
        handles = [_line(COLORS["sac"], labels.FINETUNE_NAMES["sac"])]
        handles += [_line(COLORS.get(m), expected.finetune_name(m)) for m in methods]
        handles.append(_line("0.5", "pause (switch)", ls="--", lw=0.8))
        _legend(fig, handles + _seed_note(expected), len(envs))
    return fig


# --------------------------------------------------------------------------------------------
# F3: C4, IQL fine-tuning with an extended budget


def _extended_curve(df: pd.DataFrame, expected: Expected, metric: str, envs: Sequence[str]) -> pd.DataFrame:
    ext = sel.finetune_curves(df, metric, expected, "iql", "extended=1")
    ext = ext[ext["env"].isin(envs)]
    _require_envs(ext, expected, envs, "F3 extended IQL fine-tuning (finetune algo=iql options=extended=1)")
    plain = sel.finetune_curves(df, metric, expected, "iql", "")
    first = ext.groupby(["env", "seed"])["env_step"].min().rename("_first")
    plain = plain.join(first, on=["env", "seed"], how="inner")
    return pd.concat([plain[plain["env_step"] < plain["_first"]].drop(columns="_first"), ext], ignore_index=True)


def fig_iql_extended(df: pd.DataFrame, expected: Expected, *, metric: str = SCORE) -> plt.Figure:
    """F3: extended IQL fine-tuning, with SAC continuation, the level at the switch and the budget end."""
    envs = expected.c4_envs
    if not envs:
        raise MissingResultsError("F3 needs analysis C4, which the configuration switches off (analysis.c4)")
    curve = _extended_curve(df, expected, metric, envs)
    switch = sel.switch_levels(df, metric, expected, "iql", curve)
    online = sel.sac_continuation(df, metric, expected, envs)
    online = online[online["env_step"] <= expected.total_steps]
    with style():
        fig, axes = _grid(len(envs), ncols=min(len(envs), 3), panel=(2.5, 1.8))
        for ax, env in zip(axes, envs, strict=True):
            _plot_curve(ax, online[online["env"] == env], COLORS["sac"], lw=1.2)
            _plot_curve(ax, curve[curve["env"] == env], COLORS["iql"], lw=1.2)
            ax.axhline(switch[switch["env"] == env]["switch"].mean(), color=COLORS["iql"], lw=0.8, ls=":")
            ax.axvline(expected.total_steps, color="0.4", lw=0.8, ls="--", zorder=0)
            ax.set_title(_panel_title(env, metric))
            _steps_axis(ax)
            ax.set_xlabel("env steps" if ax.get_subplotspec().is_last_row() else "")
        _legend(
            fig,
            [
                _line(COLORS["sac"], labels.FINETUNE_NAMES["sac"]),
                _line(COLORS["iql"], "IQL FT, extended budget"),
                _line(COLORS["iql"], "level at the switch", ls=":", lw=0.8),
                _line("0.4", "end of budget T", ls="--", lw=0.8),
                *_seed_note(expected),
            ],
            len(envs),
        )
    return fig


# --------------------------------------------------------------------------------------------
# F4: C5, Cal-QL in Kitchen with binary vs accumulated reward


def fig_calql_kitchen_rewards(df: pd.DataFrame, expected: Expected, *, metric: str = SCORE) -> plt.Figure:
    """F4: Cal-QL fine-tuning in the C5 environment, one curve per reward mode, with SAC continuation."""
    env = expected.c5_env
    if env is None:
        raise MissingResultsError("F4 needs analysis C5, which the configuration switches off (analysis.c5)")
    curves = {}
    for mode in expected.c5_rewards:
        c = sel.finetune_curves(df, metric, expected, "calql", f"reward={mode}")
        c = c[(c["env"] == env) & (c["env_step"] <= expected.total_steps)]
        _require_envs(c, expected, [env], f"F4 Cal-QL fine-tuning with reward={mode} in {env}")
        curves[mode] = c
    online = sel.sac_continuation(df, metric, expected, [env])
    online = online[online["env_step"] <= expected.total_steps]
    _require_envs(online, expected, [env], f"F4 SAC continuation in {env}")
    palette = {m: COLORS.get(m, _COLORS[(i + 5) % 10]) for i, m in enumerate(expected.c5_rewards)}
    with style():
        fig, axes = _grid(1, panel=(3.2, 2.3))
        ax = axes[0]
        _plot_curve(ax, online, COLORS["sac"], lw=1.2)
        for mode, c in curves.items():
            _plot_curve(ax, c, palette[mode], lw=1.3)
        ax.axvline(expected.finetune_pause, color="0.5", lw=0.8, ls="--", zorder=0)
        ax.set_title(f"Cal-QL fine-tuning, {_panel_title(env, metric)}")
        ax.set_xlabel("env steps")
        _steps_axis(ax)
        handles = [_line(COLORS["sac"], labels.FINETUNE_NAMES["sac"])]
        handles += [_line(palette[m], f"Cal-QL, {m} reward") for m in curves]
        handles.append(_line("0.5", "pause (switch)", ls="--", lw=0.8))
        _legend(fig, handles + _seed_note(expected), 1)
    return fig


# --------------------------------------------------------------------------------------------
# F5: aggregate IQM and probability of improvement


def _variant_color(label: str) -> Any:
    for key, name in (*labels.FINETUNE_NAMES.items(), *labels.ALGO_NAMES.items()):
        if label.startswith(name):
            return COLORS.get(key, "0.3")
    return "0.3"


def fig_aggregate(table: pd.DataFrame) -> plt.Figure:
    """F5: IQM with interval per variant (left) and probability of improvement over the baseline (right);
    points without intervals when the table's ``n_seeds`` is 1."""
    need = {"group", "variant", "baseline", "iqm", "iqm_lo", "iqm_hi", "poi", "poi_lo", "poi_hi"}
    if table.empty or not need <= set(table.columns):
        raise MissingResultsError(f"F5 needs the aggregate table with columns {sorted(need)}")
    rows: list[tuple[str, Any]] = []  # ("group", name) or ("variant", row)
    for group, g in table.groupby("group", sort=False):
        rows.append(("group", group))
        rows += [("variant", r) for _, r in g.iterrows()]
    height = 0.2 * len(rows) + 0.9
    one_seed = "n_seeds" in table and int(table["n_seeds"].min()) == 1  # no interval: points only
    with style():
        fig, (ax_iqm, ax_poi) = plt.subplots(
            1, 2, figsize=(7.2, height), sharey=True, layout="constrained", gridspec_kw={"width_ratios": [1, 1]}
        )
        ys, labels = [], []
        for i, (kind, item) in enumerate(rows):
            y = len(rows) - i
            if kind == "group":
                ax_iqm.text(
                    -0.02,
                    y,
                    item,
                    transform=ax_iqm.get_yaxis_transform(),
                    ha="right",
                    va="center",
                    fontsize=8,
                    fontweight="bold",
                )
                continue
            r = item
            color = _variant_color(r["variant"])
            is_base = not isinstance(r["baseline"], str) or not r["baseline"]
            ax_iqm.errorbar(
                r["iqm"],
                y,
                xerr=None if one_seed else [[r["iqm"] - r["iqm_lo"]], [r["iqm_hi"] - r["iqm"]]],
                fmt="D" if is_base else "o",
                ms=4,
                color=color,
                capsize=2,
                lw=1.1,
            )
            if not is_base and np.isfinite(r["poi"]):
                ax_poi.errorbar(
                    r["poi"],
                    y,
                    xerr=None if one_seed else [[r["poi"] - r["poi_lo"]], [r["poi_hi"] - r["poi"]]],
                    fmt="o",
                    ms=4,
                    color=color,
                    capsize=2,
                    lw=1.1,
                )
            else:
                ax_poi.text(0.5, y, "baseline", ha="center", va="center", fontsize=7, color="0.4")
            ys.append(y)
            labels.append(("    " if not is_base else "  ") + r["variant"])
        ax_iqm.set_yticks(ys, labels)
        ax_iqm.set_ylim(0.4, len(rows) + 0.6)
        interval = ONE_SEED if one_seed else "95% CI"
        ax_iqm.set_xlabel(f"IQM of normalised score ({interval})")
        ax_poi.set_xlabel(f"P(variant > matched baseline) ({interval})")
        ax_poi.axvline(0.5, color="0.5", lw=0.8, ls="--")
        ax_poi.set_xlim(-0.02, 1.02)
        for ax in (ax_iqm, ax_poi):
            ax.grid(axis="y", visible=False)
            ax.tick_params(axis="y", length=0)
    return fig


# --------------------------------------------------------------------------------------------
# F6: reward granularity


def fig_reward_granularity(
    df: pd.DataFrame, expected: Expected, *, metric: str = SCORE, selection: str = "offline"
) -> plt.Figure:
    """F6: online SAC and the recommendations at one pause point against the reward delay K.

    Rows of delay K carry the variant option ``delay=K``; for K = 1 the plain rows stand in when
    there are no ``delay=1`` rows. The pause is the latest one present for every K.
    """
    envs, delays = expected.granularity_envs, expected.granularity_delays
    if not envs or not delays:
        raise MissingResultsError(
            "F6 needs the reward-granularity study, which the configuration switches off (analysis.reward_granularity)"
        )
    points = []
    for delay in delays:
        options = f"delay={delay}"
        if delay == 1 and sel.select(df, metric, stage="recommend", options=options, envs=envs).empty:
            options = ""
        try:
            pairs = sel.recommendation_pairs(
                df,
                metric,
                algo=expected.algos,
                dataset="buffer",
                validation="full",
                selection=selection,
                options=options,
                envs=envs,
            )
        except MissingResultsError as err:
            raise MissingResultsError(f"F6 reward delay K={delay}: {err}") from err
        sel.check_complete(
            pairs,
            f"F6 recommendations with delay={delay}",
            {"env": envs, "seed": expected.seeds, "algo": expected.algos},
        )
        points.append(pairs.assign(delay=delay))
    data = pd.concat(points, ignore_index=True)
    common = set.intersection(*(set(g["pause"]) for _, g in data.groupby("delay")))
    if not common:
        raise MissingResultsError("F6: no pause point is present for every reward delay")
    pause = max(common)
    data = data[data["pause"] == pause]
    online = data.drop_duplicates(["env", "seed", "delay"])[["env", "seed", "delay", "online_value"]]
    long = pd.concat(
        [
            online.rename(columns={"online_value": "value"}).assign(variant="Online SAC"),
            data[["env", "seed", "delay", "value", "algo"]].assign(variant=lambda d: d["algo"].map(labels.ALGO_NAMES)),
        ],
        ignore_index=True,
    )
    order = ["Online SAC", *[labels.ALGO_NAMES.get(a, a) for a in expected.algos]]
    palette = {"Online SAC": COLORS["sac"], **{labels.ALGO_NAMES.get(a, a): COLORS.get(a) for a in expected.algos}}
    with style():
        fig, axes = _grid(len(envs), ncols=min(len(envs), 3), panel=(2.6, 1.9))
        for ax, env in zip(axes, envs, strict=True):
            sns.pointplot(
                data=long[long["env"] == env],
                x="delay",
                y="value",
                hue="variant",
                hue_order=order,
                palette=palette,
                errorbar="sd" if len(expected.seeds) > 1 else None,
                dodge=0.35,
                markersize=4,
                linewidth=1.1,
                err_kws={"linewidth": 0.9},
                ax=ax,
                legend=False,
            )
            ax.set_title(f"{_panel_title(env, metric)} at {labels.format_steps(pause)}")
            ax.set_xlabel("reward delay K (env steps)")
            ax.set_ylabel("")
        handles = [_line(palette[v], v if v == "Online SAC" else f"{v} ({selection})", marker="o", ms=4) for v in order]
        _legend(fig, handles + _seed_note(expected), len(envs))
    return fig


# --------------------------------------------------------------------------------------------
# Saving and the entry point


def png_dpi(fig: plt.Figure) -> int:
    """:data:`DPI`, or more where the figure would be narrower than :data:`MIN_WIDTH_PX` pixels."""
    return max(DPI, math.ceil((MIN_WIDTH_PX + 1) / fig.get_size_inches()[0]))


def save_figure(fig: plt.Figure, out_dir: Path | str, name: str) -> list[Path]:
    """Write ``name``.png (at least :data:`MIN_WIDTH_PX` wide) and ``name``.pdf under ``out_dir``
    (atomically) and close the figure."""
    paths = []
    try:
        for ext in ("png", "pdf"):
            path = Path(out_dir) / f"{name}.{ext}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=ext, **({"dpi": png_dpi(fig)} if ext == "png" else {}))
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def build_figures(
    tidy_csv_paths: Sequence[Path | str],
    out_dir: Path | str,
    cfg: dict[str, Any] | None = None,
    *,
    figures: Sequence[str] | None = None,
    statistics_csv: Path | str | None = None,
    reps: int | None = None,
    seed: int = stats.DEFAULT_SEED,
) -> dict[str, list[Path]]:
    """Draw ``figures`` (default: every figure the configuration makes) as PNG and PDF under ``out_dir``.

    F5 reads its numbers from ``statistics_csv`` (the ``aggregate.csv`` of
    :func:`replication.analysis.statistics.build_statistics`) when given, else computes them with ``reps``
    bootstrap replications (default: the config's ``statistics.bootstrap_reps``).
    """
    df = sel.load_results(tidy_csv_paths)
    cfg = cfg if cfg is not None else config.load()
    expected = Expected.from_config(cfg)
    names = list(figures) if figures is not None else vocabulary.figures(cfg)
    if figures is None and cfg.get("claims"):  # a plan cut to some claims: only the figures it has the jobs for
        from replication.plan.plan import Plan

        names = [n for n in names if n not in Plan.build(cfg).omitted]
    unknown = [n for n in names if n not in vocabulary.FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; valid: {', '.join(vocabulary.FIGURES)}")
    written = {}
    for name in names:
        if name == "F1":
            fig = fig_recommendation_curve(df, expected)
        elif name == "F2":
            fig = fig_finetune_curves(df, expected)
        elif name == "F3":
            fig = fig_iql_extended(df, expected)
        elif name == "F4":
            fig = fig_calql_kitchen_rewards(df, expected)
        elif name == "F5":
            if statistics_csv is not None:
                table = pd.read_csv(statistics_csv)
            else:
                table = stats.aggregate_table(df, expected, reps=reps or stats.config_reps(cfg), seed=seed)
            fig = fig_aggregate(table)
        else:
            fig = fig_reward_granularity(df, expected)
        written[name] = save_figure(fig, out_dir, name)
    return written
