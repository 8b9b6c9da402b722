"""``replication study``: a run of any config in one command, stage by stage for a sequential design.

For each stage: Snakemake with the user's arguments (the config resolves to the stage its state file is
at, :func:`replication.plan.config.resolve`), then the stage's decisions recorded from S1
(:func:`replication.plan.sequential.advance`, written atomically), until the run ends. Killed at any
moment, the same command continues: a stage's Snakemake run resumes like any run, and a stage whose
workflow finished but whose decisions were not recorded is recorded without running a job. Running the
stages by hand is the same: ``snakemake ...`` then ``replication study --decide ...``, repeated.

A config with a plain list of seeds is one stage: the command is Snakemake's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

log = logging.getLogger(__name__)
Runner = Callable[[list[str]], int]
DRY = {"-n", "--dry-run", "--dryrun"}


def option_values(args: Sequence[str], *names: str) -> list[str]:
    """The values following any of ``names`` in a Snakemake command line (up to the next option)."""
    out, taking = [], False
    for arg in args:
        if arg in names:
            taking = True
        elif arg.startswith("-"):
            taking = False
        elif taking:
            out.append(arg)
    return out


def user_config(args: Sequence[str]) -> dict[str, Any]:
    """The config Snakemake would read from ``args``: every ``--configfile`` merged, then ``--config`` items."""
    from replication.plan import config

    merged: dict[str, Any] = {}
    for path in option_values(args, "--configfile", "--configfiles"):
        merged = config.deep_merge(merged, config.read_yaml(path))
    for item in option_values(args, "--config", "-C"):
        key, _, value = item.partition("=")
        merged = config.deep_merge(merged, {key: yaml.safe_load(value)})
    return merged


@contextlib.contextmanager
def workdir(args: Sequence[str]) -> Iterator[None]:
    """Inside Snakemake's ``--directory`` (results/ is relative to it), if the arguments give one."""
    where = option_values(args, "--directory", "-d")
    before = Path.cwd()
    os.chdir(where[-1] if where else before)
    try:
        yield
    finally:
        os.chdir(before)


def snakemake(args: Sequence[str]) -> int:
    return subprocess.call([sys.executable, "-m", "snakemake", *args])


def decide(cfg: dict[str, Any]) -> dict[str, Any]:
    """Record the finished stage's decisions (its S1) and plan the next."""
    from replication.plan import claims, sequential
    from replication.plan.workflow import results_dir

    results = results_dir(cfg)
    path = results / "scorecard" / "S1.csv"
    if not path.is_file():
        raise ValueError(f"{path}: no scorecard yet; run stage {cfg['sequential']['stage']}'s workflow first")
    s1 = pd.read_csv(path, keep_default_na=False, na_values=[""])
    state = sequential.advance(results, cfg, s1.to_dict("records"), claims.load())
    last = state["stages"][-1]
    log.info(
        "stage %d (%d seeds): %d of %d open tests decided; %s",
        last["stage"],
        last["seeds"],
        len(last["decided"]),
        len(last["open"]),
        "the run has ended" if state["done"] else f"stage {state['stage']} plans {', '.join(state['open'])}",
    )
    return state


def study(args: Sequence[str], *, decide_only: bool = False, runner: Runner = snakemake) -> int:
    """Run every stage (Snakemake with ``args``, then the decisions) until the run ends; see the module."""
    from replication.plan import config, sequential
    from replication.plan.workflow import results_dir

    user = user_config(args)
    with workdir(args):
        while True:
            cfg = config.resolve(user)
            if not cfg.get("sequential"):
                return 0 if decide_only else runner(list(args))
            state = sequential.read_state(results_dir(cfg))
            if state is not None and state["done"]:
                log.info("the sequential run %s has ended (results/%s/sequential/)", cfg["name"], cfg["name"])
                return 0
            if not decide_only:
                log.info("stage %d: %d seeds", cfg["sequential"]["stage"], len(cfg["seeds"]))
                if rc := runner(list(args)):
                    return rc
                if DRY & set(args):
                    return 0
            decide(cfg)
            if decide_only:
                return 0
