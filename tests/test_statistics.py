"""IQM, intervals and probability of improvement, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from synthetic_results import config, make_results

from replication.analysis import selection as sel
from replication.analysis import statistics as stats
from replication.analysis.selection import Expected

REPS = 300


def _direct_bootstrap(matrices: list[np.ndarray], statistic, reps: int, seed: int) -> np.ndarray:
    """Stratified bootstrap written out: resample the runs of every task, independently per matrix."""
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(reps):
        samples = []
        for x in matrices:
            n, m = x.shape
            samples.append(x[rng.choice(n, (n, m), replace=True), np.arange(m)])
        values.append(statistic(*samples))
    return np.percentile(values, [2.5, 97.5])


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    x = np.random.default_rng(0).normal(size=(4, 3))  # 12 scores: drop 3 at each end
    middle = np.sort(x, axis=None)[3:9].mean()
    assert stats.iqm(x) == pytest.approx(middle)
    assert stats.iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25, axis=None))
    y = np.random.default_rng(1).normal(size=(5, 7))  # 35 scores: int(8.75) = 8 dropped at each end
    assert stats.iqm_sorted(y) == pytest.approx(scipy.stats.trim_mean(y, 0.25, axis=None), abs=1e-12)
    assert stats.iqm_sorted(y) == pytest.approx(np.sort(y, axis=None)[8:27].mean(), abs=1e-12)


def test_iqm_interval_equals_a_direct_stratified_bootstrap() -> None:
    x = np.random.default_rng(2).normal(size=(5, 4))
    table = stats.iqm_intervals({"a": x, "b": x + 1}, reps=REPS, seed=11)
    lo, hi = _direct_bootstrap([x], lambda s: scipy.stats.trim_mean(s, 0.25, axis=None), REPS, 11)
    a = table.set_index("variant").loc["a"]
    assert a["iqm"] == pytest.approx(scipy.stats.trim_mean(x, 0.25, axis=None))
    assert (a["iqm_lo"], a["iqm_hi"]) == pytest.approx((lo, hi), abs=1e-12)
    # each variant is bootstrapped from the same seed: shifting the data shifts the interval
    b = table.set_index("variant").loc["b"]
    assert (b["iqm_lo"], b["iqm_hi"]) == pytest.approx((lo + 1, hi + 1), abs=1e-12)


def test_intervals_repeat_exactly_and_leave_the_global_rng_alone() -> None:
    x = np.random.default_rng(3).normal(size=(5, 3))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = stats.bootstrap_interval(x, np.mean, reps=REPS, seed=5)
    assert np.array_equal(np.random.get_state()[1], before)
    assert stats.bootstrap_interval(x, np.mean, reps=REPS, seed=5) == first
    assert stats.bootstrap_interval(x, np.mean, reps=REPS, seed=6) != first


def test_probability_of_improvement_matches_rliable() -> None:
    rng = np.random.default_rng(4)
    for shape_x, shape_y in (((5, 3), (5, 3)), ((4, 6), (7, 6))):
        x = rng.integers(0, 4, shape_x).astype(float)  # many ties
        y = rng.integers(0, 4, shape_y).astype(float)
        assert stats.poi_pairwise(x, y) == pytest.approx(stats.probability_of_improvement(x, y), abs=1e-12)
    x = rng.normal(size=(5, 3))
    assert stats.probability_of_improvement(x, x) == 0.5
    assert stats.probability_of_improvement(x + 10, x) == 1.0


def test_poi_interval_equals_a_direct_independent_bootstrap() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(5, 4)), rng.normal(0.5, 1, size=(6, 4))
    from rliable import metrics

    row = stats.poi_intervals({"x>y": (x, y)}, reps=REPS, seed=3).iloc[0]
    lo, hi = _direct_bootstrap([x, y], metrics.probability_of_improvement, REPS, 3)
    assert row["poi"] == pytest.approx(metrics.probability_of_improvement(x, y))
    assert (row["poi_lo"], row["poi_hi"]) == pytest.approx((lo, hi), abs=1e-12)


def test_bad_score_matrices_are_refused() -> None:
    with pytest.raises(ValueError, match="num_seeds x num_envs"):
        stats.bootstrap_interval(np.zeros(5), np.mean, reps=10)
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_interval(np.array([[1.0, np.nan]]), np.mean, reps=10)


def test_aggregate_table_on_synthetic_results(prepared: pd.DataFrame) -> None:
    expected = Expected.from_config(config())
    assert stats.comparison_pause(prepared, expected) == 60_000  # the newdata pause: every variant exists there
    table = stats.aggregate_table(prepared, expected, reps=100)
    groups = list(dict.fromkeys(table["group"]))
    assert groups == ["Final-policy recommendation @ 60K", "Fine-tuning (final)"]
    base = table[table["baseline"] == ""]
    assert base["poi"].isna().all() and len(base) == 2
    assert table[table["baseline"] != ""]["poi"].notna().all()
    # budget-matched: each recommendation is compared with online SAC after the env steps it spent
    rec = table[table["group"].str.startswith("Final")].set_index("variant")
    assert rec.loc["IQL · newdata · full/offline", "baseline"] == "Online SAC @ 73K (same env steps)"  # +10K +3K
    assert rec.loc["IQL · buffer · full/offline", "baseline"] == "Online SAC @ 63K (same env steps)"
    assert rec.loc["IQL · buffer · none/offline", "baseline"] == "Online SAC @ 60K (same env steps)"
    ft = table[table["group"] == "Fine-tuning (final)"]
    assert set(ft["baseline"]) == {"", "SAC continuation"}
    assert len(table) == 1 + 3 * 2 * 3 + 1 + 3  # online, algo x dataset x (full/best-of, full/offline, none), FT
    # the baseline's IQM equals a direct computation from the tidy rows
    online = prepared[(prepared["stage"] == "online") & (prepared["metric"] == sel.NORMALIZED)
                      & (prepared["env_step"] == 60_000) & (prepared["variant_options"] == "")]  # fmt: skip
    matrix = online.pivot(index="seed", columns="env", values="value")[list(expected.envs)].to_numpy()
    row = base.iloc[0]
    assert row["iqm"] == pytest.approx(scipy.stats.trim_mean(matrix, 0.25, axis=None))
    assert row["iqm_lo"] <= row["iqm"] <= row["iqm_hi"]
    # in this synthetic data the unvalidated recommendations are worse than online SAC
    none = table[table["variant"].str.contains("none/offline")]
    assert (none["poi_hi"] < 0.5).all()


def test_build_statistics_writes_csv_and_markdown(tmp_path) -> None:
    from replication import tidy

    path = tmp_path / "tidy.csv"
    tidy.write(make_results(envs=("hopper", "sawyer-push"), granularity=False), path)
    cfg = config(envs=["hopper", "sawyer-push"])
    csv_path, md_path = stats.build_statistics([path], tmp_path / "stats", cfg, reps=100)
    table = pd.read_csv(csv_path)
    assert table["n_envs"].eq(2).all()
    assert "IQM [CI]" in md_path.read_text()


def test_f5_numbers_with_one_seed_have_no_interval() -> None:
    envs = ["hopper", "walker2d"]
    expected = Expected.from_config(config(envs=envs, seeds=[0]))
    table = stats.aggregate_table(sel.prepare(make_results(envs=envs, seeds=[0])), expected, reps=20)
    text = stats.aggregate_markdown(table)
    assert "(1 seed): " in text and "1 seed: no intervals" in text and "[CI]" not in text
    assert not any("[" in line.split("|")[3] for line in text.splitlines() if line.count("|") > 4)
