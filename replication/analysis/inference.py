"""Hypothesis tests with controlled error rates, for the claims scorecard.

Every test works on a ``(num_seeds x num_envs)`` matrix of per-(seed, environment) values (already
averaged within each run, so that variants sharing one online run are not counted as independent
evidence). Seeds are the replicates; environments are strata.

* :func:`mean_interval`: Student-t interval and one-sided p-values of one environment's mean;
* :func:`stratified_interval`: a weighted sum of environment means (the mean over environments, a
  group difference) with a Welch-Satterthwaite t interval;
* :func:`holm`: Holm's step-down adjustment of p-values across environments (family-wise error);
* :func:`heterogeneity_test`: a parametric bootstrap test that all environment means are equal;
* :func:`smallest_means_interval`: the mean of the ``k`` smallest environment means (what "only a
  few environments" claims is negligible), with bounds that hold whichever environments those are.

The t-based ones are exact under normal noise; all of them are checked by simulation
(``tests/test_inference.py`` and ``replication calibrate``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided interval and one-sided p-values against ``null``."""

    estimate: float
    lo: float
    hi: float
    p_greater: float  # P-value of H0: mean <= null (small: the mean is above null)
    p_less: float  # P-value of H0: mean >= null (small: the mean is below null)


def _t_interval(estimate: float, se: float, df: float, confidence: float, null: float, seeds: int) -> Interval:
    if se == 0.0 or not np.isfinite(df):
        return _sign_interval(estimate, confidence, null, seeds)
    q = float(sps.t.ppf(0.5 + confidence / 2, df))
    t = (estimate - null) / se
    return Interval(estimate, estimate - q * se, estimate + q * se, float(sps.t.sf(t, df)), float(sps.t.cdf(t, df)))


def _sign_interval(estimate: float, confidence: float, null: float, seeds: int) -> Interval:
    """No spread between seeds (e.g. every seed scored 0): no more confidence than a sign test.

    ``seeds`` identical signs have a one-sided sign-test p-value of ``0.5**seeds``, the smallest any
    test on them may give. The sign test's interval for the median is the range of the seeds (a point
    here) when that p reaches ``(1 - confidence) / 2`` and unbounded otherwise (5 seeds: 1/32 > 0.025).
    """
    floor = 0.5**seeds
    above, below = estimate > null, estimate < null
    if floor <= (1 - confidence) / 2:
        lo, hi = estimate, estimate
    else:
        lo, hi = -np.inf, np.inf
    return Interval(estimate, lo, hi, floor if above else 1.0, floor if below else 1.0)


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95, null: float = 0.0) -> Interval:
    """Student-t interval of the mean of ``values`` (one value per seed); needs two or more."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        raise ValueError(f"a t interval needs at least two seeds, got {v.size}")
    se = 0.0 if np.ptp(v) == 0 else float(v.std(ddof=1) / np.sqrt(v.size))
    return _t_interval(float(v.mean()), se, v.size - 1, confidence, null, v.size)


def stratified_interval(
    matrix: np.ndarray, weights: Sequence[float] | np.ndarray | None = None, confidence: float = 0.95, null: float = 0.0
) -> Interval:
    """Interval of ``sum_e w_e * mean_e`` over the columns of ``matrix`` (default: the mean over columns).

    Environments are independent strata with their own variances: the standard error is
    ``sqrt(sum_e w_e^2 s_e^2 / n_e)`` and the degrees of freedom are Welch-Satterthwaite's.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] < 2 or m.shape[1] < 1:
        raise ValueError(f"a stratified interval needs at least two seeds and one environment, got shape {m.shape}")
    n = m.shape[0]
    w = np.full(m.shape[1], 1.0 / m.shape[1]) if weights is None else np.asarray(weights, dtype=float)
    # A constant column has no spread (np.var may return rounding noise for one).
    var = np.where(np.ptp(m, axis=0) == 0, 0.0, m.var(axis=0, ddof=1))
    terms = w**2 * var / n
    se2 = float(terms.sum())
    df = se2**2 / float((terms**2 / (n - 1)).sum()) if se2 > 0 else float("inf")
    return _t_interval(float(w @ m.mean(axis=0)), float(np.sqrt(se2)), df, confidence, null, n)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values: reject those ``<= alpha`` and the family-wise error stays ``<= alpha``."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    k = p.size
    adjusted = np.maximum.accumulate((k - np.arange(k)) * p[order])
    out = np.empty(k)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def heterogeneity_test(matrix: np.ndarray, draws: int = 4000, seed: int = 0, band: float = 0.0) -> float:
    """P-value of the hypothesis that every column (environment) has the same mean, variances free.

    The parametric bootstrap test of Krishnamoorthy, Lu and Mathew (2007, Comput. Stat. Data Anal.
    51:5731): the statistic ``sum_e n (mean_e - grand)^2 / s_e^2`` (``grand`` the precision-weighted
    mean) is compared with its distribution under equal means, simulated from normal means and
    chi-square variances with each environment's own variance. Welch's F test, its usual alternative,
    rejects about 10% of the time at level 5% with 5 seeds and 12 environments; this one stays close
    to its level (tests/test_inference.py). Seeded: the same data give the same p-value.

    A column with no spread between seeds gets the smallest positive variance of the others, so one
    constant environment (a task nobody solves) does not make the statistic infinite; if every column
    is constant, the means are either all equal (p = 1) or exactly different (p = 0).
    """
    m = np.asarray(matrix, dtype=float)
    n, k = m.shape
    if k < 2 or n < 2:
        raise ValueError(f"the heterogeneity test needs at least two seeds and two environments, got shape {m.shape}")
    means, var = m.mean(axis=0), m.var(axis=0, ddof=1)
    positive = var[var > 0]
    if positive.size == 0:
        return 1.0 if np.ptp(means) == 0 else 0.0
    var = np.where(var > 0, var, positive.min())

    def statistic(mu: np.ndarray, v: np.ndarray, shrink: float = 0.0) -> np.ndarray:
        w = n / v
        grand = (w * mu).sum(axis=-1, keepdims=True) / w.sum(axis=-1, keepdims=True)
        return (w * np.maximum(np.abs(mu - grand) - shrink, 0.0) ** 2).sum(axis=-1)

    observed = statistic(means, var, band / 2)
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, np.sqrt(var / n), size=(draws, k))
    v = var * rng.chisquare(n - 1, size=(draws, k)) / (n - 1)
    return float((statistic(mu, v) >= observed).mean())


def _column_se(m: np.ndarray) -> np.ndarray:
    """Standard errors of the column means; a column without spread gets the smallest positive one of
    the others (one task nobody solves must not count as exactly known), all zero if none has spread."""
    n = m.shape[0]
    var = np.where(np.ptp(m, axis=0) == 0, 0.0, m.var(axis=0, ddof=1))
    positive = var[var > 0]
    if positive.size:
        var = np.where(var > 0, var, positive.min())
    return np.sqrt(var / n)


def smallest_means_interval(
    matrix: np.ndarray, k: int, confidence: float = 0.95, draws: int = 4000, seed: int = 0
) -> Interval:
    """Interval of ``M_k``, the mean of the ``k`` smallest true column (environment) means.

    The estimate is the mean of the ``k`` smallest observed column means. Whichever columns hold the
    smallest true means, ``M_k(observed) >= M_k(true) + L_k(noise)`` and ``M_k(observed) <= M_k(true) +
    U_k(noise)``, where ``L_k``/``U_k`` are the means of the ``k`` smallest/largest of the columns' noise
    terms (the observed mean minus the true one). So ``estimate + q`` bounds ``M_k`` from above and
    ``estimate - q`` from below, each with error at most ``(1 - confidence) / 2``, with ``q`` the upper
    quantile of ``-L_k`` (equal to that of ``U_k``: the noise is symmetric). The noise is drawn as
    each column's standard error times a standard normal (seeded). Plugged-in standard errors of a few
    seeds understate the noise, so ``q`` is taken at half the tail probability: with 5 seeds and 12
    environments, normal, t(3), unequal-variance and zero-inflated noise put ``M_k`` above the upper
    bound 1-3% of the time against the nominal 2.5% (tests/test_inference.py); Student-t draws were
    either too wide (power lost) or, scaled to unit variance, above 5%. The p-values are those of
    ``M_k <= 0`` and ``M_k >= 0`` at the full tail (no halving). Used by the "few" rule: beyond the ``m``
    environments where an effect is largest, the ``k = n - m`` others average below the margin.
    """
    m = np.asarray(matrix, dtype=float)
    n, cols = m.shape
    if n < 2 or not 1 <= k <= cols:
        raise ValueError(f"needs at least two seeds and 1 <= k <= {cols} environments, got shape {m.shape}, k={k}")
    means = np.sort(m.mean(axis=0))
    estimate = float(means[:k].mean())
    rng = np.random.default_rng(seed)
    noise = _column_se(m) * rng.standard_normal(size=(draws, cols))
    lowest = np.sort(noise, axis=1)[:, :k].mean(axis=1)  # L_k of each draw
    q = float(np.quantile(-lowest, 1 - (1 - confidence) / 4))  # half the tail: see the docstring
    return Interval(estimate, estimate - q, estimate + q, _tail(-lowest, estimate), _tail(-lowest, -estimate))


def _tail(draws: np.ndarray, value: float) -> float:
    """Share of ``draws`` at or above ``value`` (a one-sided p-value, at least one draw in ``len + 1``)."""
    return float(((draws >= value).sum() + 1) / (draws.size + 1))
