"""The plan cut to the claims a run tests (config key ``claims``): only the jobs whose results they read.

What a test of ``paper/claims.yaml`` reads comes from its own selectors (``treatment``, ``baseline``,
``pauses``, ``envs``, ``method``, ``options``, ``compared_with``, ``stage``) read the way
:mod:`replication.analysis.scorecard` reads them, as sets of tidy rows (:class:`Rows`). What a job
writes is the same kind of set (:func:`produces`). A cut keeps every job that writes rows some test of
a selected claim reads, and the jobs those depend on (:func:`needs`: the online run of its cell, the
newdata dataset an offline learner trains on, the offline agent fine-tuning starts from). With
``claims`` unset the plan is the whole grid.

:func:`produces` is also what makes a cut checkable: the rows of a tidy table that a cut plan's jobs
would have written are :func:`rows_of` those jobs (tests/test_claim_plan.py).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from replication.io import PROJECT_ROOT
from replication.plan.variants import finetune_dataset
from replication.plan.vocabulary import c5_env, finetune_pause_step, finetune_source, newdata_pause_step
from replication.plan.workflow import Job, dataset_key, extended_steps, parse_cell, parse_dataset_key

if TYPE_CHECKING:
    import pandas as pd

CLAIMS_FILE = PROJECT_ROOT / "paper" / "claims.yaml"
EXTENDED = "extended=1"  # the tidy option of C4's extension (replication.agents.finetune.EXTENDED_OPTION)
ONLINE, RECOMMEND, FINETUNE = "online", "recommend", "finetune"  # tidy stages


@functools.cache
def load(path: Path | str = CLAIMS_FILE) -> dict[str, Any]:
    """The claims of ``paper/claims.yaml`` (``claims:`` mapping), read once."""
    return dict(yaml.safe_load(Path(path).read_text())["claims"])


@functools.cache
def min_seeds(path: Path | str = CLAIMS_FILE) -> int:
    """The claims file's ``min_seeds``: with fewer seeds the scorecard decides no test."""
    return int(yaml.safe_load(Path(path).read_text()).get("min_seeds", 2))


def claim_ids() -> list[str]:
    return list(load())


def selected(cfg: dict[str, Any]) -> list[str] | None:
    """The claims a run tests: config key ``claims``, or ``None`` (unset: every claim, the whole grid)."""
    return list(cfg["claims"]) if cfg.get("claims") else None


def uncut(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` without its ``claims``: the config of the whole grid."""
    return {**cfg, "claims": None}


def check(cfg: dict[str, Any]) -> str | None:
    """Why the config's ``claims`` are not claims of ``paper/claims.yaml`` (one line), or ``None``."""
    unknown = [c for c in cfg.get("claims") or () if c not in load()]
    if not unknown:
        return None
    return f"config key claims: unknown claim(s) {unknown}; valid: {', '.join(claim_ids())} (paper/claims.yaml)"


def options(*parts: str) -> str:
    """Canonical tidy ``variant_options``: the ``key=value`` items of ``parts``, sorted."""
    return ";".join(sorted(item.strip() for part in parts for item in part.split(";") if item.strip()))


@dataclasses.dataclass(frozen=True)
class Rows:
    """A set of tidy rows: those whose columns take one of the given values (``None``: any value).

    ``env`` is the tidy ``env`` column (the study environment; a cell's options are in ``options``).
    """

    stage: str
    envs: frozenset[str]
    options: frozenset[str] = frozenset({""})
    algos: frozenset[str] | None = None
    datasets: frozenset[str] | None = None
    validations: frozenset[str] | None = None
    selections: frozenset[str] | None = None
    pauses: frozenset[int] | None = None
    seeds: frozenset[int] | None = None

    def _columns(self) -> dict[str, frozenset[Any] | None]:
        return {
            "env": self.envs,
            "variant_options": self.options,
            "algo": self.algos,
            "dataset": self.datasets,
            "validation": self.validations,
            "selection": self.selections,
            "pause": self.pauses,
            "seed": self.seeds,
        }

    def meets(self, other: Rows) -> bool:
        """Whether some row is in both sets."""
        if self.stage != other.stage:
            return False
        pairs = zip(self._columns().values(), other._columns().values(), strict=True)
        return all(a is None or b is None or bool(a & b) for a, b in pairs)

    def mask(self, df: pd.DataFrame) -> pd.Series:
        """Which rows of a prepared tidy table (canonical options) are in the set."""
        keep = df["stage"] == self.stage
        for column, values in self._columns().items():
            if values is not None:
                keep &= df[column].isin(list(values))
        return keep


def _set(values: Iterable[Any] | Any | None) -> frozenset[Any] | None:
    if values is None:
        return None
    return frozenset([values] if isinstance(values, str | int) else values)


# --- what a test reads


def test_envs(cfg: dict[str, Any], test: dict[str, Any]) -> frozenset[str]:
    """The environments a test's statistic reads (``envs``: all, c4, or a list; C5's Kitchen env)."""
    if test["statistic"] == "reward_mode_difference":
        return frozenset(filter(None, [c5_env(cfg)]))
    which, envs = test.get("envs"), list(cfg["envs"])
    if which in (None, "all"):
        return frozenset(envs)
    if which == "c4":
        c4 = cfg["analysis"]["c4"]
        return frozenset(e for e in c4["envs"] if e in envs) if c4["enabled"] else frozenset()
    return frozenset(e for e in which if e in envs)


def _finetune_source(cfg: dict[str, Any]) -> dict[str, frozenset[Any] | None]:
    """The ``dataset`` and ``validation`` of the offline agent fine-tuning starts from (and of its rows)."""
    ft = cfg["finetune"]
    return {"datasets": _set(finetune_dataset(cfg).label), "validations": _set("full" if ft["validation"] else "none")}


def _recommendation_pauses(cfg: dict[str, Any], test: dict[str, Any]) -> frozenset[int] | None:
    pauses = test.get("pauses", "all")
    return None if pauses in ("all", "comparison") else frozenset(int(p) for p in pauses)


def reads(cfg: dict[str, Any], test: dict[str, Any]) -> list[Rows]:
    """The tidy rows a claim test reads under ``cfg``, from its own selectors in ``paper/claims.yaml``."""
    envs, stat = test_envs(cfg, test), test["statistic"]
    algos = _set(cfg["offline"]["algos"])
    online = Rows(ONLINE, envs, algos=_set("sac"))
    if not envs:
        return []
    if stat.startswith("recommendation_effect_"):
        t = test.get("treatment", {})
        out = [
            online,
            Rows(
                RECOMMEND,
                envs,
                algos=algos,
                datasets=_set(t.get("dataset")),
                validations=_set(t.get("validation")),
                selections=_set(t.get("selection")),
                pauses=_recommendation_pauses(cfg, test),
            ),
        ]
        if test.get("compared_with", "online") == "control":  # C1's control (tidy algo=sac, selection=online)
            out.append(Rows(RECOMMEND, envs, algos=_set("sac"), validations=_set("full"), selections=_set("online")))
        return out
    if stat.startswith("validation_"):
        return [
            Rows(
                RECOMMEND,
                envs,
                algos=algos,
                validations=_set(test[side].get("validation")),
                selections=_set(test[side].get("selection")),
            )
            for side in ("treatment", "baseline")
        ]
    if stat.startswith("finetune_"):
        method, extra = test["method"], str(test.get("options", ""))
        source = _finetune_source(cfg)
        switch = Rows(
            RECOMMEND,
            envs,
            algos=_set(finetune_source(cfg, method)),
            selections=_set("offline"),
            pauses=_set(_switch_pause(cfg)),
            **source,
        )
        # an extended run's curve starts from the plain run of the same method (scorecard._finetune_curve)
        curve = Rows(FINETUNE, envs, frozenset({options(extra), ""}), algos=_set(method), **source)
        return [online, curve, switch]
    if stat == "reward_mode_difference":
        modes = frozenset(options(f"reward={test[side]}") for side in ("treatment", "baseline"))
        if test["stage"] == FINETUNE:
            return [Rows(FINETUNE, envs, modes, algos=_set(test["method"]), **_finetune_source(cfg))]
        return [
            Rows(
                RECOMMEND, envs, modes, algos=_set(test["method"]), validations=_set("full"), selections=_set("offline")
            )
        ]
    raise ValueError(f"claim test {test.get('id')}: no reading of statistic {stat!r} (replication.plan.claims)")


def _switch_pause(cfg: dict[str, Any]) -> int:
    return newdata_pause_step(cfg) if cfg["finetune"]["dataset"] == "newdata" else finetune_pause_step(cfg)


def claim_reads(cfg: dict[str, Any], claim_ids: Sequence[str]) -> list[Rows]:
    """Every tidy row set that a test of the claims ``claim_ids`` reads."""
    claims = load()
    return [rows for cid in claim_ids for test in claims[cid]["tests"] for rows in reads(cfg, test)]


def test_reads(cfg: dict[str, Any], test_ids: Sequence[str]) -> list[Rows]:
    """Every tidy row set that the tests ``test_ids`` read (a sequential run's open tests)."""
    wanted = set(test_ids)
    return [rows for claim in load().values() for t in claim["tests"] if t["id"] in wanted for rows in reads(cfg, t)]


def wanted_reads(cfg: dict[str, Any], claim_ids: Sequence[str]) -> list[Rows]:
    """What a run's plan keeps: the reads of its claims' tests, or of its open tests only at a stage of a
    sequential run (``sequential.open``, replication.plan.sequential)."""
    if (seq := cfg.get("sequential")) and seq.get("open") is not None:
        return test_reads(cfg, seq["open"])
    return claim_reads(cfg, claim_ids)


# --- what a job writes, and what it needs


def produces(cfg: dict[str, Any], job: Job) -> list[Rows]:
    """The tidy rows job ``job`` writes (none for newdata: it writes a dataset)."""
    cell = parse_cell(job.env)
    own = options(cell.variant_options)
    where = {"envs": frozenset({cell.env}), "options": frozenset({own}), "seeds": _set(job.seed)}
    if job.rule == "online":
        blank = _set("")
        return [Rows(ONLINE, algos=_set("sac"), datasets=blank, validations=blank, selections=blank, **where)]
    if job.rule == "control":
        return [Rows(RECOMMEND, algos=_set("sac"), validations=_set("full"), selections=_set("online"), **where)]
    if job.rule == "offline":
        d = parse_dataset_key(cfg, job.dataset)
        return [
            Rows(
                RECOMMEND,
                algos=_set(job.algos),
                datasets=_set(d.label),
                validations=_set(d.validations),
                pauses=_set(d.pause),
                **where,
            )
        ]
    if job.rule == "finetune":
        if extended_steps(cfg, job):  # C4's extension: rows tagged extended=1 past the budget
            where["options"] = frozenset({own, options(own, EXTENDED)})
        source = _finetune_source(cfg)
        return [Rows(FINETUNE, algos=_set(job.algo), pauses=_set(_switch_pause(cfg)), **source, **where)]
    return []


def reads_any(cfg: dict[str, Any], job: Job, wanted: Sequence[Rows]) -> bool:
    """Whether some row that ``job`` writes is in one of the sets ``wanted``."""
    return any(p.meets(w) for p in produces(cfg, job) for w in wanted)


def needs(cfg: dict[str, Any], job: Job) -> list[Job]:
    """The jobs whose outputs ``job`` reads (its rule's inputs in rules/*.smk)."""
    online = Job("online", job.env, job.seed)
    if job.rule == "offline" and parse_dataset_key(cfg, job.dataset).is_newdata:
        return [online, Job("newdata", job.env, job.seed, dataset=job.dataset)]
    if job.rule == "finetune":
        start = dataset_key(finetune_dataset(cfg))
        offline = [Job("offline", job.env, job.seed, dataset=start)]
        return [online, *offline, *(needs(cfg, offline[0])[1:])]
    return [] if job.rule == "online" else [online]


def cut(cfg: dict[str, Any], grid: Sequence[Job], claim_ids: Sequence[str]) -> list[Job]:
    """The jobs of ``grid`` (order kept) that the tests of ``claim_ids`` read, and what those need."""
    wanted = wanted_reads(cfg, claim_ids)
    keys = {(j.rule, j.env, j.seed, j.variant): j for j in grid}
    keep = {k for k, j in keys.items() if reads_any(cfg, j, wanted)}
    todo = list(keep)
    while todo:
        for need in needs(cfg, keys[todo.pop()]):
            k = (need.rule, need.env, need.seed, need.variant)
            if k not in keys:
                raise ValueError(f"the grid has no {need.rule} job for {need.env} seed {need.seed} {need.variant}")
            if k not in keep:
                keep.add(k)
                todo.append(k)
    return [j for k, j in keys.items() if k in keep]


def rows_of(cfg: dict[str, Any], jobs: Iterable[Job], df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the prepared tidy table ``df`` (canonical options) that ``jobs`` write."""
    seeds: dict[Rows, set[int]] = {}  # the jobs' row sets with their seeds merged: far fewer masks
    for job in jobs:
        for rows in produces(cfg, job):
            seeds.setdefault(dataclasses.replace(rows, seeds=None), set()).update(rows.seeds or ())
    keep = df["stage"].isin([])
    for rows, among in seeds.items():
        keep |= dataclasses.replace(rows, seeds=frozenset(among)).mask(df)
    return df[keep]


# --- what the aggregation reads

# Tables, figures, the aggregate statistics (aggregate.csv, F5's numbers) and the videos, each with the
# jobs it reads (rules/aggregate.smk, rules/videos.smk; replication.analysis): (rule, cells) pairs, where
# cells is "main" (the environments of envs), "c4" (C4's extended IQL fine-tuning), "c5" (C5's reward-mode
# cells) or "delay" (the reward-granularity cells). Made only when the plan has every such job.
MAIN = (("online", "main"), ("control", "main"), ("newdata", "main"), ("offline", "main"), ("finetune", "main"))
PRODUCTS: dict[str, tuple[tuple[str, str], ...]] = {
    "T1": (("online", "main"), ("control", "main"), ("offline", "main")),  # every recommendation, C1's control
    "T2": (("online", "main"), ("newdata", "main"), ("offline", "main")),  # validated vs unvalidated
    "T3": (("online", "main"), ("finetune", "main")),  # every fine-tuning method vs SAC continuation
    "L1": (("online", "main"), ("newdata", "main"), ("offline", "main")),  # every learner, unvalidated
    "statistics": MAIN,  # every recommendation and fine-tuning variant
    "F1": (("online", "main"), ("control", "main"), ("offline", "main")),
    "F2": (("online", "main"), ("finetune", "main")),
    "F3": (("online", "c4"), ("finetune", "c4")),
    "F4": (("online", "c5"), ("finetune", "c5")),
    "F5": MAIN,  # the aggregate statistics
    "F6": (("online", "delay"), ("offline", "delay"), ("finetune", "delay")),
    "videos": (("online", "main"), ("offline", "main"), ("finetune", "main")),  # best recommended, best fine-tuned
}


def _cells(cfg: dict[str, Any], job: Job) -> set[str]:
    """The cells of :data:`PRODUCTS` that ``job`` belongs to."""
    cell = parse_cell(job.env)
    names = dict(cell.options)
    if "reward" in names:
        return {"c5"}
    if "delay" in names or cell.env not in cfg["envs"]:
        return {"delay"}
    c4 = cfg["analysis"]["c4"]
    in_c4 = c4["enabled"] and job.env in c4["envs"] and job.rule in ("online", "finetune") and job.algo in ("", "iql")
    return {"main", "c4"} if in_c4 else {"main"}


def left_out(
    cfg: dict[str, Any], grid: Sequence[Job], planned: Sequence[Job], claim_ids: Sequence[str]
) -> dict[str, str]:
    """The products (:data:`PRODUCTS`) that read jobs of ``grid`` missing from ``planned``, each with one
    line saying why."""
    have = {(j.rule, j.env, j.seed, j.variant) for j in planned}
    out = {}
    for name, reads in PRODUCTS.items():
        missing: dict[str, list[int]] = {}
        for job in grid:
            for rule, cells in reads:
                if job.rule == rule and cells in _cells(cfg, job):
                    tally = missing.setdefault(rule, [0, 0])
                    tally[0] += (job.rule, job.env, job.seed, job.variant) not in have
                    tally[1] += 1
        if short := {rule: t for rule, t in missing.items() if t[0]}:
            lacking = ", ".join(f"{t[0]} of the {t[1]} {rule} jobs" for rule, t in short.items())
            out[name] = f"{name} left out: it reads jobs that claims {', '.join(claim_ids)} do not need ({lacking})"
    return out


def cut_batches(
    batches: dict[str, Sequence[str]], grid: Sequence[Job], main: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """``batch_jobs`` under a cut: per rule, the variants every main cell that has any of them runs.

    A rule whose cells keep different variants (e.g. ``claims: [C4, C6]``: IQL and WSRL fine-tuning in
    the C4 environments, WSRL alone elsewhere) runs one job per variant instead.
    """
    out = {}
    for rule in batches:
        per_cell: dict[tuple[str, int], list[str]] = {}
        for job in grid:
            if job.rule == rule and job.env in main:
                per_cell.setdefault((job.env, job.seed), []).append(job.variant)
        kinds = {tuple(v) for v in per_cell.values()}
        out[rule] = kinds.pop() if len(kinds) == 1 else ()
    return out
