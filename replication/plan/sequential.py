"""A group-sequential scorecard: seeds in stages, spent only where a verdict is still open.

Config key ``seeds: {initial: S0, step: k, max: Smax[, min_seeds: m][, weights: [w1, ...]]}`` plans
looks at ``S0, S0 + k, ..., Smax`` seeds (the last one capped at ``Smax``). After each stage the
scorecard decides every open test with stage-adjusted boundaries; a test that says ``reproduced`` or
``not reproduced`` is decided and keeps that row, the others stay open, and the next stage plans its new
seeds only for the cells that the open tests read (the claim-targeted plan,
:mod:`replication.plan.claims`). The run ends when no test is open or at ``Smax``.

Boundaries: a Bonferroni split of each test's error over the ``K`` planned looks. Look ``k`` runs the
fixed design's rules (``paper/claims.yaml``) at confidence ``1 - (1 - c) w_k`` instead of ``c``, ``w_k``
its share of the error (``weights``, in proportion; equal shares ``1/K`` by default), so each one-sided
statement errs with probability at most ``(1 - c) w_k / 2`` at look ``k``, and by the union
bound (Bonferroni's inequality) at most ``(1 - c) / 2`` over all looks, whatever the stopping rule and
whether or not the looks' statistics are correlated (Jennison and Turnbull 2000, *Group Sequential
Methods with Applications to Clinical Trials*, Chapman & Hall, section 2.3 and chapter 7: repeated
significance tests and the Bonferroni bound on their overall error; a constant nominal level at every
look is the shape of Pocock's design, here at the conservative Bonferroni level). It was chosen over
Lan-DeMets alpha spending because it holds for every rule of the scorecard as it is, including the
count rules (Holm across environments, the parametric-bootstrap heterogeneity test, the bound on the
smallest effects), whose joint distribution across looks has no closed form; spending boundaries would
need it, and AdaStop (Mathieu et al., TMLR 2024) would replace the scorecard's tests by permutation tests.
The price is some power at the last look (checked: ``replication calibrate --design
sequential``); shares that grow with the looks give the last look more of the error, as alpha-spending
functions that spend little early do (Kim and DeMets 1987, *Biometrika* 74(1): the power family
``alpha t^rho`` in the information fraction ``t``), here with Bonferroni's bound in place of their joint law.
Each look applies the scorecard's ``min_seeds``: the design's own (``min_seeds``) if it sets one, else
the claims file's; a first look below it would decide nothing and is refused.

It assumes exchangeable seeds (the seeds of a later stage are drawn like the earlier
ones) and no look outside the design (every verdict read between stages is one of the ``K`` looks).

State: ``results/<name>/sequential/state.json`` (written atomically) holds the stage the run is at, the
tests still open and the S1 rows of the decided ones. ``replication study`` runs Snakemake for the
current stage, records its decisions (:func:`advance`), and goes on until the run ends.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from replication.io import read_json, write_json

STATE = "state.json"
NOT_REPRODUCED = "not reproduced"
DECIDED = ("reproduced", NOT_REPRODUCED, "not evaluated")  # verdicts that end a test's stages


@dataclasses.dataclass(frozen=True)
class Design:
    """Looks at ``initial``, ``initial + step``, ... seeds, the last capped at ``max``.

    ``min_seeds``: the scorecard's minimum at the looks (``None``: the claims file's ``min_seeds``);
    ``weights``: each look's share of the error, in proportion (``None``: equal shares)."""

    initial: int
    step: int
    max: int
    min_seeds: int | None = None
    weights: tuple[float, ...] | None = None

    @classmethod
    def of(cls, seeds: Mapping[str, Any]) -> Design:
        minimum, weights = seeds.get("min_seeds"), seeds.get("weights")
        return cls(
            int(seeds["initial"]),
            int(seeds["step"]),
            int(seeds["max"]),
            None if minimum is None else int(minimum),
            None if weights is None else tuple(float(w) for w in weights),
        )

    @property
    def looks(self) -> tuple[int, ...]:
        """The number of seeds at each look."""
        more = math.ceil((self.max - self.initial) / self.step)
        return tuple(min(self.initial + i * self.step, self.max) for i in range(more + 1))

    def shares(self) -> tuple[float, ...]:
        """Each look's share of the error (summing to 1)."""
        k = len(self.looks)
        if self.weights is None:
            return (1 / k,) * k
        return tuple(w / sum(self.weights) for w in self.weights)

    def confidence(self, base: float, stage: int = 1) -> float:
        """The two-sided confidence of look ``stage`` (1-based): the error ``1 - base`` times its share
        (a Bonferroni split; valid by the union bound for any shares summing to 1)."""
        if self.weights is None:
            return 1 - (1 - base) / len(self.looks)
        return 1 - (1 - base) * self.shares()[stage - 1]

    def as_dict(self) -> dict[str, Any]:
        """The design as its config mapping (the optional keys only when set)."""
        out: dict[str, Any] = {"initial": self.initial, "step": self.step, "max": self.max}
        if self.min_seeds is not None:
            out["min_seeds"] = self.min_seeds
        if self.weights is not None:
            out["weights"] = list(self.weights)
        return out

    def look_claims(self, claims: Mapping[str, Any], stage: int) -> dict[str, Any]:
        """``claims`` (the claims file's mapping) as look ``stage`` applies them: its confidence and its share
        of ``alpha``, and the design's ``min_seeds`` if it has one."""
        base = float(claims.get("bootstrap", {}).get("confidence", 0.95))  # the scorecard's default
        out = {**claims, "bootstrap": {**claims.get("bootstrap", {}), "confidence": self.confidence(base, stage)}}
        out["alpha"] = float(claims.get("alpha", 0.05)) * self.shares()[stage - 1]
        if self.min_seeds is not None:
            out["min_seeds"] = self.min_seeds
        return out


def design_of(cfg: Mapping[str, Any]) -> Design | None:
    """The run's sequential design (``seeds`` a mapping, or ``sequential`` once resolved), else ``None``."""
    if isinstance(cfg.get("seeds"), Mapping):
        return Design.of(cfg["seeds"])
    if cfg.get("sequential"):
        return Design.of(cfg["sequential"])
    return None


def check(seeds: Mapping[str, Any], claims_min_seeds: int) -> str | None:
    """Why a ``seeds`` mapping cannot be run (one line), or ``None``. ``claims_min_seeds``: the claims file's
    ``min_seeds``, the minimum at the looks unless the design sets its own."""
    if not 2 <= seeds["initial"] <= seeds["max"]:
        return f"config key seeds: needs 2 <= initial <= max, got initial {seeds['initial']}, max {seeds['max']}"
    design = Design.of(seeds)
    minimum = claims_min_seeds if design.min_seeds is None else design.min_seeds
    if design.min_seeds is not None and design.min_seeds < 2:
        return f"config key seeds: min_seeds must be at least 2, got {design.min_seeds}"
    if design.initial < minimum:
        where = "seeds.min_seeds" if design.min_seeds is not None else "paper/claims.yaml min_seeds"
        return (
            f"config key seeds: the first look at {design.initial} seeds would decide nothing ({where}: "
            f"{minimum}); set initial to at least {minimum}, or min_seeds to at most {design.initial}"
        )
    if design.weights is not None and (len(design.weights) != len(design.looks) or min(design.weights) <= 0):
        return (
            f"config key seeds: weights needs one positive number per look ({len(design.looks)} looks at "
            f"{list(design.looks)} seeds), got {list(design.weights)}"
        )
    return None


# --- which tests are open


def test_ids(claims: Mapping[str, Any], claim_ids: Iterable[str] | None = None) -> list[str]:
    """Every test of ``claim_ids`` (default: every claim), in the claims file's order."""
    chosen = set(claims) if claim_ids is None else set(claim_ids)
    return [t["id"] for cid, claim in claims.items() if cid in chosen for t in claim["tests"]]


def open_tests(claims: Mapping[str, Any], candidates: Iterable[str], verdicts: Mapping[str, str]) -> list[str]:
    """Tests of ``candidates`` still open after ``verdicts``: undecided decisive tests, and the undecided
    supporting tests of a claim that still has an open decisive test (they ride along, never extend a run).
    A claim with a decisive test ``not reproduced`` is decided (not reproduced, whatever its other tests
    say): none of its tests stays open."""
    candidates = set(candidates)
    out = []
    for claim in claims.values():
        if any(t["role"] == "decisive" and verdicts.get(t["id"]) == NOT_REPRODUCED for t in claim["tests"]):
            continue
        tests = [t for t in claim["tests"] if t["id"] in candidates and verdicts.get(t["id"]) not in DECIDED]
        if any(t["role"] == "decisive" for t in tests):
            out += [t["id"] for t in tests]
    return out


def claims_of(claims: Mapping[str, Any], tests: Iterable[str]) -> list[str]:
    """The claims holding ``tests``, in the claims file's order."""
    wanted = set(tests)
    return [cid for cid, claim in claims.items() if any(t["id"] in wanted for t in claim["tests"])]


# --- the state of a run


def state_path(results: Path | str) -> Path:
    return Path(results) / "sequential" / STATE


def read_state(results: Path | str) -> dict[str, Any] | None:
    path = state_path(results)
    return read_json(path) if path.is_file() else None


def initial_state(design: Design, open_: Sequence[str]) -> dict[str, Any]:
    return {
        "design": design.as_dict(),
        "stage": 1,
        "open": list(open_),
        "decided": {},
        "stages": [],
        "done": False,
        "undecided": list(open_),
    }


def earlier(state: Mapping[str, Any] | None, stage: int) -> dict[str, dict[str, Any]]:
    """The S1 rows of the tests decided before ``stage``."""
    decided = (state or {}).get("decided", {})
    return {t: row for t, row in decided.items() if int(row["stage"]) < stage}


def stage_config(cfg: dict[str, Any], state: dict[str, Any] | None, claims: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` (``seeds`` a mapping) for the stage ``state`` is at: ``seeds`` the list of that look,
    ``claims`` the claims with open tests (unset at stage 1 if the config left it unset), and
    ``sequential`` the design with the stage and its open tests."""
    design = Design.of(cfg["seeds"])
    if state is not None and state["design"] != design.as_dict():
        raise ValueError(
            f"config key seeds: {design.as_dict()} differs from the design this run started with "
            f"({state['design']}, results/{cfg['name']}/sequential/{STATE}); keep it, or use another name"
        )
    chosen = list(cfg["claims"]) if cfg.get("claims") else None
    if state is None:
        state = initial_state(design, open_tests(claims, test_ids(claims, chosen), {}))
    stage = int(state["stage"])
    out = dict(cfg)
    out["seeds"] = list(range(design.looks[stage - 1]))
    if stage > 1 or chosen is not None:
        out["claims"] = claims_of(claims, state["open"]) or chosen
    out["sequential"] = {**design.as_dict(), "stage": stage, "open": list(state["open"])}
    return out


def advance(
    results: Path | str, cfg: Mapping[str, Any], s1: Sequence[Mapping[str, Any]], claims: Mapping[str, Any]
) -> dict[str, Any]:
    """Record the decisions of the finished stage (its S1 rows ``s1``) and plan the next; written atomically.

    Refuses an S1 that is not the current stage's (a stage stopped early, or a dry run)."""
    seq = cfg["sequential"]
    design, stage = Design.of(seq), int(seq["stage"])
    state = read_state(results) or initial_state(design, seq["open"])
    if int(state["stage"]) != stage or state["done"]:
        raise ValueError(f"the run's state is at stage {state['stage']} (done: {state['done']}), not {stage}")
    rows = {r["test"]: dict(r) for r in s1}
    stale = [t for t in seq["open"] if t not in rows or int(rows[t].get("stage", 0)) != stage]
    if stale:
        raise ValueError(f"S1 lacks stage {stage}'s verdicts of {stale}: finish the stage's workflow first")
    if bad := [t for t in seq["open"] if int(rows[t]["n_seeds"]) != design.looks[stage - 1]]:
        raise ValueError(f"S1's rows of {bad} are not at stage {stage}'s {design.looks[stage - 1]} seeds")
    verdicts = {t: rows[t]["verdict"] for t in seq["open"]}
    still = open_tests(claims, seq["open"], verdicts)
    decided = {t: rows[t] for t in seq["open"] if t not in still}  # decided, or stopped with their claim
    last = stage == len(design.looks)
    state["decided"].update(decided)
    state["stages"].append(
        {"stage": stage, "seeds": design.looks[stage - 1], "open": list(seq["open"]), "decided": sorted(decided)}
    )
    state["done"] = last or not still
    state["undecided"] = still
    if not state["done"]:  # a finished run keeps its last stage's config: rerunning it changes nothing
        state["stage"], state["open"] = stage + 1, still
    write_json(state_path(results), state)
    return state
