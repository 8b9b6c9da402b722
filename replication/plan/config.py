"""Run configuration: ``config/defaults.yaml`` (the paper profile) with a run's file on top."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from replication.io import PROJECT_ROOT
from replication.plan.vocabulary import finetune_pause_step, newdata_pause_step, pause_steps

__all__ = ["finetune_pause_step", "newdata_pause_step", "pause_steps"]  # the pauses: replication.plan.vocabulary

CONFIG_DIR = PROJECT_ROOT / "config"
DEFAULTS_FILE = CONFIG_DIR / "defaults.yaml"


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, key by key; lists and scalars replace."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path | str) -> dict[str, Any]:
    """The mapping in a YAML file; a missing or malformed file is a one-line ValueError naming it and the fix."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() or Path.cwd() == PROJECT_ROOT else f" (relative to {Path.cwd()})"
        raise ValueError(
            f"{path}: no such config file{where}; pass an existing file with --configfile, "
            f"or run from the repository root ({PROJECT_ROOT})"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(f"{path}:{at}: malformed YAML ({problem}); fix the file's syntax there") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of keys to values")
    return data


def resolve(user: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full configuration: defaults with ``user`` merged on top, validated."""
    from replication.plan.schema import validate

    cfg = deep_merge(read_yaml(DEFAULTS_FILE), user or {})
    validate(cfg)
    if isinstance(cfg["seeds"], dict):  # a sequential design: the seeds and claims of the stage the run is at
        cfg = resolve_stage(cfg)
        validate(cfg)
    return cfg


def resolve_stage(cfg: dict[str, Any]) -> dict[str, Any]:
    """A sequential design's config at the stage its state file (results/<name>/sequential/) is at."""
    from replication.plan import claims, sequential
    from replication.plan.workflow import results_dir

    return sequential.stage_config(cfg, sequential.read_state(results_dir(cfg)), claims.load())


def load(
    path: Path | str | Sequence[Path | str] | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The package's one config loader: read and resolve the config file at ``path`` (``None``: the
    paper profile, ``config/defaults.yaml`` alone; several files: each merged over the one before, as
    Snakemake's ``--configfile A B``), with the command line's ``overrides`` (:func:`parse_overrides`)
    on top. Every command, job and analysis reads its config here."""
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    user: dict[str, Any] = {}
    for each in paths:
        user = deep_merge(user, read_yaml(each))
    return resolve(deep_merge(user, overrides or {}))


def typed(value: Any) -> Any:
    """A structured ``--config`` value as a config file would hold it: Snakemake reads a dict or list
    given on its command line with YAML's BaseLoader, which leaves every scalar in it a string
    (``videos='{"enabled": true}'`` gives ``"true"``); booleans, numbers and null are read back."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    if not isinstance(value, str):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if parsed is None or isinstance(parsed, (bool, int, float)) else value


def command_line_overrides(entries: Mapping[str, Any]) -> dict[str, Any]:
    """Snakemake's ``--config`` entries with the scalars inside structured values typed (:func:`typed`)."""
    return {key: typed(value) if isinstance(value, (dict, list)) else value for key, value in entries.items()}


def parse_overrides(entries: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` entries (as Snakemake's ``--config``), each VALUE read as YAML, as one nested mapping:
    ``videos={enabled: true}``; a dotted KEY nests (``videos.enabled=true``), which Snakemake does not."""
    out: dict[str, Any] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ValueError(f"--config {entry!r}: give KEY=VALUE, e.g. videos='{{\"enabled\": true}}'")
        try:
            item: Any = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"--config {entry!r}: the value is not YAML ({error.__class__.__name__})") from None
        for name in reversed(key.split(".")):
            item = {name: item}
        out = deep_merge(out, item)
    return out


def env_overrides(section: dict[str, Any], env: str) -> dict[str, Any]:
    """``section`` without its ``overrides`` key, with the overrides for ``env`` applied."""
    base = {k: v for k, v in section.items() if k != "overrides"}
    return deep_merge(base, (section.get("overrides") or {}).get(env, {}))


def online_params(cfg: dict[str, Any], env: str) -> dict[str, Any]:
    """SAC settings for ``env``."""
    return env_overrides(cfg["online"], env)


def offline_params(cfg: dict[str, Any], env: str, algo: str) -> dict[str, Any]:
    """Settings of offline algorithm ``algo`` on ``env``."""
    overrides = (cfg["offline"].get("overrides") or {}).get(env, {}).get(algo, {})
    return deep_merge(cfg["offline"][algo], overrides)


def env_options(cfg: dict[str, Any], env: str) -> dict[str, Any]:
    """Options for ``make_env`` of ``env`` (reward mode, delay, episode length)."""
    return copy.deepcopy((cfg.get("env_options") or {}).get(env, {}))
