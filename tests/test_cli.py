"""The ``replication`` command line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from replication import cli
from replication.envspecs import specs
from replication.io import PROJECT_ROOT

NAMES = list(specs())
SUBSTITUTES = {"sawyer-lift": "pick-place-v3", "sawyer-drape": "shelf-place-v3"}


def rows_by_name(lines: list[str]) -> dict[str, str]:
    return {line.split()[0]: line for line in lines if line.split() and line.split()[0] in NAMES}


def test_envs_prints_the_twelve_as_an_aligned_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["envs"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "implementation", "suite"]
    assert set(lines[1]) <= {"-", " "}
    rows = rows_by_name(lines)
    assert list(rows) == NAMES
    assert len(lines) == 2 + len(NAMES)
    # Columns are aligned: every row's implementation id starts where the header's column does.
    column = lines[0].index("implementation")
    for name, row in rows.items():
        assert row[column:].startswith(specs()[name].id), row
    # Substitutes are marked, with their reason; the others are not.
    for name, row in rows.items():
        if name in SUBSTITUTES:
            assert row.split()[-1] != "no"
            assert "yes: (choice) Meta-World v3 has no " in row
            assert SUBSTITUTES[name] in row
        else:
            assert row.rstrip().endswith("  no"), row
    assert "Humanoid-v5" in rows["humanoid"] and "1000" in rows["humanoid"]
    assert "280" in rows["kitchen"] and "binary" in rows["kitchen-sparse"]


def test_envs_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["envs", "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| name | implementation |")
    assert lines[1].replace("|", "").replace("-", "") == ""
    assert len(lines) == 2 + len(NAMES)
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[2:]}
    assert list(cells) == NAMES
    assert all(len(row) == len(cli.ENV_COLUMNS) for row in cells.values())
    assert cells["sawyer-lift"][-1].startswith("yes: ")
    assert cells["sawyer-drape"][-1].startswith("yes: ")
    assert cells["sawyer-push"][-1] == "no"
    assert cells["kitchen"][1:6] == ["FrankaKitchen-v1", "kitchen", "subtask", "subtasks", "280"]


def test_markdown_escapes_pipes() -> None:
    table = cli.format_markdown(("a", "b"), [("x|y", "z")])
    assert table.splitlines()[2] == "| x\\|y | z |"


def test_usage_errors_exit_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["nonsense"], ["envs", "--format", "html"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_subcommands_are_registered_in_one_place(capsys: pytest.CaptureFixture[str]) -> None:
    assert "envs" in cli.COMMANDS
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "envs" in capsys.readouterr().out


def test_a_value_error_is_reported_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args) -> int:
        raise ValueError("config key budget.total_steps: nope")

    monkeypatch.setitem(cli.COMMANDS, "broken", cli.Command("always fails", cli._no_arguments, broken))
    assert cli.main(["broken"]) == 1
    assert "replication broken: error: config key budget.total_steps: nope" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nope"):
        cli.main(["--debug", "broken"])


def test_python_dash_m_replication_envs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "replication", "envs"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert list(rows_by_name(result.stdout.splitlines())) == NAMES


def test_batch_runs_commands_in_order_and_stops_at_the_first_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    def fake(name: str, status: int) -> cli.Command:
        def add(parser) -> None:
            parser.add_argument("--out")

        return cli.Command(name, add, lambda args: ran.append(f"{name} {args.out}") or status)

    monkeypatch.setattr(cli, "TRAINING_COMMANDS", ("online", "offline"))
    monkeypatch.setitem(cli.COMMANDS, "online", fake("online", 0))
    monkeypatch.setitem(cli.COMMANDS, "offline", fake("offline", 3))
    assert cli.main(["batch", "online --out 'a b'", "offline --out c", "online --out d"]) == 3
    assert ran == ["online a b", "offline c"]  # quoting kept; nothing after the failure
    assert "batch 2/3: offline done" in capsys.readouterr().out

    assert cli.main(["batch", "envs"]) == 1  # only training commands
    assert "batch command 1 is not one of online, newdata, offline, finetune, control" in capsys.readouterr().err


def test_no_module_but_the_command_line_parses_arguments() -> None:
    for path in (PROJECT_ROOT / "replication").rglob("*.py"):
        if path.name != "cli.py":
            assert "argparse" not in path.read_text(), f"{path}: commands belong to replication.cli"


def test_option_lists_match_their_modules() -> None:
    from replication import gpucheck
    from replication.analysis import tables
    from replication.plan import vocabulary

    assert tuple(tables.BUILDERS) == vocabulary.TABLES  # one builder per table
    assert cli.LEARNERS == gpucheck.LEARNERS


def test_analysis_commands_keep_their_options(capsys: pytest.CaptureFixture[str]) -> None:
    expected = {
        "tables": ["--results", "--out", "--config", "--metric", "--tables"],
        "statistics": ["--results", "--out", "--config", "--pause", "--reps", "--seed"],
        "figures": ["--results", "--out", "--config", "--figures", "--statistics", "--reps", "--seed"],
        "scorecard": ["--results", "--out", "--config", "--claims", "--reps", "--seed"],
        "reference": ["--config", "--run", "--reference", "--diff"],
        "gpu-check": ["--device", "--env", "--steps", "--cpu-steps", "--warmup", "--check-steps", "--learners"],
    }
    for name, options in expected.items():
        with pytest.raises(SystemExit) as info:
            cli.main([name, "--help"])
        assert info.value.code == 0
        shown = capsys.readouterr().out
        assert shown.startswith(f"usage: replication {name} ")
        assert all(option in shown for option in options), name


def test_version_prints_the_package_metadata_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"replication {version('replication')}"


@pytest.mark.parametrize(
    "user", [{"envs": ["hopper"], "seeds": [0]}, {"envs": ["hopper", "kitchen"], "batch_jobs": True}]
)
def test_check_config_prints_the_grid_with_the_job_counts_of_estimate(user: dict) -> None:
    from replication.plan import config, estimate

    cfg = config.resolve(user)
    grid = cli.format_grid(cfg)
    stages, _ = estimate.estimate(cfg)
    for rule, cost in stages.items():
        assert re.search(rf"^{rule}\s+{cost.jobs}\s+\d+$", grid, re.M), (rule, cost.jobs, grid)
    assert f"environments: {', '.join(user['envs'])}" in grid
    assert ("kitchen+reward=binary" in grid) == ("kitchen" in user["envs"])
    n_envs, n_seeds = len(user["envs"]), len(cfg["seeds"])
    size = f"{n_envs} environment{'s' * (n_envs > 1)} x {n_seeds} seed{'s' * (n_seeds > 1)}"
    assert f"({size}" in grid and size in estimate.format_estimate(cfg), grid
