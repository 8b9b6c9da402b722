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


# --- every cross-key error whose message names a fix: the fix, applied, passes check-config

SUGGESTION = re.compile(
    r"(?:raise|lower|set) (?P<key>[\w.-]+) to (?:at least )?(?P<value>[\w.-]+)"
    r"|add (?P<item>[\w-]+) to (?P<list>[\w.]+)"
)


def check_config(cfg: dict[str, Any], tmp_path, capsys) -> tuple[int, str]:
    """``replication check-config`` on ``cfg`` written as a file: its status and its error line."""
    import yaml

    from replication import cli

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    status = cli.main(["check-config", "--configfile", str(path)])
    return status, capsys.readouterr().err.strip()


def applied(user: dict[str, Any], match: re.Match) -> dict[str, Any]:
    """``user`` with one suggested fix applied: a value set, or an item added to a list."""
    import yaml

    fixed = copy.deepcopy(user)
    key = match["key"] or match["list"]
    *parents, leaf = key.split(".")
    node = fixed
    for part in parents:
        node = node.setdefault(part, {})
    if match["item"]:
        node[leaf] = [*node.get(leaf, _default(key)), match["item"]]  # the list may be a default
    else:
        node[leaf] = yaml.safe_load(match["value"])
    return fixed


def _default(key: str) -> list:
    node: Any = config.read_yaml(config.PROJECT_ROOT / "config/defaults.yaml")
    for part in key.split("."):
        node = node[part]
    return list(node)


CROSS_KEY_ERRORS = [
    ({"online": {"learning_starts": 1000}}, "online.learning_starts", 1),
    ({"newdata": {"pause": 0.95}}, "newdata.pause", 1),  # no smaller newdata size makes room
    ({"newdata": {"pause": 0.5}}, "newdata.pause", 1),  # not a pause fraction: T2 compares it with the buffer
    ({"budget": {"pause_fractions": [0.3, 0.4, 1.0]}, "newdata": {"size": 150}}, "newdata.pause", 2),
    ({"budget": {"finetune_pause": 0.95}}, "budget.finetune_pause", 1),
    ({"finetune": {"dataset": "newdata"}}, "newdata.pause", 1),  # fine-tuning from newdata: its size (no earlier pause)
    (
        {
            "finetune": {"dataset": "newdata"},
            "offline": {"datasets": ["buffer"]},
            "newdata": {"pause": 0.3},
            "budget": {"pause_fractions": [0.3, 0.4, 1.0]},
        },
        "finetune.dataset",
        2,
    ),  # fmt: skip
    ({"finetune": {"pex_initial_collection_steps": 600}}, "finetune.pex_initial_collection_steps", 1),
    ({"finetune": {"wsrl": {"warmup_steps": 600}}}, "finetune.wsrl.warmup_steps", 1),
    ({"finetune": {"methods": ["pex"]}}, "analysis.c4.enabled", 2),
    ({"analysis": {"c5": {"env": "hopper"}}}, "analysis.c5.env", 1),
    ({"analysis": {"c4": {"finetune_steps": 10}}}, "analysis.c4.finetune_steps", 1),
]


@pytest.mark.parametrize(("change", "key", "n_fixes"), CROSS_KEY_ERRORS, ids=[c[1] for c in CROSS_KEY_ERRORS])
def test_each_fix_a_cross_key_error_suggests_passes_check_config(change, key, n_fixes, tmp_path, capsys) -> None:
    user = config.deep_merge(base(), change)
    status, error = check_config(user, tmp_path, capsys)
    assert status == 1 and f"error: config key {key}:" in error and "\n" not in error, error
    fixes = list(SUGGESTION.finditer(error.split(";", 1)[1]))
    assert len(fixes) == n_fixes, error
    for fix in fixes:
        status, after = check_config(applied(user, fix), tmp_path, capsys)
        assert status == 0, f"{fix[0]!r} does not fix {error!r}: {after}"


@pytest.mark.parametrize(
    ("change", "key"),
    [({"envs": ["hopper", "swimmer"]}, "envs"), ({"env_options": {"kitchen": {"reward": "dense"}}}, "env_options")],
)
def test_an_unknown_name_error_lists_names_that_pass_check_config(change, key, tmp_path, capsys) -> None:
    user = config.deep_merge(base(), change)
    status, error = check_config(user, tmp_path, capsys)
    assert status == 1 and f"config key {key}" in error, error
    valid = error.split("valid: ", 1)[1].split(", ")
    fixed = copy.deepcopy(user)
    if key == "envs":
        fixed["envs"] = ["hopper", valid[1]]
    else:
        fixed["env_options"]["kitchen"]["reward"] = valid[0]
    assert check_config(fixed, tmp_path, capsys)[0] == 0
