"""Every fix a cross-key config error suggests, applied, gives a valid config."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from replication.plan import config
from replication.plan.schema import ConfigError

FIX = re.compile(r"(raise|lower|set) ([\w.-]+) to (?:at least )?([\d.]+)")


def base() -> dict[str, Any]:
    user = config.read_yaml(config.PROJECT_ROOT / "config/config.yaml")
    user["envs"], user["seeds"] = ["hopper"], [0]
    return user


def apply(user: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    fixed = copy.deepcopy(user)
    *parents, leaf = key.split(".")
    node = fixed
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = float(value) if "." in value else int(value)
    return fixed


def suggested_fixes(user: dict[str, Any], key: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as error:
        config.resolve(user)
    message = str(error.value)
    assert message.startswith(f"config key {key}:"), message
    fixes = [(k, v) for _, k, v in FIX.findall(message.split(";", 1)[1])]
    assert fixes, message
    return fixes


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        ({"validation": {"episodes": 20}}, "validation.online_fraction", {"validation.episodes", "budget.total_steps"}),
        (
            {"validation": {"online_fraction": 0.01}},
            "validation.online_fraction",
            {"validation.online_fraction", "env_options.hopper.max_episode_steps"},
        ),
        ({"validation": {"offline_fraction": 0.01}}, "validation.offline_fraction", {"validation.offline_fraction"}),
    ],
)
def test_each_suggested_fix_of_a_validation_cost_error_gives_a_valid_config(
    change: dict[str, Any], key: str, expected: set[str]
) -> None:
    user = config.deep_merge(base(), change)
    fixes = suggested_fixes(user, key)
    assert expected <= {k for k, _ in fixes}, fixes
    for fix_key, value in fixes:
        config.resolve(apply(user, fix_key, value))  # raises if the fix does not work


def test_user_mistakes_are_one_line_errors_naming_the_file_and_the_fix(tmp_path) -> None:
    malformed = tmp_path / "bad.yaml"
    malformed.write_text("envs: [hopper\nseeds: [0]\n")
    with pytest.raises(ValueError, match=r"bad.yaml: line \d+, column \d+: malformed YAML .*fix the file's syntax"):
        config.load(malformed)
    with pytest.raises(ValueError, match="no such config file.*--configfile"):
        config.load(tmp_path / "missing.yaml")


def test_an_environment_without_a_measured_throughput_is_estimated_with_a_labelled_guess(monkeypatch) -> None:
    from replication.plan import estimate

    monkeypatch.delitem(estimate.ENV_STEPS_PER_SECOND, "hopper")  # as an environment newly added to envs.yaml
    text = estimate.format_estimate(config.resolve(base()))
    assert "environment steps/s of hopper: a guess" in text
