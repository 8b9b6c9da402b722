"""Settings resolved once (replication.plan.settings): built where the config is read, passed down to
the agents, which read no config dict; and one check per constraint, run by the config check and
again at a fine-tuning job's start with the same message."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest

from replication.agents import finetune as ft
from replication.io import PROJECT_ROOT
from replication.plan import config
from replication.plan.ledger import BudgetError
from replication.plan.schema import ConfigError
from replication.plan.settings import (
    METHOD_SETTINGS,
    CalQLSettings,
    FinetuneBudgetError,
    PEXSettings,
    WSRLSettings,
    finetune_budget,
    finetune_settings,
    learner_settings,
    settings_of,
)
from replication.plan.variants import finetune_ledger
from replication.plan.vocabulary import FINETUNE_METHODS


def run_config(**changes: Any) -> dict[str, Any]:
    """config/config.yaml on hopper, with ``changes`` merged on top (not resolved)."""
    user = config.read_yaml(PROJECT_ROOT / "config" / "config.yaml")
    user["envs"], user["seeds"] = ["hopper"], [0]
    return config.deep_merge(user, changes)


def test_every_method_has_its_settings_and_its_agent() -> None:
    assert set(METHOD_SETTINGS) == set(FINETUNE_METHODS) == set(ft.METHODS)
    assert all(cls.method == name for name, cls in METHOD_SETTINGS.items())


def test_settings_are_read_once_from_the_config_typed() -> None:
    cfg = config.load()  # the paper profile
    pex = finetune_settings(cfg, "kitchen-sparse", "pex")
    assert pex.own == PEXSettings(beta=10.0, offline_fraction=0.5, initial_collection_steps=5000, eval_epsilon=0.1)
    assert pex.own.warmup == 5000 and pex.source.algo == "iql" and pex.cache_size == pex.source.episode_steps + 1
    assert pex.source.params == config.offline_params(cfg, "kitchen-sparse", "iql")
    calql = finetune_settings(cfg, "kitchen-sparse", "calql")
    assert calql.own == CalQLSettings(0.5) and calql.source.failure_reward == 0.0  # sparse binary reward
    assert learner_settings(cfg, "hopper", "calql").failure_reward is None
    wsrl = settings_of(cfg, "wsrl")
    assert isinstance(wsrl, WSRLSettings) and wsrl.warmup == 5000 and wsrl.source == "calql"
    with pytest.raises(TypeError, match="not PEXSettings"):
        calql.own_as(PEXSettings)
    with pytest.raises(ValueError, match="unknown offline algorithm 'bcq'"):
        learner_settings(cfg, "hopper", "bcq")


def test_agents_read_no_config_dict() -> None:
    """No function of the fine-tuning methods, of the learners' toolkit or of online SAC takes the config:
    only the fine-tuning job's entry point (``Finetune.__init__``) does, and it resolves the settings there
    (online SAC's in ``OnlineRun.configure``, from the job frame's config)."""
    folder = PROJECT_ROOT / "replication" / "agents"
    files = [*sorted((folder / "finetune").glob("*.py")), folder / "learners.py", folder / "online.py"]
    takers = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
                if "cfg" in names:
                    takers.append(f"{Path(path).name}:{node.name}")
    assert takers == ["loop.py:__init__"], takers


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("finetune.pex_initial_collection_steps", {"pex_initial_collection_steps": 280}),
        ("finetune.wsrl.warmup_steps", {"wsrl": {"warmup_steps": 280}}),
    ],
)
def test_a_warmup_check_is_one_check_at_config_time_and_at_job_start(key, change, tmp_path) -> None:
    """config/config.yaml leaves 280 fine-tuning env steps: a warm-up of 280 is refused by the config check
    and by the job's start, with one message naming the key and the value that fixes it."""
    user = run_config(finetune=change)
    with pytest.raises(ConfigError) as at_config:
        config.resolve(user)
    message = str(at_config.value)
    assert message.startswith(f"config key {key}: 280 env steps without updates")
    assert "fine-tuning budget of hopper (280 env steps)" in message
    assert message.endswith(f"lower {key} to 279 or less")
    cfg = config.resolve(config.deep_merge(user, {"finetune": {"methods": ["iql"]}}))  # the others not checked
    cfg = config.deep_merge(cfg, {"finetune": {"methods": ["iql", "pex", "wsrl"]}})
    assert finetune_budget(cfg, "hopper") == finetune_ledger(cfg, "hopper").remaining == 280
    method = key.split(".")[1].split("_")[0]
    with pytest.raises(ConfigError) as at_start:
        ft.Finetune(cfg, "hopper", 0, method, tmp_path / "offline", tmp_path / "data.h5", tmp_path / "out")
    assert str(at_start.value) == message


def test_a_budget_check_is_one_check_at_config_time_and_at_job_start(tmp_path) -> None:
    user = run_config(budget={"finetune_pause": 0.75})  # 600 + offline validation 200 = T
    with pytest.raises(FinetuneBudgetError) as at_config:
        config.resolve(user)
    message = str(at_config.value)
    assert "online_training=600, offline_validation=200" in message and "leaving no fine-tuning budget" in message
    assert message.startswith("config key budget.finetune_pause:") and "set budget.finetune_pause to 0.7237" in message
    cfg = copy.deepcopy(config.resolve(run_config()))
    cfg["budget"]["finetune_pause"] = 0.75
    with pytest.raises(BudgetError) as at_start:  # a config error and a budget error alike
        ft.Finetune(cfg, "hopper", 0, "iql", tmp_path / "offline", tmp_path / "data.h5", tmp_path / "out")
    assert str(at_start.value) == message and isinstance(at_start.value, ConfigError)
    assert not (tmp_path / "out").exists()
