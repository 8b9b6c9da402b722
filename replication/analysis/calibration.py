"""Calibration of the claims scorecard: how often each test says "reproduced" on synthetic results.

``replication calibrate`` builds tidy results of the paper profile's grid (normalised scores only),
runs the real scorecard (:func:`replication.analysis.scorecard.evaluate_claims`) on each, and reports, per
test, the share of each verdict over ``sims`` simulations:

* ``null``: every variant's normalised score is online SAC's plus noise. Online SAC's level is a
  per-environment constant plus a per-(environment, seed) offset (the run's luck, shared by every
  variant branched from it); every evaluation adds independent noise. Both have standard deviation
  ``sigma``. No claim's effect is present, so a decisive test that says "reproduced" errs. One
  exception makes that true of C4.3 too: its statement ("with the extended budget it recovers at
  least the level it started from") holds when nothing changes, so under ``null`` the extended IQL
  run ends ``margin`` below its start, the boundary of that non-inferiority test. C6 (WSRL, beyond
  the study) likewise: under ``null`` WSRL fine-tuning sits ``margin`` below its start from the switch
  on, so it drops by exactly the margin (C6.1's boundary) and ends ``margin`` below SAC continuation
  (C6.2's boundary).
* ``effect``: the same, with the effects each claim states planted (:data:`EFFECTS`); the share of
  "reproduced" is the test's power at that effect size.

C1's control (online SAC's validated best snapshot, ``algo=sac, selection=online``) is online SAC's
level plus noise, at the best-of recommendation's step; its noise comes from a stream of its own
(:func:`_control_rng`), so the other rows are the same numbers with or without it. ``drawdown > 0``
makes online SAC unstable on the sparse-reward environments: from half the first pause until the
fine-tuning pause, its current policy sits ``drawdown`` below its best past snapshot (which the
control keeps), the confound of a contrast with the current online policy. It ends at the fine-tuning
pause so that SAC continuation, the fine-tuning claims' baseline, stays at the level the fine-tuned
agents start from (a fall there would be a real effect for those contrasts, not a null).
* ``contrary``: the null, except that each count claim is false the other way (:data:`CONTRARY`): the
  offline subroutine adds the same gain over the control in every environment (no heterogeneity, all
  positive: C1.1), PEX helps in every environment (not in "a few": C3.2), Cal-QL fine-tuning helps in
  every environment (not "mixed": C3.3). A decisive test that says "reproduced" errs here too.

Noise models: ``gaussian`` (above) and ``rl`` (:class:`RLNoise`: per-environment scales, heavy
tails, collapsing runs, zero-inflated success rates, autocorrelated curves, a drawdown by default).

The grid is the paper profile's with ``wsrl`` added to ``finetune.methods``, so that C6 is calibrated too.

Seeded: the same arguments give the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from replication.analysis import scorecard
from replication.analysis.selection import NORMALIZED, Expected
from replication.plan import config
from replication.plan.config import CONFIG_DIR
from replication.plan.vocabulary import newdata_pause_step

SCENARIOS = ("null", "effect", "contrary")
NOISE_MODELS = ("gaussian", "rl")
VERDICT_KEYS = {
    scorecard.REPRODUCED: "reproduced",
    scorecard.NOT_REPRODUCED: "not_reproduced",
    scorecard.INCONCLUSIVE: "inconclusive",
    scorecard.NOT_EVALUATED: "not_evaluated",
}
SPARSE = ("kitchen", "kitchen-sparse")
# Effects planted by the ``effect`` scenario, in normalised-score units (each as its claim states it).
EFFECTS: dict[str, float] = {
    "recommendation_sparse": 0.3,  # C1: the recommendation beats online SAC on the sparse tasks only
    "validation_gain": 0.15,  # C2: unvalidated recommendations are this much lower
    "iql_drop": 0.2,  # C3.1, C4.1: IQL fine-tuning drops this much over the first quarter
    "pex_gain": 0.2,  # C3.2: PEX ends this much above SAC continuation in two environments
    "calql_gain": 0.2,  # C3.3: Cal-QL fine-tuning ends this much above SAC in two, below in two others
    "c4_at_budget": -0.1,  # C4.2: extended IQL is still this far below its start at the budget T
    "c4_at_end": 0.1,  # C4.3: and this far above it at the end of the extended run
    "c5_gap": 0.2,  # C5.1: Cal-QL in Kitchen ends this much higher with accumulated than binary reward
    "wsrl_gain": 0.1,  # C6: WSRL fine-tuning does not drop and ends this much above SAC continuation
}
# Effects planted by the ``contrary`` scenario: each count claim false the other way.
CONTRARY: dict[str, float] = {
    "recommendation_everywhere": 0.15,  # C1.1: the same gain over the control in every environment (the
    # control is planted this much lower, so that no other contrast changes)
    "pex_everywhere": 0.15,  # C3.2: PEX helps in every environment, not in a few
    "calql_everywhere": 0.15,  # C3.3: Cal-QL fine-tuning helps in every environment, not mixed
}
LEVEL = 0.5  # online SAC's true normalised level (every environment; the rl model: dense-reward ones)


def calibration_config(envs: Sequence[str] | None, seeds: int) -> dict[str, Any]:
    """The paper profile with ``envs`` (default: its twelve), ``seeds`` seeds, and WSRL fine-tuning."""
    cfg = config.load(CONFIG_DIR / "paper.yaml")
    if envs:
        unknown = sorted(set(envs) - set(cfg["envs"]))
        if unknown:
            raise ValueError(f"unknown environments {unknown}; valid: {', '.join(cfg['envs'])}")
        cfg["envs"] = list(envs)
    cfg["seeds"] = list(range(seeds))
    if "wsrl" not in cfg["finetune"]["methods"]:
        cfg["finetune"]["methods"] = [*cfg["finetune"]["methods"], "wsrl"]
    if cfg["analysis"]["c5"]["env"] not in cfg["envs"]:
        cfg["analysis"]["c5"]["enabled"] = False
    return cfg


@dataclasses.dataclass(frozen=True)
class Shape:
    """Where a run of the configuration evaluates (env steps)."""

    total: int
    interval: int
    pauses: tuple[int, ...]
    newdata_pause: int
    newdata_size: int
    validation_cost: int
    finetune_pause: int

    @classmethod
    def of(cls, cfg: dict[str, Any], expected: Expected) -> Shape:
        total = expected.total_steps
        val = cfg["validation"]
        return cls(
            total=total,
            interval=int(cfg["evaluation"]["interval"]),
            pauses=tuple(round(f * total) for f in cfg["budget"]["pause_fractions"]),
            newdata_pause=newdata_pause_step(cfg),
            newdata_size=int(cfg["newdata"]["size"]),
            validation_cost=round((val["online_fraction"] + val["offline_fraction"]) * total),
            finetune_pause=expected.finetune_pause,
        )

    def steps(self, start: int, end: int) -> np.ndarray:
        first = start + self.validation_cost
        return np.array([first, *range((start // self.interval + 1) * self.interval, end + 1, self.interval)])


class _Rows:
    """Accumulates tidy rows of normalised scores, column by column (one DataFrame at the end)."""

    COLUMNS = ("env", "seed", "env_step", "value", "stage", "algo", "dataset", "validation", "selection",
               "variant_options", "pause")  # fmt: skip

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {c: [] for c in self.COLUMNS}

    def add(self, env: str, seed: int, steps: np.ndarray, values: np.ndarray, **variant: Any) -> None:
        n = len(steps)
        fixed = {
            "env": env,
            "seed": seed,
            "stage": variant.get("stage", ""),
            "algo": variant.get("algo", ""),
            "dataset": variant.get("dataset", ""),
            "validation": variant.get("validation", ""),
            "selection": variant.get("selection", ""),
            "variant_options": variant.get("options", ""),
            "pause": int(variant.get("pause", 0)),
        }
        for col, value in fixed.items():
            self.columns[col].extend([value] * n)
        self.columns["env_step"].extend(np.asarray(steps, dtype=int).tolist())
        self.columns["value"].extend(np.asarray(values, dtype=float).tolist())

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.columns)
        df["metric"] = NORMALIZED
        return df


@dataclasses.dataclass
class _Noise:
    """Values of one online run's variants: its level, a planted effect, and evaluation noise."""

    level: float
    sigma: float
    rng: np.random.Generator

    def __call__(self, effect: np.ndarray | float, n: int) -> np.ndarray:
        return self.level + np.asarray(effect) + self.rng.normal(0, self.sigma, n)

    def sibling(self, rng: np.random.Generator) -> _Noise:
        """The same run's level with noise from ``rng`` (C1's control)."""
        return dataclasses.replace(self, rng=rng)


@dataclasses.dataclass(frozen=True)
class RLNoise:
    """A noise model closer to RL results than independent normal noise (``--noise rl``).

    * **Per-environment scales**: environment ``i`` of ``n`` has noise ``sigma x scale_i``, the scales
      spaced geometrically from ``scales[0]`` to ``scales[1]`` in the configuration's order.
    * **Heavy tails**: Student-t noise with ``tail_df`` degrees of freedom, scaled to that sd.
    * **Collapsing seeds**: each evaluated series (a curve, a recommendation) collapses with probability
      ``collapse``: it scores 0 (a random policy) throughout, as a diverged or never-learning run does
      (a collapse from a random evaluation on would plant a drop after the switch, not a null).
    * **Bounded success rates**: environments whose metric is a success rate or a share of subtasks
      score ``Binomial(trials, p) / trials`` (``episodes`` evaluation episodes, times 4 subtasks in
      Kitchen), ``p`` the clipped level; their level is ``sparse_level`` (success) or ``kitchen_level``,
      so many evaluations score exactly 0 (zero inflation).
    * **Autocorrelated curves**: evaluations along one curve share AR(1) noise with coefficient ``rho``.
    * **Drawdowns**: with ``drawdown > 0`` online SAC falls below its best snapshot on the sparse-reward
      environments (as the ``drawdown`` argument of :func:`synthetic_results`; the rl model's default).

    Planted effects (and the boundaries of C4.3 and C6) are added on the measured scale, after the
    collapse and the success-rate draw: clipping and collapsing shrink a shift made before them, which
    would move a boundary null into the claim's side (measured: C6.1 said "reproduced" in 8.5% of null
    studies that way). The noise is bounded; a planted difference may take a value beyond [0, 1].
    """

    scales: tuple[float, float] = (0.5, 2.0)
    tail_df: float = 3.0
    collapse: float = 0.05
    episodes: int = 10
    sparse_level: float = 0.15
    kitchen_level: float = 0.3
    rho: float = 0.7
    drawdown: float = 0.3

    def env_scales(self, envs: Sequence[str]) -> dict[str, float]:
        return dict(zip(envs, np.geomspace(*self.scales, num=len(envs)), strict=True))

    def level(self, metric: str) -> float:
        return {"success": self.sparse_level, "subtasks": self.kitchen_level}.get(metric, LEVEL)

    def trials(self, metric: str) -> int:
        return {"success": self.episodes, "subtasks": 4 * self.episodes}.get(metric, 0)


@dataclasses.dataclass
class _RLRun(_Noise):
    """One online run's variants under :class:`RLNoise` (``sigma`` already the environment's scale)."""

    model: RLNoise = dataclasses.field(default_factory=RLNoise)
    trials: int = 0

    def _t(self, n: int) -> np.ndarray:
        df = self.model.tail_df
        return self.rng.standard_t(df, n) * np.sqrt((df - 2) / df) * self.sigma

    def __call__(self, effect: np.ndarray | float, n: int) -> np.ndarray:
        e = self._t(n)
        for i in range(1, n):  # AR(1) along the curve, stationary with the same sd
            e[i] = self.model.rho * e[i - 1] + np.sqrt(1 - self.model.rho**2) * e[i]
        values = self.level + e
        if self.rng.random() < self.model.collapse:
            values = np.zeros(n)
        if self.trials:
            values = self.rng.binomial(self.trials, np.clip(values, 0.0, 1.0)) / self.trials
        return values + np.asarray(effect)  # on the measured scale: a planted null or boundary holds exactly


def default_drawdown(noise: str) -> float:
    """The drawdown a noise model plants unless one is given: :attr:`RLNoise.drawdown`, none if Gaussian."""
    return RLNoise().drawdown if noise == "rl" else 0.0


def _run_noise(
    model: RLNoise | None, env: str, sigma: float, rng: np.random.Generator, scales: dict[str, float], metrics: dict
) -> _Noise:
    """The noise of one online run (``model`` None: Gaussian): its level, shared by its variants, the run's
    luck added (heavy-tailed too under the rl model), and its evaluations' noise."""
    if model is None:
        return _Noise(LEVEL + rng.normal(0, sigma), sigma, rng)
    run = _RLRun(model.level(metrics[env]), sigma * scales[env], rng, model, model.trials(metrics[env]))
    run.level += float(run._t(1)[0])
    return run


def _effect_envs(envs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Which environments carry the per-environment effects (the sparse ones first)."""
    ordered = [e for e in SPARSE if e in envs] + [e for e in envs if e not in SPARSE]
    return {"pex_helps": tuple(ordered[:2]), "calql_helps": tuple(ordered[:2]), "calql_hurts": tuple(ordered[2:4])}


def _metrics(envs: Sequence[str]) -> dict[str, str]:
    """Each environment's reported metric (return, subtasks, success), from config/envs.yaml."""
    from replication.envspecs import specs

    registry = specs()
    return {env: registry[env].metric for env in envs}


def _control_rng(rng: np.random.Generator) -> np.random.Generator:
    """A stream for the control's noise that leaves ``rng`` where it is (PCG64's jump-ahead)."""
    return np.random.Generator(rng.bit_generator.jumped())


def synthetic_results(
    cfg: dict[str, Any],
    scenario: str,
    sigma: float,
    rng: np.random.Generator,
    margin: float = 0.05,
    drawdown: float | None = None,
    noise: str = "gaussian",
) -> tuple[pd.DataFrame, Expected]:
    """One simulated study (prepared tidy rows of the normalised score) and what it should contain.

    ``drawdown``: how far online SAC's current policy falls below its best past snapshot on the
    sparse-reward environments (module docstring); default 0 (flat online curves) with ``gaussian``
    noise, :attr:`RLNoise.drawdown` with ``rl``.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
    if noise not in NOISE_MODELS:
        raise ValueError(f"unknown noise model {noise!r}; valid: {', '.join(NOISE_MODELS)}")
    if drawdown is None:
        drawdown = default_drawdown(noise)
    if drawdown < 0:
        raise ValueError(f"drawdown must be >= 0, got {drawdown}")
    expected = Expected.from_config(cfg)
    shape = Shape.of(cfg, expected)
    fx = EFFECTS if scenario == "effect" else {**dict.fromkeys(EFFECTS, 0.0), "c4_at_end": -margin}
    against = CONTRARY if scenario == "contrary" else dict.fromkeys(CONTRARY, 0.0)
    wsrl_null = -margin if scenario != "effect" else 0.0  # C6's boundary: a drop of the margin, kept to the end
    where = _effect_envs(expected.envs)
    model = RLNoise() if noise == "rl" else None
    scales = model.env_scales(expected.envs) if model else {}
    metrics = _metrics(expected.envs) if model else {}
    rows = _Rows()
    t, ft = shape.total, shape.finetune_pause
    online_steps = np.arange(0, t + 1, shape.interval)
    control_rng = _control_rng(rng)
    for env in expected.envs:
        rec = fx["recommendation_sparse"] if env in SPARSE else 0.0
        unstable = (online_steps >= min(shape.pauses) / 2) & (online_steps < shape.finetune_pause)
        fall = drawdown * (env in SPARSE) * unstable
        for seed in expected.seeds:
            noisy = _run_noise(model, env, sigma, rng, scales, metrics)  # the run's level, shared by its variants

            rows.add(env, seed, online_steps, noisy(-fall, len(online_steps)), stage="online", algo="sac")
            _recommendations(rows, shape, expected, env, seed, rec, fx["validation_gain"], noisy)
            control = noisy.sibling(control_rng)
            for pause in shape.pauses:  # the best-of recommendation's ledger step
                below = control(-against["recommendation_everywhere"], 1)
                rows.add(env, seed, np.array([pause + shape.validation_cost]), below, stage="recommend",
                         algo="sac", validation="full", selection="online", pause=pause)  # fmt: skip
            steps = shape.steps(ft, t)
            progress = (steps - steps[0]) / max(t - steps[0], 1)
            # the fine-tuned agent starts at the offline agent's level
            fade = rec * (1 - progress)
            gains = {
                "iql": -fx["iql_drop"] * np.interp(progress, [0, 0.05, 0.25, 0.3, 1], [0, 1, 1, 0, 0]),
                "pex": (fx["pex_gain"] * (env in where["pex_helps"]) + against["pex_everywhere"]) * progress,
                "calql": (
                    fx["calql_gain"] * ((env in where["calql_helps"]) - (env in where["calql_hurts"]))
                    + against["calql_everywhere"]
                )
                * progress,  # fmt: skip
                "wsrl": wsrl_null + fx["wsrl_gain"] * progress,
            }
            for method in expected.finetune_methods:
                values = noisy(fade + gains[method], len(steps))
                rows.add(env, seed, steps, values, stage="finetune", algo=method, dataset="buffer",
                         validation="full", pause=ft)  # fmt: skip
            if env in expected.c4_envs:
                ext = shape.steps(ft, 2 * t)
                p = (ext - ext[0]) / (2 * t - ext[0])
                at_t = (t - ext[0]) / (2 * t - ext[0])
                shape_c4 = np.interp(p, [0, 0.05, at_t, 1], [0, -fx["iql_drop"], fx["c4_at_budget"], fx["c4_at_end"]])
                rows.add(env, seed, ext, noisy(shape_c4, len(ext)), stage="finetune", algo="iql",
                         dataset="buffer", validation="full", pause=ft, options="extended=1")  # fmt: skip
            if env == expected.c5_env:
                for reward in expected.c5_rewards:
                    end = fx["c5_gap"] if reward == "accumulated" else 0.0
                    rows.add(env, seed, steps, noisy(fade + end * progress, len(steps)), stage="finetune",
                             algo="calql", dataset="buffer", validation="full", pause=ft,
                             options=f"reward={reward}")  # fmt: skip
    return rows.frame(), expected


def _recommendations(
    rows: _Rows, shape: Shape, expected: Expected, env: str, seed: int, rec: float, gain: float, noisy: _Noise
) -> None:
    """Recommendation rows of every algorithm, dataset and validation variant of one cell."""
    for algo in expected.algos:
        for dataset in expected.datasets:
            pauses = shape.pauses if dataset == "buffer" else (shape.newdata_pause,)
            extra = shape.newdata_size if dataset != "buffer" else 0
            for pause in pauses:
                common = {"stage": "recommend", "algo": algo, "dataset": dataset, "pause": pause}
                step = np.array([pause + extra + shape.validation_cost])
                for selection in ("offline", "best-of"):
                    rows.add(env, seed, step, noisy(rec, 1), validation="full", selection=selection, **common)
                rows.add(env, seed, step - shape.validation_cost, noisy(rec - gain, 1), validation="none",
                         selection="offline", **common)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Simulation:
    """How a calibration's simulated studies are drawn and scored: their environments (``None``: the
    paper profile's), noise scale, model and drawdown (as in :func:`synthetic_results`), the bootstrap's
    replications, the scorecard's ``min_seeds`` (``None``: the claims file's, to see what fewer seeds
    would give) and the random seed."""

    envs: Sequence[str] | None = None
    sigma: float = 0.1
    noise: str = "gaussian"
    drawdown: float | None = None
    reps: int = 1000
    min_seeds: int | None = None
    seed: int = 0


def _claims(*minimums: int | None) -> dict[str, Any]:
    """The claims file, its ``min_seeds`` replaced by the last of ``minimums`` that is set."""
    claims = scorecard.load_claims()
    for minimum in minimums:
        if minimum is not None:
            claims["min_seeds"] = minimum
    return claims


def _settings(cfg: dict[str, Any], claims: dict[str, Any], sim: Simulation) -> dict[str, Any]:
    """What a calibration's report states of the simulated studies it ran."""
    return {
        "envs": list(cfg["envs"]),
        "sigma": sim.sigma,
        "noise": sim.noise,
        "drawdown": default_drawdown(sim.noise) if sim.drawdown is None else sim.drawdown,
        "min_seeds": int(claims.get("min_seeds", 2)),
    }


def calibrate(scenario: str, sims: int, seeds: int, sim: Simulation = Simulation()) -> dict[str, Any]:
    """Share of each verdict per claim test over ``sims`` simulated studies of ``seeds`` seeds."""
    if sims < 1 or seeds < 1:
        raise ValueError(f"sims and seeds must be positive, got sims={sims}, seeds={seeds}")
    cfg = calibration_config(sim.envs, seeds)
    claims = _claims(sim.min_seeds)
    rng = np.random.default_rng(sim.seed)
    counts: dict[str, dict[str, int]] = {}
    roles: dict[str, str] = {}
    for _ in range(sims):
        df, expected = synthetic_results(
            cfg, scenario, sim.sigma, rng, float(claims.get("margin", 0.05)), drawdown=sim.drawdown, noise=sim.noise
        )
        table = scorecard.evaluate_claims(df, expected, claims, reps=sim.reps, seed=int(rng.integers(2**31)))
        for test, role, verdict in table[["test", "role", "verdict"]].itertuples(index=False):
            roles[test] = role
            tally = counts.setdefault(test, dict.fromkeys(VERDICT_KEYS.values(), 0))
            tally[VERDICT_KEYS[verdict]] += 1
    tests = {t: {k: round(v / sims, 4) for k, v in c.items() if k != "not_evaluated" or v} for t, c in counts.items()}
    return {
        "scenario": scenario,
        "sims": sims,
        "seeds": seeds,
        **_settings(cfg, claims, sim),
        "effects": EFFECTS if scenario == "effect" else CONTRARY if scenario == "contrary" else {},
        "roles": roles,
        "tests": tests,
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The calibration result as a Markdown table (one row per test)."""
    head = (
        f"Scenario `{result['scenario']}`, {result['sims']} simulations, {result['seeds']} seeds, "
        f"{len(result['envs'])} environments, sigma {result['sigma']:g}, {result['noise']} noise, "
        f"drawdown {result['drawdown']:g}.\n\n"
    )
    lines = ["| test | role | reproduced | not reproduced | inconclusive |", "|---|---|---|---|---|"]
    for test, shares in result["tests"].items():
        lines.append(
            f"| {test} | {result['roles'][test]} | {shares['reproduced']:.3f} | {shares['not_reproduced']:.3f} "
            f"| {shares['inconclusive']:.3f} |"
        )
    return head + "\n".join(lines) + "\n"


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)


# --- the sequential design against the fixed one (replication calibrate --design sequential)


def _decisive(claims: dict[str, Any], tests: set[str] | None = None) -> dict[str, Any]:
    """``claims`` with only its decisive tests (of ``tests`` if given): all that decides a run's stages."""
    out = dict(claims)
    out["claims"] = {}
    for cid, claim in claims["claims"].items():
        kept = [t for t in claim["tests"] if t["role"] == "decisive" and (tests is None or t["id"] in tests)]
        if kept:
            out["claims"][cid] = {**claim, "tests": kept}
    return out


def _at_confidence(claims: dict[str, Any], confidence: float) -> dict[str, Any]:
    return {**claims, "bootstrap": {**claims.get("bootstrap", {}), "confidence": confidence}}


LABELS = ("env", "stage", "algo", "dataset", "validation", "selection", "variant_options", "metric")


def compact(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its label columns categorical: the scorecard selects rows about twice as fast, with the
    same verdicts (tests/test_sequential.py)."""
    return df.astype(dict.fromkeys(LABELS, "category"))


def _verdicts(df: pd.DataFrame, cfg: dict[str, Any], n: int, claims: dict[str, Any], reps: int, seed: int) -> dict:
    """Each test's verdict on the first ``n`` seeds of one simulated study."""
    expected = Expected.from_config({**cfg, "seeds": list(range(n))})
    with warnings.catch_warnings():  # groupby's observed default on categorical columns (no empty group is used)
        warnings.simplefilter("ignore", FutureWarning)
        table = scorecard.evaluate_claims(df[df["seed"] < n], expected, claims, reps=reps, seed=seed)
    return dict(zip(table["test"], table["verdict"], strict=True))


class _StageCost:
    """GPU-hours of one new seed of the cells that a set of open tests reads (paper profile's grid, the
    assumed GPU figures of replication.plan.estimate), cached per set."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = {**cfg, "seeds": [0]}
        self.cache: dict[frozenset[str], float] = {}

    def __call__(self, tests: Sequence[str]) -> float:
        from replication.plan import claims as plan_claims
        from replication.plan import estimate, sequential

        key = frozenset(tests)
        if key not in self.cache:
            seq = {"initial": 1, "step": 1, "max": 1, "stage": 1, "open": sorted(key)}
            cfg = {**self.cfg, "claims": sequential.claims_of(plan_claims.load(), key), "sequential": seq}
            self.cache[key] = estimate._total(estimate.estimate(cfg)[0]).gpu_seconds / 3600 if key else 0.0
        return self.cache[key]


@dataclasses.dataclass
class _SequentialTally:
    """Counts over the simulated studies of :func:`calibrate_sequential`."""

    looks: tuple[int, ...]
    verdicts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # the design's final verdicts
    seeds: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # seeds at which each test ended
    by_look: dict[int, dict[str, int]] = dataclasses.field(default_factory=dict)  # "reproduced" at that look
    fixed: dict[int, dict[str, int]] = dataclasses.field(default_factory=dict)  # the fixed design's "reproduced"
    run_gpu: list[float] = dataclasses.field(default_factory=list)
    run_seeds: list[int] = dataclasses.field(default_factory=list)

    @staticmethod
    def add(counts: dict[str, int], test: str, yes: bool = True) -> None:
        counts[test] = counts.get(test, 0) + yes

    def shares(self, test: str, sims: int) -> dict[str, Any]:
        cum = 0
        by_look = {}
        for n in self.looks:
            cum += self.by_look.get(n, {}).get(test, 0)
            by_look[n] = round(cum / sims, 4)
        return {
            **{k: round(v / sims, 4) for k, v in self.verdicts[test].items() if k != "not_evaluated" or v},
            "expected_seeds": round(float(np.mean(self.seeds[test])), 3),
            "fixed_reproduced": {n: round(c[test] / sims, 4) for n, c in sorted(self.fixed.items())},
            "reproduced_by_look": by_look,  # cumulative: "reproduced" at this look or an earlier one
        }


def _one_sequential_study(
    df: pd.DataFrame, cfg: dict, claims: dict, design: Any, reps: int, boot_seed: int, cost: _StageCost
) -> tuple[dict[str, tuple[str, int]], float]:
    """The design's run on one simulated study: each decisive test's final verdict and the seeds it ended
    at, and the run's GPU-hours."""
    from replication.plan import sequential

    verdicts: dict[str, str] = {}
    ended: dict[str, int] = {}
    open_ = sequential.open_tests(claims["claims"], sequential.test_ids(claims["claims"]), verdicts)
    gpu, previous = 0.0, 0
    for stage, n in enumerate(design.looks, start=1):
        gpu += (n - previous) * cost(open_)
        previous = n
        now = _verdicts(df, cfg, n, design.look_claims(_decisive(claims, set(open_)), stage), reps, boot_seed)
        verdicts.update(now)
        still = sequential.open_tests(claims["claims"], open_, verdicts)
        for test in now:  # decided, stopped with its claim, or at the last look
            if test not in still or n == design.max:
                ended[test] = n
        open_ = still
        if not open_:
            break
    return {t: (verdicts[t], ended[t]) for t in verdicts}, gpu


def calibrate_sequential(scenario: str, sims: int, design: Any, sim: Simulation = Simulation()) -> dict[str, Any]:
    """The sequential design (``design``: :class:`replication.plan.sequential.Design`) against the fixed
    design at each of its looks, on the same ``sims`` simulated studies of ``design.max`` seeds.

    Per decisive test: the share of each verdict of the sequential design, the share that said "reproduced"
    by each look, its expected seeds, and the share of ``reproduced`` of the fixed design at every look's
    number of seeds (under ``null`` and ``contrary`` only at the most seeds); per run, the expected GPU-hours
    of the sequential design (each stage pays its new seeds of the cells its open tests read, supporting
    tests of open claims included, as a real run plans them) and of the fixed design per seed. The minimum
    of seeds is the design's ``min_seeds``, else ``sim.min_seeds``, else the claims file's, for both designs.
    """
    from replication.plan import sequential

    cfg = calibration_config(sim.envs, design.max)
    claims = _claims(sim.min_seeds, design.min_seeds)
    base = float(claims.get("bootstrap", {}).get("confidence", 0.95))
    fixed_claims = _at_confidence(_decisive(claims), base)
    cost = _StageCost(cfg)
    rng = np.random.default_rng(sim.seed)
    tally = _SequentialTally(design.looks)
    for _ in range(sims):
        df, _ = synthetic_results(
            cfg, scenario, sim.sigma, rng, float(claims.get("margin", 0.05)), sim.drawdown, sim.noise
        )
        df = compact(df)
        boot_seed = int(rng.integers(2**31))
        for n in design.looks if scenario == "effect" else design.looks[-1:]:  # power at every look, errors at max
            for test, verdict in _verdicts(df, cfg, n, fixed_claims, sim.reps, boot_seed).items():
                tally.add(tally.fixed.setdefault(n, {}), test, verdict == scorecard.REPRODUCED)
        ends, gpu = _one_sequential_study(df, cfg, claims, design, sim.reps, boot_seed, cost)
        tally.run_gpu.append(gpu)
        tally.run_seeds.append(max(n for _, n in ends.values()))
        for test, (verdict, n) in ends.items():
            counts = tally.verdicts.setdefault(test, dict.fromkeys(VERDICT_KEYS.values(), 0))
            counts[VERDICT_KEYS[verdict]] += 1
            tally.seeds.setdefault(test, []).append(n)
            tally.add(tally.by_look.setdefault(n, {}), test, verdict == scorecard.REPRODUCED)
    return {
        "scenario": scenario,
        "design": design.as_dict(),
        "looks": list(design.looks),
        "look_confidence": [design.confidence(base, k) for k in range(1, len(design.looks) + 1)],
        "sims": sims,
        **_settings(cfg, claims, sim),
        "tests": {t: tally.shares(t, sims) for t in tally.verdicts},
        "expected_gpu_hours": round(float(np.mean(tally.run_gpu)), 1),
        "expected_run_seeds": round(float(np.mean(tally.run_seeds)), 3),
        "grid_gpu_hours_per_seed": round(cost(sequential.test_ids(claims["claims"])), 1),
    }


BY_SEEDS = ("fixed_reproduced", "reproduced_by_look")  # per-test shares keyed by a number of seeds


def merge_sequential(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Runs of :func:`calibrate_sequential` on one scenario and design with other seeds, as one run of all
    their simulations (every share and expectation weighted by its run's simulations)."""
    total = sum(p["sims"] for p in parts)

    def mean(values: Sequence[float]) -> float:
        return round(sum(v * p["sims"] for v, p in zip(values, parts, strict=True)) / total, 4)

    out = {**parts[0], "sims": total}
    for key in ("expected_gpu_hours", "expected_run_seeds"):
        out[key] = mean([p[key] for p in parts])
    tests = {}
    for test, first in parts[0]["tests"].items():
        each = [p["tests"][test] for p in parts]
        merged = {k: mean([e[k] for e in each]) for k in first if k not in BY_SEEDS}
        for key in BY_SEEDS:
            merged[key] = {n: mean([e[key][n] for e in each]) for n in first[key]}
        tests[test] = merged
    out["tests"] = tests
    return out


def _matched_seeds(fixed: dict[int, float], power: float) -> int | None:
    """The fewest seeds at which the fixed design has at least ``power`` (``None``: not within the looks):
    the first look that reaches it, or fewer seeds where the power interpolated linearly between the two
    looks around it reaches it (rounded up: whole seeds)."""
    points = sorted(fixed.items())
    for i, (n, p) in enumerate(points):
        if p >= power - 1e-9:
            if i == 0:
                return n
            (n0, p0) = points[i - 1]
            return math.ceil(n0 + (n - n0) * (power - p0) / (p - p0) - 1e-9)
    return None


def _by_seeds(test: dict[str, Any], key: str) -> dict[int, float]:
    """A share per number of seeds (:data:`BY_SEEDS`; keys are strings once read from JSON)."""
    return {int(n): p for n, p in test[key].items()}


def _fixed_shares(test: dict[str, Any]) -> dict[int, float]:
    """The fixed design's share of "reproduced" per number of seeds."""
    return _by_seeds(test, "fixed_reproduced")


def _look_levels(result: dict[str, Any]) -> list[float]:
    """Each look's confidence (a single number in results written before the split had weights)."""
    levels = result["look_confidence"]
    return list(levels) if isinstance(levels, list) else [levels] * len(result["looks"])


def _cost_line(by: dict[str, dict[str, Any]], need: dict[str, int]) -> str:
    """The runs' expected GPU-hours against the fixed design of the same power (the most seeds any test
    needs), and against the one with every other test's power (the tests that need the most left out)."""
    eff = by["effect"]
    per_seed = eff["grid_gpu_hours_per_seed"]
    top = max(need.values())
    demanding = [t for t, n in need.items() if n == top]
    rest = [n for n in need.values() if n < top]
    designs = [("of the same power", top)]
    if rest:
        designs.append((f"with every test's power but {', '.join(demanding)}'s", max(rest)))
    out = []
    for label, seeds in designs:
        gpu = seeds * per_seed
        costs = ", ".join(
            f"{s} {by[s]['expected_gpu_hours']:,.0f} ({by[s]['expected_gpu_hours'] / gpu:.0%})" for s in SCENARIOS
        )
        out.append(f"the fixed design {label}, {seeds} seeds, {gpu:,.0f}; sequential: {costs}")
    seeds_at_end = ", ".join(f"{s} {by[s]['expected_run_seeds']:.2f}" for s in SCENARIOS)
    return (
        f"Expected GPU-hours of a run (paper profile, assumed GPU figures; {per_seed:,.1f} a seed of the whole "
        f"grid): {'; '.join(out)}. Seeds at the last stage: {seeds_at_end}.\n"
    )


def _looks_table(null: dict[str, Any], con: dict[str, Any]) -> str:
    """Each test's error by each look (cumulative share of "reproduced"), under null and contrary."""
    looks = null["looks"]
    lines = [
        "| test | " + " | ".join(f"null, by {n} seeds" for n in looks) + " | "
        + " | ".join(f"contrary, by {n} seeds" for n in looks) + " |",
        "|---|" + "---|" * (2 * len(looks)),
    ]  # fmt: skip
    for test in null["tests"]:
        cells = [f"{_by_seeds(r['tests'][test], 'reproduced_by_look')[n]:.3f}" for r in (null, con) for n in looks]
        lines.append(f"| {test} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sequential_markdown(results: Sequence[dict[str, Any]]) -> str:
    """Fixed against sequential, per decisive test: error (null, contrary), power (effect), expected seeds,
    and the run's expected GPU-hours, with the fixed design of the same power (module docstring of
    replication.plan.sequential); then each test's error by each look. Needs the three scenarios on the
    same design."""
    by = {r["scenario"]: r for r in results}
    missing = [s for s in SCENARIOS if s not in by]
    if missing:
        raise ValueError(f"the comparison needs every scenario; missing {missing}")
    eff, null, con = by["effect"], by["null"], by["contrary"]
    looks = eff["looks"]
    levels = ", ".join(f"{c:.4f}" for c in _look_levels(eff))
    head = (
        f"Sequential design {eff['design']} (looks at {looks} seeds, at confidence {levels}) against the fixed "
        f"design, {eff['sims']} simulations per scenario, {len(eff['envs'])} environments, sigma "
        f"{eff['sigma']:g}, {eff['noise']} noise, drawdown {eff.get('drawdown', 0):g}, min_seeds "
        f"{eff['min_seeds']}. Fixed n: the fewest seeds at which the fixed design has the "
        "sequential design's power (linear between looks, rounded up); the fixed design's power is shown at "
        "the first look at or above it, its error (P(reproduced) under null and contrary) at the most seeds.\n\n"
    )
    lines = [
        "| test | error null: seq / fixed | error contrary: seq / fixed | power: seq / fixed n | fixed n "
        "| E[seeds] seq: effect / null / contrary |",
        "|---|---|---|---|---|---|",
    ]
    need = {}
    for test, e in eff["tests"].items():
        fixed = _fixed_shares(e)
        n = _matched_seeds(fixed, e["reproduced"])
        need[test] = n or max(looks)
        at = min((m for m in looks if m >= (n or max(looks))), default=max(looks))  # power: at the next look
        z, c = null["tests"][test], con["tests"][test]
        z_fixed, c_fixed = (_fixed_shares(r["tests"][test])[max(looks)] for r in (null, con))
        lines.append(
            f"| {test} | {z['reproduced']:.3f} / {z_fixed:.3f} | {c['reproduced']:.3f} / "
            f"{c_fixed:.3f} | {e['reproduced']:.3f} / {fixed[at]:.3f} | "
            f"{n if n else '> ' + str(max(looks))} | {e['expected_seeds']:.2f} / {z['expected_seeds']:.2f} / "
            f"{c['expected_seeds']:.2f} |"
        )
    looks_head = '\nError by each look (the share that said "reproduced" at that look or an earlier one):\n\n'
    return head + "\n".join(lines) + "\n\n" + _cost_line(by, need) + looks_head + _looks_table(null, con)
