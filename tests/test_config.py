"""Run configuration: the defaults resolve, and bad configurations are refused by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replication.envspecs import specs
from replication.plan import config
from replication.plan.schema import ConfigError


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    return config.resolve()


def test_the_defaults_resolve(defaults: dict[str, Any]) -> None:
    assert defaults["name"] == "paper"
    assert defaults["envs"] == list(specs())
    assert defaults["budget"]["total_steps"] == 1_000_000
    assert config.pause_steps(defaults) == [200_000, 400_000, 600_000, 800_000, 1_000_000]
    assert config.finetune_pause_step(defaults) == 800_000


def test_a_user_file_merges_key_by_key(defaults: dict[str, Any]) -> None:
    cfg = config.resolve({"budget": {"total_steps": 2_000_000}, "offline": {"iql": {"expectile": 0.9}}, "seeds": [7]})
    assert cfg["budget"]["total_steps"] == 2_000_000
    assert cfg["budget"]["pause_fractions"] == defaults["budget"]["pause_fractions"]  # kept
    assert cfg["offline"]["iql"]["expectile"] == 0.9
    assert cfg["offline"]["iql"]["weight_temp"] == defaults["offline"]["iql"]["weight_temp"]
    assert cfg["seeds"] == [7]  # lists replace lists
    assert defaults["offline"]["iql"]["expectile"] == 0.7  # the defaults were not modified


def test_offline_params_apply_per_env_overrides(defaults: dict[str, Any]) -> None:
    assert config.offline_params(defaults, "kitchen", "iql")["weight_temp"] == 0.5
    assert config.offline_params(defaults, "kitchen-sparse", "iql")["weight_temp"] == 0.5
    assert config.offline_params(defaults, "hopper", "iql")["weight_temp"] == 3.0
    kitchen_iql = config.offline_params(defaults, "kitchen", "iql")
    assert kitchen_iql["expectile"] == defaults["offline"]["iql"]["expectile"]  # the rest is kept
    assert config.offline_params(defaults, "kitchen", "cql") == defaults["offline"]["cql"]


def test_online_params_and_env_options() -> None:
    cfg = config.resolve(
        {
            "online": {"overrides": {"humanoid": {"learning_starts": 5000}}},
            "env_options": {"kitchen": {"reward": "accumulated", "max_episode_steps": 300}},
        }
    )
    assert config.online_params(cfg, "humanoid")["learning_starts"] == 5000
    assert config.online_params(cfg, "hopper")["learning_starts"] == 10_000
    assert "overrides" not in config.online_params(cfg, "hopper")
    assert config.env_options(cfg, "kitchen") == {"reward": "accumulated", "max_episode_steps": 300}
    assert config.env_options(cfg, "hopper") == {}


BAD_CONFIGS = [
    pytest.param({"colour": "blue"}, ["colour"], id="unknown top-level key"),
    pytest.param({"online": {"lr": 1e-3}}, ["online", "lr", "learning_rate"], id="unknown nested key"),
    pytest.param({"offline": {"iql": {"temperature": 1.0}}}, ["offline.iql", "temperature"], id="unknown deep key"),
    pytest.param({"budget": {"total_steps": "a million"}}, ["budget.total_steps"], id="wrong type"),
    pytest.param({"seeds": 3}, ["seeds"], id="wrong type (scalar for list)"),
    pytest.param({"online": {"gamma": 1.5}}, ["online.gamma"], id="out of range"),
    pytest.param({"envs": ["hopper", "pong"]}, ["envs", "pong", "sawyer-drape"], id="unknown environment"),
    pytest.param({"env_options": {"pong": {"reward": "dense"}}}, ["env_options", "pong"], id="unknown env options"),
    pytest.param(
        {"env_options": {"hopper": {"reward": "binary"}}}, ["env_options.hopper.reward", "dense"], id="bad reward mode"
    ),
    pytest.param({"env_options": {"hopper": {"speed": 2}}}, ["env_options.hopper", "speed"], id="bad env option"),
    pytest.param({"offline": {"algos": ["iql", "bcq"]}}, ["offline.algos", "bcq"], id="unknown algorithm"),
    pytest.param({"analysis": {"c5": {"env": "hopper"}}}, ["analysis.c5.env"], id="c5 on a non-Kitchen env"),
    pytest.param({"newdata": {"pause": 0.8}}, ["newdata.pause"], id="pause + validation + newdata beyond T"),
    pytest.param({"validation": {"online_fraction": 0.001}}, ["validation.online_fraction"], id="validation too small"),
    pytest.param(
        {"budget": {"total_steps": 20_000}, "online": {"learning_starts": 20_000}},
        ["online.learning_starts"],
        id="warm-up fills the budget",
    ),
    pytest.param(
        {"finetune": {"dataset": "newdata"}, "offline": {"datasets": ["buffer"]}},
        ["finetune.dataset"],
        id="fine-tuning from a dataset that is not made",
    ),
]


@pytest.mark.parametrize(("user", "named"), BAD_CONFIGS)
def test_bad_configs_are_refused_naming_the_key(user: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        config.resolve(user)
    message = str(info.value)
    assert message.startswith("config key ")
    for word in named:
        assert word in message


def test_validation_that_cannot_pay_one_episode_says_how_much_it_needs() -> None:
    # 0.002 x 1M = 2000 env steps cannot pay 3 validation episodes of 1000 steps.
    with pytest.raises(ConfigError, match="validation.offline_fraction") as info:
        config.resolve({"validation": {"offline_fraction": 0.002}})
    assert "at least 0.003" in str(info.value)
    # Shorter episodes fit: the same fraction with 280-step Kitchen episodes only.
    config.resolve({"validation": {"offline_fraction": 0.002}, "envs": ["kitchen"]})


def test_a_budget_that_fits_without_newdata() -> None:
    # The same late pause is fine when no newdata dataset is made and fine-tuning starts from the buffer.
    config.resolve({"newdata": {"pause": 0.8}, "offline": {"datasets": ["buffer"]}})


def test_config_errors_are_value_errors() -> None:
    assert issubclass(ConfigError, ValueError)


def test_a_config_file_must_hold_a_mapping(tmp_path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        config.load(path)
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\nseeds: [0, 1]\n")
    cfg = config.load(good)
    assert (cfg["name"], cfg["seeds"]) == ("mine", [0, 1])


def test_c4_extends_iql_fine_tuning_to_its_total_of_fine_tuning_steps(defaults: dict[str, Any]) -> None:
    """Protocol: "IQL fine-tuning extended to 1,000,000 fine-tuning steps": the budget's 190K, then 810K more."""
    from replication.plan import workflow as wf
    from replication.plan.variants import finetune_ledger

    budget = finetune_ledger(defaults, "hopper").remaining
    assert budget == 190_000 and defaults["analysis"]["c4"]["finetune_steps"] == 1_000_000
    assert wf.extended_steps(defaults, wf.Job("finetune", "hopper", 0, "iql")) == 1_000_000 - budget
    assert wf.extended_steps(defaults, wf.Job("finetune", "hopper", 0, "pex")) == 0
    assert wf.extended_steps(defaults, wf.Job("finetune", "kitchen", 0, "iql")) == 0  # not a C4 env
    short = config.resolve({"analysis": {"c4": {"finetune_steps": 100_000}}})
    with pytest.raises(ValueError, match=r"analysis.c4.finetune_steps.*190000"):
        wf.extended_steps(short, wf.Job("finetune", "hopper", 0, "iql"))


def test_pex_and_cql_reference_settings_are_the_paper_profile(defaults: dict[str, Any]) -> None:
    ft = defaults["finetune"]
    assert ft["pex_initial_collection_steps"] == 5000 and ft["pex_eval_epsilon"] == 0.1
    assert ft["pex_beta"] == 10 and ft["calql_mixing"] == 0.5  # PEX's inv_temperature, Cal-QL's --mixing_ratio
    assert defaults["offline"]["calql"]["max_q_backup"] is True and defaults["offline"]["cql"]["max_q_backup"] is True
    with pytest.raises(ConfigError, match="pex_eval_epsilon"):
        config.resolve({"finetune": {"pex_eval_epsilon": 2}})


def test_one_loader_reads_a_file_or_the_paper_profile(tmp_path: Path) -> None:
    """config.load is the package's only loader: no path is the paper profile, a path its file on top."""
    assert config.load() == config.resolve()
    path = tmp_path / "run.yaml"
    path.write_text("name: one\nseeds: [3]\n")
    assert config.load(path) == config.resolve(config.read_yaml(path))
    assert config.load(path, {"seeds": [4]})["seeds"] == [4]
