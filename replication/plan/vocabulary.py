"""The study's names, defined once: learners, fine-tuning methods, dataset labels and pauses.

Everything that lists the offline algorithms or the fine-tuning methods (config checks, the
command line, the workflow's wildcard constraints, the aggregation) reads them from here.
"""

from __future__ import annotations

from typing import Any

OFFLINE_ALGOS = ("iql", "cql", "calql")
# fine-tuning method -> the offline algorithm whose agent it starts from (WSRL: the default of
# finetune.wsrl.source; use finetune_source for a config's own)
FINETUNE_METHODS = {"iql": "iql", "pex": "iql", "calql": "calql", "wsrl": "calql"}
WSRL_SOURCES = ("calql", "cql")  # offline agents with a SAC-shaped actor and critic
NEWDATA_COLLECTORS = ("best", "last")
NEWDATA_PREFIX = "newdata-eps"
TABLES = ("T1", "T2", "T3", "L1")  # every table of the study, in the report's order
FIGURES = ("F1", "F2", "F3", "F4", "F5", "F6")  # every figure


def finetune_source(cfg: dict[str, Any], method: str) -> str:
    """The offline algorithm whose agent fine-tuning ``method`` starts from under config ``cfg``."""
    if method not in FINETUNE_METHODS:
        raise ValueError(f"unknown fine-tuning method {method!r}; valid: {', '.join(FINETUNE_METHODS)}")
    return str(cfg["finetune"]["wsrl"]["source"]) if method == "wsrl" else FINETUNE_METHODS[method]


def dataset_name(epsilon: float) -> str:
    """The dataset label of a newdata variant: ``newdata`` for epsilon 0, else ``newdata-eps<e>``."""
    return "newdata" if float(epsilon) == 0 else f"{NEWDATA_PREFIX}{float(epsilon):g}"


def pause_steps(cfg: dict[str, Any]) -> list[int]:
    """The pause points of the recommendation variants, in env steps."""
    total = cfg["budget"]["total_steps"]
    return [round(f * total) for f in cfg["budget"]["pause_fractions"]]


def finetune_pause_step(cfg: dict[str, Any]) -> int:
    """The pause of the buffer dataset fine-tuning starts from, in env steps."""
    return round(cfg["budget"]["finetune_pause"] * cfg["budget"]["total_steps"])


def c5_env(cfg: dict[str, Any]) -> str | None:
    """The Kitchen environment analysis C5 runs on, or None when it is off or not among ``envs``.

    A run of a subset of environments (``envs: [hopper]``) plans no C5 cells: what a config asks
    for is what runs.
    """
    c5 = cfg["analysis"]["c5"]
    return c5["env"] if c5.get("enabled") and c5["env"] in cfg["envs"] else None


def tables(cfg: dict[str, Any]) -> list[str]:
    """The tables a config makes: T3 only with fine-tuning methods."""
    return [t for t in TABLES if t != "T3" or cfg["finetune"]["methods"]]


def figures(cfg: dict[str, Any]) -> list[str]:
    """The figures a config makes: F2 with fine-tuning methods; F3, F4 and F6 only when their analysis is on."""
    analysis = cfg["analysis"]
    c4, granularity = analysis["c4"], analysis["reward_granularity"]
    made = {
        "F2": bool(cfg["finetune"]["methods"]),
        "F3": bool(c4.get("enabled") and set(c4["envs"]) & set(cfg["envs"])),
        "F4": c5_env(cfg) is not None,
        "F6": bool(granularity.get("enabled") and granularity["envs"] and granularity["delays"]),
    }
    return [f for f in FIGURES if made.get(f, True)]


def newdata_pause_step(cfg: dict[str, Any]) -> int:
    """The pause at which the newdata datasets are collected, in env steps."""
    return round(cfg["newdata"]["pause"] * cfg["budget"]["total_steps"])


def online_pauses(cfg: dict[str, Any]) -> list[int]:
    """Every pause at which the online run keeps state: recommendation, fine-tuning, newdata."""
    return sorted(set(pause_steps(cfg)) | {finetune_pause_step(cfg), newdata_pause_step(cfg)})
