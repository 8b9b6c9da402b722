"""Figures F1-F6: produced as non-empty PNG and PDF files; missing variants fail, never an empty panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from PIL import Image
from synthetic_results import WITH_WSRL, config, make_results

from replication import tidy
from replication.analysis import plotting
from replication.analysis import selection as sel
from replication.analysis.selection import Expected, MissingResultsError
from replication.plan import vocabulary


def test_build_figures_writes_every_figure(tmp_path) -> None:
    from replication.analysis import statistics

    path = tmp_path / "tidy.csv"
    envs = ["hopper", "kitchen"]  # enough for every figure (C4 runs on Hopper, C5 on Kitchen), and quicker
    tidy.write(make_results(envs=envs), path)
    stats_csv, _ = statistics.build_statistics([path], tmp_path / "stats", config(envs=envs), reps=50)
    written = plotting.build_figures([path], tmp_path / "figures", config(envs=envs), statistics_csv=stats_csv)
    assert list(written) == ["F1", "F2", "F3", "F4", "F5", "F6"]
    for name, paths in written.items():
        png, pdf = paths
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert pdf.read_bytes()[:5] == b"%PDF-", name
        assert png.stat().st_size > 10_000 and pdf.stat().st_size > 5_000, name
        with Image.open(png) as image:
            assert image.width >= plotting.MIN_WIDTH_PX, (name, image.size)
    assert not list((tmp_path / "figures").glob(".*.tmp"))  # atomic writes leave nothing behind


def test_f5_computes_its_statistics_when_not_given(raw: pd.DataFrame, expected: Expected) -> None:
    from replication.analysis import statistics

    table = statistics.aggregate_table(sel.prepare(raw), expected, reps=20)
    fig = plotting.fig_aggregate(table)
    assert len(fig.axes) == 2 and fig.axes[0].get_yticklabels()
    plotting.plt.close(fig)


def test_default_figures_follow_the_configuration() -> None:
    off = {"c4": {"enabled": False}, "c5": {"enabled": False}, "reward_granularity": {"enabled": False}}
    assert vocabulary.figures(config(analysis=off)) == ["F1", "F2", "F5"]
    assert vocabulary.figures(config(analysis=off, finetune={"methods": []})) == ["F1", "F5"]


@pytest.mark.parametrize(
    ("figure", "drop", "message"),
    [
        ("F1", lambda d: (d["stage"] == "recommend") & (d["algo"] == "cql"), "algo=cql"),
        ("F1", lambda d: (d["stage"] == "online") & (d["env"] == "kitchen"), "env=kitchen"),
        ("F1", lambda d: (d["selection"] == "online") & (d["env"] == "kitchen"), "control.*env=kitchen"),
        ("F2", lambda d: d["algo"] == "pex", "fine-tuning pex"),
        ("F2", lambda d: (d["algo"] == "calql") & (d["stage"] == "finetune") & (d["seed"] == 2), "seed=2"),
        ("F3", lambda d: d["variant_options"] == "extended=1", "extended=1"),
        ("F4", lambda d: d["variant_options"] == "reward=binary", "reward=binary"),
        ("F6", lambda d: d["variant_options"] == "delay=50", "K=50"),
    ],
)
def test_a_missing_variant_fails_with_its_name(raw, expected, figure, drop, message) -> None:
    df = sel.prepare(raw[~drop(raw)])
    draw = {
        "F1": plotting.fig_recommendation_curve,
        "F2": plotting.fig_finetune_curves,
        "F3": plotting.fig_iql_extended,
        "F4": plotting.fig_calql_kitchen_rewards,
        "F6": plotting.fig_reward_granularity,
    }[figure]
    with pytest.raises(MissingResultsError, match=message):
        draw(df, expected)


def test_a_switched_off_analysis_figure_is_an_error(raw: pd.DataFrame) -> None:
    exp = Expected.from_config(config(analysis={"c4": {"enabled": False}}))
    with pytest.raises(MissingResultsError, match="analysis.c4"):
        plotting.fig_iql_extended(sel.prepare(raw), exp)
    with pytest.raises(MissingResultsError, match="F5 needs"):
        plotting.fig_aggregate(pd.DataFrame())


def test_mean_curve_aligns_seeds_with_different_steps() -> None:
    curve = pd.DataFrame(
        {"seed": [0, 0, 0, 1, 1, 1], "env_step": [0, 10, 20, 5, 15, 25], "value": [0.0, 1.0, 2.0, 0.5, 1.5, 2.5]}
    )
    m = plotting.mean_curve(curve)
    assert list(m["env_step"]) == [5, 10, 15, 20]  # within the range both seeds cover
    np.testing.assert_allclose(m["mean"], [0.5, 1.0, 1.5, 2.0])
    assert (m["n"] == 2).all()


def _legend_texts(fig: plotting.plt.Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_f2_shows_wsrl_only_when_configured() -> None:
    df = sel.prepare(make_results(envs=("hopper", "kitchen"), methods=WITH_WSRL, granularity=False))
    names = {}
    for key, ft in (
        ("plain", {}),
        ("wsrl", {"methods": list(WITH_WSRL)}),
        ("kept", {"methods": list(WITH_WSRL), "wsrl": {"keep_offline_data": True}}),
    ):
        fig = plotting.fig_finetune_curves(df, Expected.from_config(config(envs=["hopper", "kitchen"], finetune=ft)))
        names[key] = _legend_texts(fig)
        plotting.plt.close(fig)
    assert "WSRL" not in " ".join(names["plain"])
    assert names["wsrl"][:5] == ["SAC continuation", "IQL FT", "PEX", "Cal-QL FT", "WSRL"]
    assert "WSRL (offline data kept)" in names["kept"]
    assert plotting.COLORS["wsrl"] not in [plotting.COLORS[m] for m in ("sac", "iql", "pex", "calql")]


def _intervals(fig) -> list[str]:
    """What in ``fig`` draws an interval: bands (fill_between) and error bars."""
    found = []
    for ax in fig.axes:
        found += [f"band in {ax.get_title()}" for c in ax.collections if isinstance(c, PolyCollection)]
        found += [f"error bar in {ax.get_title()}" for c in ax.containers if getattr(c, "has_yerr", False)]
        found += [f"error bar in {ax.get_title()}" for c in ax.containers if getattr(c, "has_xerr", False)]
    return found


def _texts(fig) -> str:
    legends = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    return " ".join([*legends, *(ax.get_xlabel() for ax in fig.axes)])


@pytest.mark.parametrize("seeds", [[0], [0, 1]])
def test_one_seed_draws_no_interval_and_says_so(seeds) -> None:
    """A one-seed interval is meaningless: with one seed no figure draws a band or error bar, and each
    says "1 seed: no intervals"; with two seeds they draw them and say nothing of the kind."""
    from replication.analysis import statistics

    envs = ["hopper", "kitchen"]
    cfg = config(envs=envs, seeds=seeds)
    expected = Expected.from_config(cfg)
    df = sel.prepare(make_results(envs=envs, seeds=seeds))
    figures = {
        "F1": plotting.fig_recommendation_curve(df, expected),
        "F2": plotting.fig_finetune_curves(df, expected),
        "F3": plotting.fig_iql_extended(df, expected),
        "F4": plotting.fig_calql_kitchen_rewards(df, expected),
        "F5": plotting.fig_aggregate(statistics.aggregate_table(df, expected, reps=20)),
        "F6": plotting.fig_reward_granularity(df, expected),
    }
    for name, fig in figures.items():
        drawn, text = _intervals(fig), _texts(fig)
        if name == "F6":  # seaborn's point plot draws its error bars as lines
            drawn = [line for ax in fig.axes for line in ax.lines if len(line.get_xdata()) == 2]
        if len(seeds) == 1:
            assert not drawn and plotting.ONE_SEED in text, name
        else:
            assert drawn and plotting.ONE_SEED not in text, name
        plotting.plt.close(fig)


def test_report_captions_of_a_one_seed_run_say_it_draws_no_intervals() -> None:
    from replication.analysis import report

    one, two = report.figure_captions({"seeds": [0]}), report.figure_captions({"seeds": [0, 1]})
    assert all(plotting.ONE_SEED in caption for caption in one.values())
    assert not any(plotting.ONE_SEED in caption for caption in two.values())
