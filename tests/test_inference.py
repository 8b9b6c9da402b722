"""The scorecard's hypothesis tests against scipy's, and their error rates on simulated noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from replication.analysis import inference


def test_mean_interval_is_the_one_sample_t_test() -> None:
    x = np.array([0.12, -0.03, 0.2, 0.07, 0.15])
    iv = inference.mean_interval(x)
    ref = sps.ttest_1samp(x, 0.0)
    ci = ref.confidence_interval(0.95)
    assert (iv.lo, iv.hi) == pytest.approx((ci.low, ci.high))
    assert iv.p_greater == pytest.approx(sps.ttest_1samp(x, 0.0, alternative="greater").pvalue)
    assert iv.p_less == pytest.approx(sps.ttest_1samp(x, 0.0, alternative="less").pvalue)
    with pytest.raises(ValueError, match="at least two seeds"):
        inference.mean_interval([0.1])


def test_constant_values_give_no_more_confidence_than_a_sign_test() -> None:
    iv = inference.mean_interval([0.0, 0.0, 0.0])
    assert (iv.estimate, iv.p_greater, iv.p_less) == (0.0, 1.0, 1.0)
    for n in (3, 5, 8):
        up = inference.mean_interval([1.0] * n)
        assert up.p_greater == 0.5**n and up.p_less == 1.0
        down = inference.stratified_interval(np.full((n, 3), -0.2))
        assert down.p_less == pytest.approx(0.5**n) and down.p_greater == 1.0
    # 5 seeds cannot reach a two-sided 95% sign interval (1/32 > 0.025): unbounded; 6 seeds can (1/64).
    five = inference.mean_interval([0.3] * 5)
    assert (five.lo, five.hi) == (-np.inf, np.inf)
    six = inference.mean_interval([0.3] * 6)
    assert (six.lo, six.hi) == (0.3, 0.3)


def test_stratified_interval_matches_welch_for_a_difference_of_two_environments() -> None:
    rng = np.random.default_rng(1)
    m = np.column_stack([rng.normal(0.3, 0.1, 6), rng.normal(0.1, 0.3, 6)])
    iv = inference.stratified_interval(m, [1.0, -1.0])
    ref = sps.ttest_ind(m[:, 0], m[:, 1], equal_var=False, alternative="greater")
    assert iv.estimate == pytest.approx(m[:, 0].mean() - m[:, 1].mean())
    assert iv.p_greater == pytest.approx(ref.pvalue)
    one = inference.stratified_interval(m[:, [0]])
    assert (one.lo, one.hi) == pytest.approx((inference.mean_interval(m[:, 0]).lo, inference.mean_interval(m[:, 0]).hi))


def test_holm_adjustment() -> None:
    adjusted = inference.holm([0.01, 0.04, 0.03, 0.5])
    # sorted: 0.01 x4 = 0.04, 0.03 x3 = 0.09, 0.04 x2 = 0.08 -> 0.09 (monotone), 0.5 x1
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_heterogeneity_test() -> None:
    rng = np.random.default_rng(2)
    same = rng.normal(0.0, 0.1, size=(5, 6))
    differ = same + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.5])
    assert inference.heterogeneity_test(same) > 0.05
    assert inference.heterogeneity_test(differ) < 0.01
    assert inference.heterogeneity_test(same, seed=4) == inference.heterogeneity_test(same, seed=4)
    assert inference.heterogeneity_test(np.zeros((5, 3))) == 1.0
    assert inference.heterogeneity_test(np.tile([0.0, 1.0, 1.0], (5, 1))) == 0.0


def test_error_rates_under_noise() -> None:
    """No effect anywhere, unequal noise per environment: each test rejects at most at its level."""
    rng = np.random.default_rng(3)
    sims, seeds, sd = 2000, 5, np.array([0.05, 0.1, 0.2, 0.1, 0.3, 0.05, 0.02, 0.1, 0.2, 0.1, 0.3, 0.05])
    het = holm_any = strat = 0
    for i in range(sims):
        m = 0.1 + rng.normal(0.0, sd, size=(seeds, sd.size))  # the same effect everywhere: no heterogeneity
        het += inference.heterogeneity_test(m, draws=1000, seed=i) < 0.025
        m -= 0.1
        p = [inference.mean_interval(m[:, i]).p_greater for i in range(sd.size)]
        holm_any += (inference.holm(p) < 0.025).any()
        strat += inference.stratified_interval(m).lo > 0
    se = 3 * np.sqrt(0.025 * 0.975 / sims)  # three standard errors of a share near 0.025
    assert het / sims <= 0.025 + se  # the heterogeneity test keeps its level with unequal variances
    assert holm_any / sims <= 0.025 + se  # family-wise error of "some environment helps"
    assert strat / sims <= 0.025 + se  # one-sided error of the stratified interval


def test_smallest_means_interval_bounds_the_k_smallest_means() -> None:
    m = np.array([[0.0, 1.0, 2.0, 3.0], [0.2, 1.2, 2.2, 3.2], [0.1, 1.1, 2.1, 3.1]])
    iv = inference.smallest_means_interval(m, k=2)
    assert iv.estimate == pytest.approx(0.6)  # (0.1 + 1.1) / 2: the two smallest column means
    assert iv.lo < 0.6 < iv.hi and iv.hi - 0.6 == pytest.approx(0.6 - iv.lo)
    assert iv == inference.smallest_means_interval(m, k=2)  # seeded
    with pytest.raises(ValueError, match="1 <= k <= 4"):
        inference.smallest_means_interval(m, k=5)


def _zero_inflated(rng: np.random.Generator, n: int, zero_share: float = 0.7) -> np.ndarray:
    """Differences of success rates that are mostly exactly zero (a sparse task), mean 0."""
    return np.where(rng.random(n) < zero_share, 0.0, rng.normal(0, 0.2, n))


@pytest.mark.parametrize("noise", ["normal", "heavy tails", "unequal scales", "zero-inflated"])
def test_smallest_means_bound_errs_at_about_its_level(noise: str) -> None:
    """Every environment's effect sits at the margin: the upper bound of the 8 smallest of 12 falls below it
    (the "few" rule's evidence) at most about 2.5% of the time, whatever the noise; and with two large effects
    and ten nulls it does so often (the rule can reproduce)."""
    rng = np.random.default_rng(11)

    def draw(mu: np.ndarray) -> np.ndarray:
        if noise == "heavy tails":
            e = rng.standard_t(3, (5, 12)) / np.sqrt(3) * 0.14
        elif noise == "unequal scales":
            e = rng.normal(0, 1, (5, 12)) * np.geomspace(0.07, 0.28, 12)
        elif noise == "zero-inflated":
            e = rng.normal(0, 0.14, (5, 12))
            e[:, :4] = np.stack([_zero_inflated(rng, 5) for _ in range(4)], axis=1)
        else:
            e = rng.normal(0, 0.14, (5, 12))
        return mu + e

    sims, margin = 300, 0.05
    below = [inference.smallest_means_interval(draw(np.full(12, margin)), 8, seed=i).hi < margin for i in range(sims)]
    assert np.mean(below) <= 0.045, np.mean(below)
    few = np.zeros(12)
    few[-2:] = 0.3
    power = [inference.smallest_means_interval(draw(few), 8, seed=i).hi < margin for i in range(100)]
    assert np.mean(power) >= 0.25, np.mean(power)


def test_heterogeneity_test_holds_its_level_with_zero_inflated_environments() -> None:
    """Equal means, 3 of 12 environments mostly exactly zero: rejections at 2.5% stay near the level."""
    rng = np.random.default_rng(2)
    rejections = 0
    for i in range(300):
        m = rng.normal(0, 0.1, (5, 12))
        for j in range(3):
            m[:, j] = _zero_inflated(rng, 5, 0.8)
        rejections += inference.heterogeneity_test(m, draws=2000, seed=i) < 0.025
    assert rejections / 300 <= 0.045, rejections / 300
