"""The claims scorecard S1: every claim of ``paper/claims.yaml`` tested on the tidy results.

Each claim has decisive and supporting tests. A test computes a statistic on normalised scores
with a seeded stratified-bootstrap interval (:mod:`replication.analysis.statistics`) and applies the
three-way decision rule the YAML file names (its header defines them): ``reproduced``,
``not reproduced`` or ``inconclusive``; a test of an analysis that the configuration switches off is
``not evaluated``; a test of a claim that the configuration's ``claims`` leave out (the plan ran no job for
it) is ``not planned``. The claim's verdict combines its decisive tests.

A claim marked ``beyond_study: true`` (C6, WSRL) is not a claim of the study: it is tested by the same
rules, and S1 shows its scope (column ``scope``, a marker in the summary) and keeps it out of the
count of the study's claims.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from replication.analysis import inference, labels
from replication.analysis import selection as sel
from replication.analysis import statistics as stats
from replication.analysis.selection import NORMALIZED, Expected, MissingResultsError
from replication.io import PROJECT_ROOT, write_text
from replication.plan import config

CLAIMS_FILE = PROJECT_ROOT / "paper" / "claims.yaml"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_EVALUATED, NOT_PLANNED = (
    "reproduced",
    "not reproduced",
    "inconclusive",
    "not evaluated",
    "not planned",
)
UNTESTED = (NOT_EVALUATED, NOT_PLANNED)  # verdicts of tests that ran no statistic
COLUMNS = (
    "claim",
    "test",
    "role",
    "statement",
    "statistic",
    "estimate",
    "ci_lo",
    "ci_hi",
    "null",
    "margin",
    "rule",
    "verdict",
    "details",
    "n_seeds",
    "n_envs",
    "claim_verdict",
    "scope",
)
# added for a sequential design (replication.plan.sequential): whose look gave the row, whether it ended the
# test, that look's confidence and the minimum of seeds the looks apply
SEQUENTIAL_COLUMNS = ("stage", "decided", "confidence", "min_seeds")
STUDY, BEYOND_STUDY = "study", "beyond the study"  # the scope of a claim (its beyond_study key)
# The fewest environments on which each statistic can decide (a test's min_envs overrides it).
MIN_ENVS = {
    "recommendation_effect_by_env": 2,  # a difference between environments
    "recommendation_effect_group_difference": 2,  # one inside the group, one outside
    "recommendation_effect_rank_correlation": 5,  # Spearman's one-sided p >= 1/n! cannot reach 0.05 below 5
    "finetune_vs_sac_by_env": 3,  # "a few" (at most a third) needs three
}
# A fine-tuning method that a run's finetune.methods lacks: its tests are not evaluated.
NOT_CONFIGURED = "fine-tuning method {} is not in finetune.methods of the configuration"
TOO_FEW_SEEDS = "too few seeds"
# A claim that the configuration's claims leave out: the run planned no job for its tests.
NOT_PLANNED_REASON = "not among the claims of the configuration ({}): the run planned no job for it"


# --------------------------------------------------------------------------------------------
# Decision rules (paper/claims.yaml's header says what each guarantees)


def rule_greater(estimate: float, lo: float, hi: float, null: float, margin: float) -> str:
    """Reproduced if the interval excludes ``null`` upwards and the estimate reaches ``null + margin``;
    not reproduced if the whole interval lies below ``null + margin``."""
    if hi < null + margin:
        return NOT_REPRODUCED
    return REPRODUCED if lo > null and estimate >= null + margin else INCONCLUSIVE


def rule_less(estimate: float, lo: float, hi: float, null: float, margin: float) -> str:
    """Mirror image of :func:`rule_greater`."""
    if lo > null - margin:
        return NOT_REPRODUCED
    return REPRODUCED if hi < null and estimate <= null - margin else INCONCLUSIVE


def rule_at_least(estimate: float, lo: float, hi: float, null: float, margin: float) -> str:
    """Non-inferiority: not reproduced if the whole interval lies below ``null``; reproduced if it
    lies above ``null - margin`` (and so reaches ``null``)."""
    if hi < null:
        return NOT_REPRODUCED
    return REPRODUCED if lo > null - margin else INCONCLUSIVE


COUNT_RULES = ("heterogeneous", "few", "mixed")
INTERVAL_RULES: dict[str, Callable[[float, float, float, float, float], str]] = {
    "greater": rule_greater,
    "less": rule_less,
    "at_least": rule_at_least,
}


@dataclasses.dataclass(frozen=True)
class EnvEffect:
    """One environment's mean effect with its t interval and Holm-adjusted one-sided p-values.

    ``helps``/``hurts`` are decisions across the family of environments (family-wise error at
    most ``level`` in each direction) and need an effect of at least the margin; ``negligible`` and
    ``not_worse`` read the environment's own interval and enter only statements about every
    environment (an intersection, which needs no adjustment).
    """

    env: str
    mean: float
    lo: float
    hi: float
    p_helps: float
    p_hurts: float
    margin: float
    level: float

    @property
    def helps(self) -> bool:
        return self.p_helps < self.level and self.mean >= self.margin

    @property
    def hurts(self) -> bool:
        return self.p_hurts < self.level and self.mean <= -self.margin

    @property
    def negligible(self) -> bool:
        """At most negligible: the whole interval lies below the margin."""
        return self.hi < self.margin

    @property
    def not_worse(self) -> bool:
        return self.lo > -self.margin

    def label(self) -> str:
        kind = (
            "helps" if self.helps else "hurts" if self.hurts else "at most negligible" if self.negligible else "unclear"
        )
        return f"{self.env} {self.mean:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}] ({kind})"


def env_effects(d: np.ndarray, envs: Sequence[str], margin: float, confidence: float = 0.95) -> list[EnvEffect]:
    """Per-environment effects of the ``(seeds x envs)`` matrix ``d``, Holm-adjusted across ``envs``."""
    intervals = [inference.mean_interval(d[:, i], confidence) for i in range(len(envs))]
    p_helps = inference.holm([iv.p_greater for iv in intervals])
    p_hurts = inference.holm([iv.p_less for iv in intervals])
    level = (1 - confidence) / 2
    return [
        EnvEffect(env, iv.estimate, iv.lo, iv.hi, float(ph), float(pw), margin, level)
        for env, iv, ph, pw in zip(envs, intervals, p_helps, p_hurts, strict=True)
    ]


def rule_heterogeneous(effects: Sequence[EnvEffect], p_heterogeneity: float, alpha: float) -> str:
    """Reproduced if the environments' effects differ (p_heterogeneity < alpha) and at least one helps; not
    reproduced if every environment is at most negligible (nothing helps anywhere). Effects that all help
    but differ strongly do depend on the task, so "every environment helps" is no evidence against it."""
    if p_heterogeneity < alpha and any(e.helps for e in effects):
        return REPRODUCED
    if all(e.negligible for e in effects):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def few_allowed(n_envs: int, max_fraction: float) -> int:
    """How many of ``n_envs`` environments "a few" allows (at least one)."""
    return max(1, math.floor(max_fraction * n_envs + 1e-9))


def rule_few(effects: Sequence[EnvEffect], rest: inference.Interval, allowed: int, margin: float) -> str:
    """ "Helps in only a few": some environment helps, and the others do not, shown as evidence.

    ``rest`` is the interval of the mean effect over the ``n - m`` environments with the smallest true
    effects (``m`` = ``allowed``, :func:`few_allowed`; :func:`inference.smallest_means_interval`, valid whichever
    environments those are). Reproduced when some environment helps and that mean is shown below the
    margin (``rest.hi < margin``): beyond the ``m`` environments where it helps most, the effect is
    negligible on average. Not reproduced if more than ``m`` environments help, if that mean is shown
    to reach the margin (``rest.lo > margin``: the effect is broad), or if every environment is at most
    negligible. An environment without detected help is not counted as one where it does not help.
    """
    helps = sum(e.helps for e in effects)
    if helps > allowed or rest.lo > margin or all(e.negligible for e in effects):
        return NOT_REPRODUCED
    if helps >= 1 and rest.hi < margin:
        return REPRODUCED
    return INCONCLUSIVE


def rule_mixed(effects: Sequence[EnvEffect]) -> str:
    if any(e.helps for e in effects) and any(e.hurts for e in effects):
        return REPRODUCED
    if all(e.negligible for e in effects) or all(e.not_worse for e in effects):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its decisive tests' verdicts."""
    evaluated = [v for v in verdicts if v not in UNTESTED]
    if not evaluated:
        return NOT_PLANNED if verdicts and all(v == NOT_PLANNED for v in verdicts) else NOT_EVALUATED
    if NOT_REPRODUCED in evaluated:
        return NOT_REPRODUCED
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return INCONCLUSIVE


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclasses.dataclass
class Context:
    df: pd.DataFrame
    expected: Expected
    reps: int
    seed: int
    confidence: float
    margin: float
    poi_margin: float
    alpha: float

    def interval(self, scores: Any, statistic: Callable[..., float]) -> tuple[float, float, float]:
        """A seeded stratified-bootstrap interval (for the probability of improvement)."""
        return stats.bootstrap_interval(scores, statistic, reps=self.reps, seed=self.seed, confidence=self.confidence)

    def margin_of(self, test: dict[str, Any]) -> float:
        return self.poi_margin if test.get("margin_key") == "poi_margin" else self.margin

    def mean_test(self, d: np.ndarray, test: dict[str, Any], weights: Sequence[float] | None = None) -> Result:
        """The test's interval rule on ``sum_e w_e * mean_e`` of the ``(seeds x envs)`` matrix ``d``."""
        iv = inference.stratified_interval(d, weights, self.confidence)
        rule = INTERVAL_RULES[test["rule"]]
        verdict = rule(iv.estimate, iv.lo, iv.hi, float(test.get("null_value", 0.0)), self.margin_of(test))
        return Result(iv.estimate, iv.lo, iv.hi, verdict)

    def env_effects(self, d: np.ndarray, envs: Sequence[str], margin: float) -> list[EnvEffect]:
        return env_effects(d, envs, margin, self.confidence)


@dataclasses.dataclass
class Result:
    estimate: float = float("nan")
    lo: float = float("nan")
    hi: float = float("nan")
    verdict: str = NOT_EVALUATED
    details: str = ""
    n_envs: int = 0


def evidence_gap(n_seeds: int, n_envs: int, test: dict[str, Any], min_seeds: int) -> str:
    """Why a run has too little evidence for ``test`` ("" if it has enough)."""
    if n_seeds < min_seeds:
        return f"{TOO_FEW_SEEDS}: {n_seeds} (the scorecard needs {min_seeds}; paper/claims.yaml min_seeds)"
    need = int(test.get("min_envs", MIN_ENVS.get(test["statistic"], 1)))
    if n_envs < need:
        return f"too few environments: {n_envs} (this test needs {need})"
    return ""


def _without_verdict(ctx: Context, test: dict[str, Any], gap: str, n_envs: int) -> Result:
    """An inconclusive result for lack of evidence; its numbers are still shown where two or more seeds
    and the test's environments allow computing them (they describe the run, they are not evidence)."""
    if env_gap := evidence_gap(len(ctx.expected.seeds), n_envs, test, min_seeds=0):
        gap = gap if gap == env_gap else f"{gap}; {env_gap}"
    if not gap.startswith(TOO_FEW_SEEDS) or len(ctx.expected.seeds) < 2 or env_gap:
        return Result(verdict=INCONCLUSIVE, details=gap)
    result = STATISTICS[test["statistic"]](ctx, test)
    if result.verdict != NOT_EVALUATED:
        result.verdict = INCONCLUSIVE
        result.details = gap + ("; " + result.details if result.details else "")
    return result


def envs_of_test(ctx: Context, test: dict[str, Any]) -> tuple[str, ...]:
    """The environments a test's statistic reads."""
    if test["statistic"] == "reward_mode_difference":
        return (ctx.expected.c5_env,) if ctx.expected.c5_env else ()
    return _envs(ctx, test.get("envs"))


def _envs(ctx: Context, which: Any) -> tuple[str, ...]:
    if which in (None, "all"):
        return ctx.expected.envs
    if which == "c4":
        return ctx.expected.c4_envs
    return tuple(e for e in which if e in ctx.expected.envs)


def _recommendation_effects(ctx: Context, test: dict[str, Any]) -> tuple[np.ndarray, pd.DataFrame]:
    """Per (seed, env): the recommendation's mean paired difference to its baseline.

    ``compared_with: online`` (default): online SAC at the pause, or with ``baseline_at: ledger_step``
    after as many env steps as the recommendation spent. ``compared_with: control``: C1's control of the
    same (environment, seed, pause), online SAC's validated best snapshot without an offline learner, so
    the difference is what the offline learner adds to the validated online policy.
    """
    envs = _envs(ctx, test.get("envs"))
    t = test.get("treatment", {})
    pairs = sel.recommendation_pairs(
        ctx.df,
        NORMALIZED,
        algo=ctx.expected.algos,
        dataset=t.get("dataset"),
        validation=t.get("validation"),
        selection=t.get("selection"),
        envs=envs,
    )
    pauses = test.get("pauses", "all")
    if pauses == "comparison":
        pauses = [stats.comparison_pause(ctx.df, ctx.expected)]
    elif pauses == "all":
        pauses = sorted(set(pairs["pause"]))
    pairs = pairs[pairs["pause"].isin(pauses)]
    baseline_at = test.get("baseline_at", "pause")
    compared_with = test.get("compared_with", "online")
    if compared_with == "control":
        if "baseline_at" in test:
            raise ValueError(f"claim test {test['id']}: baseline_at applies to compared_with online only")
        pairs = sel.control_pairs(ctx.df, NORMALIZED, pairs.drop(columns=["diff"]), envs=envs)
    elif compared_with != "online":
        raise ValueError(f"claim test {test['id']}: compared_with must be online or control, not {compared_with!r}")
    elif baseline_at == "ledger_step":  # budget-matched: online SAC after as many env steps as the recommendation
        curve = sel.online_curve(ctx.df, NORMALIZED, envs=envs)
        at = sel.value_at_or_before(curve, pairs[["env", "seed", "env_step"]], "env_step", "online SAC")
        pairs = pairs.assign(online_value=at["at_value"].to_numpy())
        pairs["diff"] = pairs["value"] - pairs["online_value"]
    elif baseline_at != "pause":
        raise ValueError(f"claim test {test['id']}: baseline_at must be pause or ledger_step, not {baseline_at!r}")
    what = f"claim test {test['id']} ({sel.describe(stage='recommend', **t)})"
    sel.check_complete(
        pairs, what, {"env": envs, "seed": ctx.expected.seeds, "algo": ctx.expected.algos, "pause": list(pauses)}
    )
    d = stats.score_matrix(pairs.rename(columns={"value": "rec", "diff": "value"}), envs, ctx.expected.seeds, what)
    return d, pairs


def _stat_recommendation_effect_by_env(ctx: Context, test: dict[str, Any]) -> Result:
    envs = _envs(ctx, test.get("envs"))
    d, _ = _recommendation_effects(ctx, test)
    effects = ctx.env_effects(d, envs, ctx.margin)
    helps = sum(e.helps for e in effects)
    p_het = inference.heterogeneity_test(d, seed=ctx.seed, band=ctx.margin)
    return Result(
        estimate=float(helps),
        verdict=rule_heterogeneous(effects, p_het, (1 - ctx.confidence) / 2),
        details=f"heterogeneity p = {p_het:.3g}; {helps} of {len(effects)} environments help (Holm); "
        + "; ".join(e.label() for e in effects),
    )


def _stat_recommendation_effect_group_difference(ctx: Context, test: dict[str, Any]) -> Result:
    envs = _envs(ctx, test.get("envs"))
    group = [e for e in envs if e in test["group"]]
    rest = [e for e in envs if e not in test["group"]]
    if not group or not rest:
        return Result(details=f"needs environments both in and outside the group {test['group']}; run has {envs}")
    d, _ = _recommendation_effects(ctx, test)
    weights = [1 / len(group) if e in group else -1 / len(rest) for e in envs]
    result = ctx.mean_test(d, test, weights)
    means = ", ".join(f"{e} {d[:, i].mean():+.3f}" for i, e in enumerate(envs))
    result.details = f"group: {', '.join(group)}; per-env mean effect: {means}"
    return result


def _online_property(ctx: Context, envs: Sequence[str], pairs: pd.DataFrame, kind: str) -> np.ndarray:
    """Per environment, a property of online SAC's whole learning curve up to the last pause.

    Read from the whole curve, not from the evaluations the effect is paired with: the effect is
    ``recommendation - online``, so a property of those same evaluations would correlate with it through
    their noise alone (C1.4 said "reproduced" in 27% of simulated studies without any effect).
    """
    curve = sel.online_curve(ctx.df, NORMALIZED, envs=envs)
    curve = curve[curve["env_step"] <= pairs["pause"].max()].sort_values(["env", "seed", "env_step"])
    if kind == "weakness":
        per_env = 1.0 - curve.groupby("env")["value"].mean()
    elif kind == "instability":
        drawdown = curve.groupby(["env", "seed"])["value"].transform("cummax") - curve["value"]
        per_env = drawdown.groupby(curve["env"]).mean()
    else:
        raise ValueError(f"unknown online_property {kind!r}; valid: instability, weakness")
    return np.array([per_env[e] for e in envs])


def _stat_recommendation_effect_rank_correlation(ctx: Context, test: dict[str, Any]) -> Result:
    from scipy.stats import spearmanr

    envs = _envs(ctx, test.get("envs"))
    d, pairs = _recommendation_effects(ctx, test)
    effect = d.mean(axis=0)
    prop = _online_property(ctx, envs, pairs, test["online_property"])
    if np.ptp(effect) == 0 or np.ptp(prop) == 0:
        return Result(verdict=INCONCLUSIVE, details="the effect or the online property is constant across envs")
    rho, p = spearmanr(effect, prop, alternative="greater")
    rho, p = float(rho), float(p)
    verdict = REPRODUCED if rho > 0 and p < ctx.alpha else NOT_REPRODUCED if rho <= 0 else INCONCLUSIVE
    pairs_text = ", ".join(f"{e} ({x:+.3f}, {y:.3f})" for e, x, y in zip(envs, effect, prop, strict=True))
    return Result(
        rho, verdict=verdict, details=f"one-sided p = {p:.3g}; (effect, {test['online_property']}): {pairs_text}"
    )


def _validation_matrices(ctx: Context, test: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Treatment and baseline matrices (seeds x envs), each cell the mean over the tasks
    (algorithm, dataset, pause) that have both; the tasks of one (env, seed) share one online run,
    so they are averaged, not counted as independent replicates."""
    keys = ["env", "algo", "dataset", "pause"]

    def rows(spec: dict[str, str]) -> pd.DataFrame:
        return sel.select(
            ctx.df,
            NORMALIZED,
            stage="recommend",
            algo=ctx.expected.algos,
            dataset=ctx.expected.datasets,
            envs=ctx.expected.envs,
            validation=spec.get("validation"),
            selection=spec.get("selection"),
        )

    treat, base = rows(test["treatment"]), rows(test["baseline"])
    for name, part, spec in (("treatment", treat, test["treatment"]), ("baseline", base, test["baseline"])):
        if part.empty:
            raise MissingResultsError(
                f"missing results for claim test {test['id']} {name} ({sel.describe(stage='recommend', **spec)}); "
                f"{sel.available(ctx.df, 'recommend')}"
            )
    tasks = sorted(
        set(treat[keys].drop_duplicates().itertuples(index=False, name=None))
        & set(base[keys].drop_duplicates().itertuples(index=False, name=None))
    )
    covered = {t[0] for t in tasks}
    lacking = [e for e in ctx.expected.envs if e not in covered]
    if lacking:
        raise MissingResultsError(
            f"missing results for claim test {test['id']}: no pause point has both the validated and the unvalidated "
            f"recommendation in {', '.join(lacking)}"
        )
    labels = ["/".join(map(str, t)) for t in tasks]
    envs = list(ctx.expected.envs)

    def matrix(part: pd.DataFrame, name: str) -> np.ndarray:
        task = ["/".join(map(str, t)) for t in part[keys].itertuples(index=False, name=None)]
        part = part[np.isin(task, labels)]
        return stats.score_matrix(part, envs, ctx.expected.seeds, f"claim test {test['id']} {name}")

    return matrix(treat, "treatment"), matrix(base, "baseline"), labels


def _stat_validation_probability_of_improvement(ctx: Context, test: dict[str, Any]) -> Result:
    x, y, tasks = _validation_matrices(ctx, test)
    _, lo, hi = ctx.interval([x, y], stats.poi_pairwise)
    est = stats.probability_of_improvement(x, y)
    verdict = INTERVAL_RULES[test["rule"]](est, lo, hi, float(test.get("null_value", 0.5)), ctx.margin_of(test))
    return Result(est, lo, hi, verdict, _tasks_text(tasks))


def _tasks_text(tasks: Sequence[str]) -> str:
    return f"{len(tasks)} tasks (environment/algorithm/dataset/pause), averaged within each (environment, seed)"


def _stat_validation_mean_difference(ctx: Context, test: dict[str, Any]) -> Result:
    x, y, tasks = _validation_matrices(ctx, test)
    result = ctx.mean_test(x - y, test)
    result.details = _tasks_text(tasks)
    return result


def _finetune_curve(ctx: Context, test: dict[str, Any], envs: Sequence[str]) -> pd.DataFrame:
    """Fine-tuning curve of the test's method and options; an extended run's missing start is filled
    from the plain run of the same method (the extension continues it)."""
    method, options = test["method"], test.get("options", "")
    curve = sel.finetune_curves(ctx.df, NORMALIZED, ctx.expected, method, options)
    curve = curve[curve["env"].isin(envs)]
    what = f"claim test {test['id']} (finetune algo={method} options={options or '(none)'})"
    if curve.empty:
        raise MissingResultsError(f"missing results for {what}: no rows; {sel.available(ctx.df, 'finetune')}")
    sel.check_complete(curve, what, {"env": list(envs), "seed": ctx.expected.seeds})
    if options:
        plain = sel.finetune_curves(ctx.df, NORMALIZED, ctx.expected, method, "")
        first = curve.groupby(["env", "seed"])["env_step"].min().rename("_first")
        plain = plain.join(first, on=["env", "seed"])
        curve = pd.concat([plain[plain["env_step"] < plain["_first"]].drop(columns="_first"), curve])
    return curve[["env", "seed", "env_step", "value"]].sort_values(["env", "seed", "env_step"])


NO_ENVS = "no environments (analysis switched off in the configuration)"


def _curve_and_switch(ctx: Context, test: dict[str, Any]) -> tuple[tuple[str, ...], pd.DataFrame, pd.DataFrame] | None:
    """The test's environments, fine-tuning curve and switch levels; ``None`` without environments or
    when the run does not fine-tune with the test's method."""
    envs = _envs(ctx, test.get("envs"))
    if not envs or test["method"] not in ctx.expected.finetune_methods:
        return None
    curve = _finetune_curve(ctx, test, envs)
    return envs, curve, sel.switch_levels(ctx.df, NORMALIZED, ctx.expected, test["method"], curve)


def _not_evaluated(ctx: Context, test: dict[str, Any]) -> Result:
    """Why a fine-tuning test has no inputs: its method is not configured, or it has no environments."""
    if test["method"] not in ctx.expected.finetune_methods:
        return Result(details=NOT_CONFIGURED.format(test["method"]))
    return Result(details=NO_ENVS)


def _method_note(ctx: Context, method: str) -> str:
    """A prefix for a test's details when the method is not the plain one (WSRL keeping offline data)."""
    if method == "wsrl" and ctx.expected.wsrl_keep_offline_data:
        return f"{ctx.expected.finetune_name(method)} (finetune.wsrl.keep_offline_data: true); "
    return ""


def _stat_finetune_early_change(ctx: Context, test: dict[str, Any]) -> Result:
    if not (inputs := _curve_and_switch(ctx, test)):
        return _not_evaluated(ctx, test)
    envs, curve, switch = inputs
    window = float(test["window_fraction"]) * (ctx.expected.total_steps - ctx.expected.finetune_pause)
    merged = curve.merge(switch, on=["env", "seed"])
    after = merged[merged["env_step"] > merged["switch_step"]]
    if not after.empty:  # evaluations sparser than the window: the window reaches the first one after the switch
        first = after.groupby(["env", "seed"])["env_step"].min() - after.groupby(["env", "seed"])["switch_step"].min()
        window = max(window, float(first.max()))
    early = merged[
        (merged["env_step"] > merged["switch_step"]) & (merged["env_step"] <= merged["switch_step"] + window)
    ]
    means = early.groupby(["env", "seed"], as_index=False)["value"].mean()
    what = f"claim test {test['id']}: evaluations within {window:.0f} env steps after the switch"
    means = means.merge(switch, on=["env", "seed"])
    means["value"] = means["value"] - means["switch"]
    d = stats.score_matrix(means, envs, ctx.expected.seeds, what)
    result = ctx.mean_test(d, test)
    per_env = ", ".join(f"{e} {d[:, i].mean():+.3f}" for i, e in enumerate(envs))
    sources = ", ".join(sorted(set(switch["source"])))
    result.details = _method_note(ctx, test["method"]) + (
        f"window {labels.format_steps(window)} env steps; switch level from {sources}; per-env change: {per_env}"
    )
    return result


def _finetune_vs_sac(ctx: Context, test: dict[str, Any], envs: Sequence[str]) -> np.ndarray:
    """Per (seed, env): the test's method's final score minus SAC continuation's (the end of the budget)."""
    method = test["method"]
    curve = _finetune_curve(ctx, test, envs)
    final = sel.final_values(curve, ctx.expected.total_steps, f"claim test {test['id']} ({method})")
    sac = sel.final_values(
        sel.sac_continuation(ctx.df, NORMALIZED, ctx.expected, envs), ctx.expected.total_steps, "SAC continuation"
    )
    merged = final.merge(sac, on=["env", "seed"], suffixes=("", "_sac"))
    merged["value"] = merged["final"] - merged["final_sac"]
    return stats.score_matrix(merged, envs, ctx.expected.seeds, f"claim test {test['id']}")


def _stat_finetune_vs_sac_by_env(ctx: Context, test: dict[str, Any]) -> Result:
    envs = _envs(ctx, test.get("envs"))
    if test["method"] not in ctx.expected.finetune_methods:
        return Result(details=NOT_CONFIGURED.format(test["method"]))
    d = _finetune_vs_sac(ctx, test, envs)
    effects = ctx.env_effects(d, envs, ctx.margin)
    helps, hurts = sum(e.helps for e in effects), sum(e.hurts for e in effects)
    details = f"helps in {helps}, hurts in {hurts} of {len(effects)}; "
    if test["rule"] == "few":
        allowed = few_allowed(len(envs), float(test.get("max_fraction", 1 / 3)))
        keep = len(envs) - allowed
        rest = inference.smallest_means_interval(d, keep, ctx.confidence, seed=ctx.seed)
        verdict = rule_few(effects, rest, allowed, ctx.margin)
        details += f"mean of the {keep} smallest effects {rest.estimate:+.3f} [{rest.lo:+.3f}, {rest.hi:+.3f}]; "
    elif test["rule"] == "mixed":
        verdict = rule_mixed(effects)
    else:
        raise ValueError(f"claim test {test['id']}: rule {test['rule']!r} does not apply to per-environment effects")
    return Result(float(helps), verdict=verdict, details=details + "; ".join(e.label() for e in effects))


def _stat_finetune_vs_sac_mean(ctx: Context, test: dict[str, Any]) -> Result:
    """The mean over environments of the final paired difference (method - SAC continuation)."""
    envs = _envs(ctx, test.get("envs"))
    if not envs or test["method"] not in ctx.expected.finetune_methods:
        return _not_evaluated(ctx, test)
    d = _finetune_vs_sac(ctx, test, envs)
    result = ctx.mean_test(d, test)
    per_env = ", ".join(f"{e} {d[:, i].mean():+.3f}" for i, e in enumerate(envs))
    result.details = _method_note(ctx, test["method"]) + f"per-env final difference to SAC continuation: {per_env}"
    return result


def _recovery_step(curve: pd.DataFrame, switch: pd.DataFrame) -> str:
    merged = curve.merge(switch, on=["env", "seed"])
    merged["rel"] = merged["env_step"] - merged["switch_step"]
    mean = merged.groupby("rel")["value"].mean()
    level = switch["switch"].mean()
    after_min = mean.loc[mean.idxmin() :]
    regained = after_min[after_min >= level]
    if regained.empty:
        return f"the mean curve does not regain the switch level ({level:.3f}) within the run"
    steps = labels.format_steps(regained.index[0])
    return f"the mean curve regains the switch level ({level:.3f}) {steps} env steps after the switch"


def _stat_finetune_level_vs_switch(ctx: Context, test: dict[str, Any]) -> Result:
    if not (inputs := _curve_and_switch(ctx, test)):
        return _not_evaluated(ctx, test)
    envs, curve, switch = inputs
    if test["at"] == "budget_end":
        level = sel.final_values(curve, ctx.expected.total_steps, f"claim test {test['id']}")
    elif test["at"] == "run_end":
        last = curve.sort_values("env_step").groupby(["env", "seed"]).tail(1)
        level = last.rename(columns={"env_step": "final_step", "value": "final"})
    else:
        raise ValueError(f"claim test {test['id']}: at must be budget_end or run_end, not {test['at']!r}")
    merged = level.merge(switch, on=["env", "seed"])
    merged["value"] = merged["final"] - merged["switch"]
    d = stats.score_matrix(merged, envs, ctx.expected.seeds, f"claim test {test['id']}")
    result = ctx.mean_test(d, test)
    result.details = f"measured at {labels.format_steps(merged['final_step'].mean())} env steps (mean)"
    if test["at"] == "run_end":
        result.details += "; " + _recovery_step(curve, switch)
    return result


def _stat_reward_mode_difference(ctx: Context, test: dict[str, Any]) -> Result:
    env = ctx.expected.c5_env
    modes = (test["treatment"], test["baseline"])
    if env is None:
        return Result(details="analysis C5 is switched off in the configuration")
    if not set(modes) <= set(ctx.expected.c5_rewards):
        return Result(details=f"analysis.c5.rewards {list(ctx.expected.c5_rewards)} lacks one of {list(modes)}")
    seeds, values = ctx.expected.seeds, {}
    for mode in modes:
        options = f"reward={mode}"
        what = f"claim test {test['id']} ({test['stage']} algo={test['method']} env={env} options={options})"
        if test["stage"] == "finetune":
            curve = sel.finetune_curves(ctx.df, NORMALIZED, ctx.expected, test["method"], options)
            curve = curve[curve["env"] == env]
            if curve.empty:
                raise MissingResultsError(f"missing results for {what}: no rows; {sel.available(ctx.df, 'finetune')}")
            sel.check_complete(curve, what, {"env": [env], "seed": seeds})
            v = sel.final_values(curve, ctx.expected.total_steps, what).rename(columns={"final": "value"})
        else:
            rows = sel.select(
                ctx.df,
                NORMALIZED,
                stage="recommend",
                algo=test["method"],
                validation="full",
                selection="offline",
                options=options,
                envs=[env],
            )
            if rows.empty and test.get("optional"):
                return Result(details=f"the results hold no {test['stage']} rows with {options}")
            if rows.empty:
                raise MissingResultsError(f"missing results for {what}: no rows")
            v = rows.groupby(["env", "seed"], as_index=False)["value"].mean()
        values[mode] = stats.score_matrix(v, [env], seeds, what)
    result = ctx.mean_test(values[modes[0]] - values[modes[1]], test)
    means = ", ".join(f"{m} {values[m].mean():.3f}" for m in modes)
    result.details = f"{env}, mean normalised score: {means}"
    return result


STATISTICS: dict[str, Callable[[Context, dict[str, Any]], Result]] = {
    "recommendation_effect_by_env": _stat_recommendation_effect_by_env,
    "recommendation_effect_group_difference": _stat_recommendation_effect_group_difference,
    "recommendation_effect_rank_correlation": _stat_recommendation_effect_rank_correlation,
    "validation_probability_of_improvement": _stat_validation_probability_of_improvement,
    "validation_mean_difference": _stat_validation_mean_difference,
    "finetune_early_change": _stat_finetune_early_change,
    "finetune_vs_sac_by_env": _stat_finetune_vs_sac_by_env,
    "finetune_vs_sac_mean": _stat_finetune_vs_sac_mean,
    "finetune_level_vs_switch": _stat_finetune_level_vs_switch,
    "reward_mode_difference": _stat_reward_mode_difference,
}
ANALYSIS_SWITCHES = {
    "c4": lambda e: bool(e.c4_envs),
    "c5": lambda e: e.c5_env is not None,
    "finetune": lambda e: bool(e.finetune_methods),
    "wsrl": lambda e: "wsrl" in e.finetune_methods,
}
SWITCH_REASONS = {"wsrl": NOT_CONFIGURED.format("wsrl")}  # else "<switch> is switched off in the configuration"


def load_claims(path: Path | str = CLAIMS_FILE) -> dict[str, Any]:
    """Read and check ``paper/claims.yaml``."""
    claims = yaml.safe_load(Path(path).read_text())
    for cid, claim in claims.get("claims", {}).items():
        if not isinstance(claim.get("beyond_study", False), bool):
            raise ValueError(f"{path}: {cid}: beyond_study must be true or false")
        for test in claim.get("tests", []):
            if test.get("statistic") not in STATISTICS:
                raise ValueError(
                    f"{path}: {cid} test {test.get('id')}: unknown statistic {test.get('statistic')!r}; "
                    f"valid: {', '.join(STATISTICS)}"
                )
            if test.get("role") not in ("decisive", "supporting"):
                raise ValueError(f"{path}: {cid} test {test.get('id')}: role must be decisive or supporting")
            rules = (*INTERVAL_RULES, *COUNT_RULES, "rank_correlation")
            if test.get("rule") not in rules:
                raise ValueError(
                    f"{path}: {cid} test {test.get('id')}: unknown rule {test.get('rule')!r}; valid: {rules}"
                )
            if test.get("compared_with", "online") not in ("online", "control"):
                raise ValueError(f"{path}: {cid} test {test.get('id')}: compared_with must be online or control")
            if test["rule"] in INTERVAL_RULES and "null_value" not in test:
                raise ValueError(f"{path}: {cid} test {test.get('id')}: rule {test['rule']} needs a null_value")
    return claims


def evaluate_claims(
    df: pd.DataFrame,
    expected: Expected,
    claims: dict[str, Any] | None = None,
    *,
    reps: int | None = None,
    seed: int | None = None,
    given: dict[str, dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per claim test (columns :data:`COLUMNS`), on prepared tidy results ``df``.

    ``given``: rows to take as they are instead of evaluating their tests (the tests a sequential run
    decided at an earlier stage); the claims' verdicts combine them with the others."""
    claims = load_claims() if claims is None else claims
    given = given or {}
    boot = claims.get("bootstrap", {})
    ctx = Context(
        df=df,
        expected=expected,
        reps=int(reps if reps is not None else stats.DEFAULT_REPS),
        seed=int(seed if seed is not None else boot.get("seed", stats.DEFAULT_SEED)),
        confidence=float(boot.get("confidence", stats.CONFIDENCE)),
        margin=float(claims.get("margin", 0.05)),
        poi_margin=float(claims.get("poi_margin", 0.05)),
        alpha=float(claims.get("alpha", 0.05)),
    )
    min_seeds = int(claims.get("min_seeds", 2))
    rows = []
    for cid, claim in claims["claims"].items():
        switch = claim.get("requires")
        enabled = ANALYSIS_SWITCHES[switch](expected) if switch else True
        claim_rows = []
        for test in claim["tests"]:
            if test["id"] in given:
                claim_rows.append({c: given[test["id"]][c] for c in COLUMNS[:-2]})
                continue
            n_envs = len(envs_of_test(ctx, test))
            if expected.claims is not None and cid not in expected.claims:
                result = Result(verdict=NOT_PLANNED, details=NOT_PLANNED_REASON.format(", ".join(expected.claims)))
            elif not enabled:
                result = Result(details=SWITCH_REASONS.get(switch, f"{switch} is switched off in the configuration"))
            elif gap := evidence_gap(len(expected.seeds), n_envs, test, min_seeds):
                result = _without_verdict(ctx, test, gap, n_envs)
            else:
                result = STATISTICS[test["statistic"]](ctx, test)
            margin = ctx.margin_of(test)
            claim_rows.append(
                {
                    "claim": cid,
                    "test": test["id"],
                    "role": test["role"],
                    "statement": test["statement"],
                    "statistic": " ".join(str(test.get("description", test["statistic"])).split()),
                    "estimate": result.estimate,
                    "ci_lo": result.lo,
                    "ci_hi": result.hi,
                    "null": test.get("null_value", np.nan),
                    "margin": margin if test["rule"] != "rank_correlation" else np.nan,
                    "rule": test["rule"],
                    "verdict": result.verdict,
                    "details": result.details,
                    "n_seeds": len(expected.seeds),
                    "n_envs": n_envs,
                }
            )
        verdict = combine([r["verdict"] for r in claim_rows if r["role"] == "decisive"])
        rows += [{**r, "claim_verdict": verdict, "scope": scope_of(claim)} for r in claim_rows]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def scope_of(claim: dict[str, Any]) -> str:
    """:data:`BEYOND_STUDY` for a claim marked ``beyond_study: true``, else :data:`STUDY`."""
    return BEYOND_STUDY if claim.get("beyond_study") else STUDY


def summary_line(table: pd.DataFrame) -> str:
    """One sentence: the verdicts of the study's claims, counted, then those beyond the study apart."""
    claims = table.drop_duplicates("claim")
    scope = claims["scope"] if "scope" in claims else pd.Series(STUDY, index=claims.index)
    study, beyond = claims[scope == STUDY], claims[scope == BEYOND_STUDY]
    counts = study["claim_verdict"].value_counts()
    order = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_EVALUATED, NOT_PLANNED)
    counted = ", ".join(f"{int(counts[v])} {v}" for v in order if v in counts)
    line = f"Claims of the study ({', '.join(study['claim'])}): {counted or 'none'}."
    if len(beyond):
        shown = ", ".join(f"{c} {v}" for c, v in zip(beyond["claim"], beyond["claim_verdict"], strict=True))
        line += f" Beyond the study (not claims of the paper, not counted above): {shown}."
    return line


def _number(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.3f}"


def scorecard_markdown(table: pd.DataFrame, claims: dict[str, Any]) -> str:
    """S1 as Markdown: one summary row per claim, then every test with its numbers."""
    summary = []
    for cid, g in table.groupby("claim", sort=False):
        tests = ", ".join(f"{r['test']}: {r['verdict']}" for _, r in g.iterrows() if r["role"] == "decisive")
        statement = " ".join(str(claims["claims"][cid]["statement"]).split())
        beyond = scope_of(claims["claims"][cid]) == BEYOND_STUDY
        summary.append(
            {
                "Claim": cid,
                "Verdict": g["claim_verdict"].iloc[0],
                "Decisive tests": tests,
                "Statement": statement,
                "Scope": BEYOND_STUDY if beyond else "claim of the study",
            }
        )
    tests = []
    for _, r in table.iterrows():
        if r["verdict"] in UNTESTED or not np.isfinite(r["estimate"]):
            value = "—"
        elif r["rule"] in COUNT_RULES:
            value = f"{int(r['estimate'])} env(s) help"
        elif r["rule"] == "rank_correlation":
            value = f"rho = {_number(r['estimate'])}"
        elif np.isfinite(r["ci_lo"]):
            value = f"{_number(r['estimate'])} [{_number(r['ci_lo'])}, {_number(r['ci_hi'])}]"
        else:
            value = _number(r["estimate"])
        tests.append(
            {
                "Test": r["test"] + (" (beyond the study)" if r.get("scope") == BEYOND_STUDY else ""),
                "Role": r["role"],
                "Statement": r["statement"],
                "Statistic": r["statistic"],
                "Estimate [95% CI]": value,
                "Rule": r["rule"]
                + ("" if not np.isfinite(r["null"]) else f" (null {r['null']:g}")
                + ("" if not np.isfinite(r["null"]) else f", margin {r['margin']:g})"),
                "Seeds x envs": f"{int(r['n_seeds'])} x {int(r['n_envs'])}",
                "Verdict": r["verdict"],
                **_stage_cell(r),
                "Details": r["details"],
            }
        )
    return (
        labels.markdown(
            "S1. Claims scorecard: verdict per claim (decision rules in paper/claims.yaml).", pd.DataFrame(summary)
        )
        + "\n"
        + summary_line(table)
        + "\n\n"
        + labels.markdown("S1 (tests). Every test with its statistic and interval.", pd.DataFrame(tests))
    )


def _stage_cell(r: pd.Series) -> dict[str, str]:
    """A sequential run's column: the stage and seeds of the verdict, whether it ended the test, and the
    confidence of that look's intervals (not the 95% of the column's name)."""
    if "stage" not in r:
        return {}
    state = "decided" if r["decided"] else "open"
    level = f", CI {100 * r['confidence']:.4g}%" if "confidence" in r and pd.notna(r["confidence"]) else ""
    return {"Stage (seeds)": f"{int(r['stage'])} ({int(r['n_seeds'])}), {state}{level}"}


def build_scorecard(
    tidy_csv_paths: Sequence[Path | str],
    out_dir: Path | str,
    cfg: dict[str, Any] | None = None,
    *,
    claims_path: Path | str = CLAIMS_FILE,
    reps: int | None = None,
    seed: int | None = None,
) -> list[Path]:
    """Evaluate every claim of ``claims_path``; write ``S1.csv`` and ``S1.md`` under ``out_dir``."""
    df = sel.load_results(tidy_csv_paths)
    cfg = cfg if cfg is not None else config.load()
    expected = Expected.from_config(cfg)
    claims = load_claims(claims_path)
    reps = reps or stats.config_reps(cfg)
    if cfg.get("sequential"):
        table = _sequential_table(df, expected, claims, cfg, reps, seed)
    else:
        table = evaluate_claims(df, expected, claims, reps=reps, seed=seed)
    out_dir = Path(out_dir)
    csv_path, md_path = out_dir / "S1.csv", out_dir / "S1.md"
    write_text(csv_path, table.to_csv(index=False))
    write_text(md_path, scorecard_markdown(table, claims))
    return [csv_path, md_path]


def _sequential_table(
    df: pd.DataFrame, expected: Expected, claims: dict[str, Any], cfg: dict[str, Any], reps: int, seed: int | None
) -> pd.DataFrame:
    """S1 at a stage of a sequential run: the open tests at the stage's boundaries (look k at confidence
    ``1 - (1 - c) w_k``, ``w_k`` its share of the error), the tests decided earlier as they were; columns
    :data:`SEQUENTIAL_COLUMNS` added."""
    from replication.plan import sequential
    from replication.plan.workflow import results_dir

    seq = cfg["sequential"]
    design, stage = sequential.Design.of(seq), int(seq["stage"])
    given = sequential.earlier(sequential.read_state(results_dir(cfg)), stage)
    table = evaluate_claims(df, expected, design.look_claims(claims, stage), reps=reps, seed=seed, given=given)
    table["stage"] = [int(given[t]["stage"]) if t in given else stage for t in table["test"]]
    table["decided"] = table["verdict"].isin(sequential.DECIDED)
    base = float(claims.get("bootstrap", {}).get("confidence", stats.CONFIDENCE))
    table["confidence"] = [round(design.confidence(base, s), 6) for s in table["stage"]]
    table["min_seeds"] = int(design.look_claims(claims, stage).get("min_seeds", 2))
    return table
