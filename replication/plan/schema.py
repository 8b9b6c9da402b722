"""Validation of a resolved run configuration, before any job starts.

Two layers: the JSON schema in ``config/schema.yaml`` (unknown keys, wrong types, out-of-range
values), then the rules that span several keys (known environments, budgets that leave room for
validation, data collection and fine-tuning). Every error names the key and the fix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from replication.envspecs import REWARD_MODES, specs
from replication.io import PROJECT_ROOT
from replication.plan.vocabulary import newdata_pause_step, pause_steps

SCHEMA_FILE = PROJECT_ROOT / "config" / "schema.yaml"


class ConfigError(ValueError):
    """A configuration that cannot run."""


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_error(error: jsonschema.ValidationError) -> ConfigError:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"valid keys here: {', '.join(allowed)}" if allowed else "remove it"
        return ConfigError(f"config key {key}: unknown key(s) {extra}; {hint}")
    if error.validator == "required":
        return ConfigError(f"config key {key}: {error.message}; add it (see config/defaults.yaml)")
    return ConfigError(f"config key {key}: {error.message}; see config/schema.yaml for what it accepts")


def validation_checkpoints(fraction: float, total: int, episodes: int, episode_steps: int) -> int:
    """How many checkpoints a validation budget of ``fraction x total`` env steps can evaluate.

    Each checkpoint is charged ``episodes x episode_steps`` (the longest its episodes can be), so
    the charge never exceeds the budget.
    """
    return math.floor(fraction * total / (episodes * episode_steps))


def episode_steps(cfg: dict[str, Any], env: str) -> int:
    options = (cfg.get("env_options") or {}).get(env, {})
    return int(options.get("max_episode_steps", specs()[env].max_episode_steps))


def validation_costs(cfg: dict[str, Any], env: str) -> tuple[int, int]:
    """Env steps charged for (online, offline) validation: ``fraction x T`` each, as the protocol says.

    The checkpoints evaluated are as many as that charge pays for at full episode length
    (:func:`validation_checkpoints`), so the steps really spent never exceed the charge.
    """
    v, total = cfg["validation"], cfg["budget"]["total_steps"]
    return round(v["online_fraction"] * total), round(v["offline_fraction"] * total)


def _check_envs(cfg: dict[str, Any]) -> None:
    known = specs()

    def check(names: list[str], key: str) -> None:
        for name in names:
            if name not in known:
                raise ConfigError(f"config key {key}: unknown environment {name!r}; valid: {', '.join(known)}")

    check(cfg["envs"], "envs")
    check(list(cfg["env_options"]), "env_options")
    check(list(cfg["online"]["overrides"]), "online.overrides")
    check(list(cfg["offline"]["overrides"]), "offline.overrides")
    check(cfg["analysis"]["c4"]["envs"], "analysis.c4.envs")
    check([cfg["analysis"]["c5"]["env"]], "analysis.c5.env")
    check(cfg["analysis"]["reward_granularity"]["envs"], "analysis.reward_granularity.envs")
    for env, options in cfg["env_options"].items():
        modes = REWARD_MODES[known[env].suite]
        if "reward" in options and options["reward"] not in modes:
            raise ConfigError(
                f"config key env_options.{env}.reward: {options['reward']!r} is not a reward mode of {env}; "
                f"valid: {', '.join(modes)}"
            )
    c4 = cfg["analysis"]["c4"]
    if c4["enabled"] and c4["envs"] and "iql" not in cfg["finetune"]["methods"]:
        raise ConfigError(
            "config key analysis.c4.enabled: analysis C4 extends IQL fine-tuning, but finetune.methods has no iql; "
            "add iql to finetune.methods, or set analysis.c4.enabled to false"
        )
    if known[cfg["analysis"]["c5"]["env"]].suite != "kitchen":
        kitchens = [name for name, spec in known.items() if spec.suite == "kitchen"]
        raise ConfigError(
            "config key analysis.c5.env: analysis C5 compares Kitchen reward modes; set analysis.c5.env to "
            + " or ".join(kitchens)
        )


def _validation_cost_message(cfg: dict[str, Any], kind: str, env: str, steps: int) -> str:
    """Why ``validation.<kind>_fraction`` cannot pay for one checkpoint's episodes, and the fixes that work."""
    total, v = cfg["budget"]["total_steps"], cfg["validation"]
    fraction, episodes = v[f"{kind}_fraction"], v["episodes"]
    need = episodes * steps / total
    affordable_episodes = int(fraction * total) // steps
    affordable_steps = int(fraction * total) // episodes
    fixes = []
    if need <= 1:  # the schema caps a fraction at 1
        fixes.append(f"raise validation.{kind}_fraction to at least {math.ceil(need * 1e4) / 1e4:g}")
    if affordable_episodes >= 1:
        fixes.append(f"lower validation.episodes to {affordable_episodes}")
    if affordable_steps >= 1:
        fixes.append(f"set env_options.{env}.max_episode_steps to {affordable_steps} or less")
    fixes.append(f"raise budget.total_steps to at least {math.ceil(episodes * steps / fraction)}")
    return (
        f"config key validation.{kind}_fraction: {fraction} x {total} env steps cannot pay for {episodes} "
        f"episodes of {env} ({steps} steps each); " + ", or ".join(fixes)
    )


def _check_budget(cfg: dict[str, Any]) -> None:
    from replication.plan.settings import check_finetune_start, settings_of

    total = cfg["budget"]["total_steps"]
    online = cfg["online"]
    if online["learning_starts"] >= total:
        raise ConfigError(
            f"config key online.learning_starts: {online['learning_starts']} warm-up steps leave no training "
            f"in a budget of {total}; lower online.learning_starts to {total - 1} or less"
        )
    v = cfg["validation"]
    for env in cfg["envs"]:
        steps = episode_steps(cfg, env)
        for kind in ("online", "offline"):
            n = validation_checkpoints(v[f"{kind}_fraction"], total, v["episodes"], steps)
            if n < 1:
                raise ConfigError(_validation_cost_message(cfg, kind, env, steps))
    if cfg["finetune"]["dataset"] not in cfg["offline"]["datasets"] and cfg["finetune"]["methods"]:
        dataset, datasets = cfg["finetune"]["dataset"], cfg["offline"]["datasets"]
        raise ConfigError(
            f"config key finetune.dataset: {dataset!r} is not in offline.datasets {datasets}; fine-tuning starts "
            f"from an offline agent trained on it: add {dataset} to offline.datasets, or set finetune.dataset to "
            + " or ".join(datasets)
        )
    uses_newdata = "newdata" in cfg["offline"]["datasets"]
    newdata_pause = newdata_pause_step(cfg)
    if uses_newdata and (allowed := newdata_fractions(cfg)) is not None and newdata_pause not in pause_steps(cfg):
        fits = [f for f in allowed if all(_newdata_spent(cfg, e, round(f * total)) <= total for e in cfg["envs"])]
        raise ConfigError(
            f"config key newdata.pause: {cfg['newdata']['pause']} is not one of budget.pause_fractions "
            f"{cfg['budget']['pause_fractions']}, and T2 compares the newdata datasets with the buffer at the "
            "same pause; "
            + (f"set newdata.pause to {max(fits):g}" if fits else "add a pause fraction the budget affords it at")
        )
    for env in cfg["envs"]:
        online_val, offline_val = validation_costs(cfg, env)
        collected = _newdata_spent(cfg, env, newdata_pause)
        if uses_newdata and collected > total:
            raise ConfigError(
                f"config key newdata.pause: in {env}, the pause at {newdata_pause} env steps plus online validation "
                f"({online_val}), {cfg['newdata']['size']} newdata steps and offline validation ({offline_val}) "
                f"spend {collected} of budget.total_steps={total}; "
                + earlier_or_smaller(cfg, "newdata.pause", newdata_pause, collected - total)
            )
        for method in cfg["finetune"]["methods"]:  # the checks a fine-tuning job runs at its start
            check_finetune_start(cfg, env, settings_of(cfg, method))


def newdata_fractions(cfg: dict[str, Any]) -> list[float] | None:
    """The values ``newdata.pause`` may take: with the buffer datasets too, one of the pause fractions
    (T2 compares the two at one pause); else any (None)."""
    return list(cfg["budget"]["pause_fractions"]) if "buffer" in cfg["offline"]["datasets"] else None


def _newdata_spent(cfg: dict[str, Any], env: str, pause: int) -> int:
    """Env steps a newdata dataset of ``env`` collected at ``pause`` has spent: the pause, online
    validation, the newdata steps and offline validation (it must fit in budget.total_steps)."""
    return pause + sum(validation_costs(cfg, env)) + cfg["newdata"]["size"]


def earlier_or_smaller(cfg: dict[str, Any], pause_key: str, pause: int, excess: int, newdata: bool = True) -> str:
    """The fixes of a pause that leaves too little budget by ``excess`` env steps: an earlier pause
    (as the fraction ``pause_key`` takes; newdata's among the pause fractions where it must be) or,
    where newdata is spent, fewer newdata steps."""
    total, size = cfg["budget"]["total_steps"], cfg["newdata"]["size"]
    fixes = []
    allowed = newdata_fractions(cfg) if pause_key == "newdata.pause" else None
    if allowed is not None:
        if earlier := [f for f in allowed if 1 <= round(f * total) <= pause - excess]:
            fixes.append(f"set {pause_key} to {max(earlier):g}")
    elif pause - excess >= 1:
        fixes.append(f"set {pause_key} to {math.floor((pause - excess) / total * 1e4) / 1e4:g} or less")
    if newdata and size - excess >= 1:
        fixes.append(f"lower newdata.size to {size - excess}")
    return ", or ".join(fixes) or "raise budget.total_steps or lower the validation fractions"


def _check_claims(cfg: dict[str, Any]) -> None:
    from replication.plan import claims

    if problem := claims.check(cfg):
        raise ConfigError(problem)


def _check_seeds(cfg: dict[str, Any]) -> None:
    from replication.plan import claims, sequential

    if isinstance(cfg["seeds"], dict) and (problem := sequential.check(cfg["seeds"], claims.min_seeds())):
        raise ConfigError(problem)
    if "sequential" in cfg and isinstance(cfg["seeds"], dict):
        raise ConfigError("config key sequential: set by a sequential design's resolution, not by hand; remove it")


def validate(cfg: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the key and the fix if ``cfg`` cannot run."""
    schema = yaml.safe_load(Path(SCHEMA_FILE).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise _schema_error(errors[0])
    _check_seeds(cfg)
    _check_envs(cfg)
    _check_budget(cfg)
    _check_claims(cfg)
