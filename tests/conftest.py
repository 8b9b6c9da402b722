"""Shared fixtures: tiny configurations that run the real pipeline in seconds, and the synthetic
results of ``tests/synthetic_results.py`` (one per test module)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from replication.plan import config

if TYPE_CHECKING:
    import pandas as pd

    from replication.analysis.selection import Expected

# The modules that take longest, run first: under `--dist loadscope --no-loadscope-reorder` (the
# Makefile's) a worker takes whole modules in this order, so the longest do not start last and
# end the suite alone. test_workflow runs the workflow for real (kills, resumes, shards; ~6 min
# on 2 cores), test_slurm mostly waits on SLURM's status polling.
LONGEST_FIRST = ("test_workflow.py", "test_slurm.py", "test_sequential.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def tiny_config(envs: list[str], total_steps: int = 2000, **overrides: Any) -> dict[str, Any]:
    """A resolved config small enough for a test: short episodes, small nets, few evaluations."""
    base = {
        "name": "test",
        "envs": envs,
        "seeds": [0],
        "budget": {"total_steps": total_steps, "pause_fractions": [0.5, 1.0], "finetune_pause": 0.5},
        "online": {
            "learning_starts": 300,
            "batch_size": 32,
            "net_arch": [32, 32],
            "snapshot_interval": 250,
            "checkpoint_interval": 700,
        },
        "evaluation": {"interval": 500, "episodes": 2},
        "validation": {"episodes": 1, "online_fraction": 0.1, "offline_fraction": 0.05},
        "env_options": {env: {"max_episode_steps": 100} for env in envs},
        "newdata": {"size": 300, "pause": 0.5, "epsilon": [0.0]},
        "offline": {"datasets": ["buffer"]},
        "finetune": {"methods": [], "pex_initial_collection_steps": 20},
        "analysis": {"c4": {"enabled": False}, "c5": {"enabled": False}},
    }
    return config.resolve(config.deep_merge(base, overrides))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests share two cores: one torch thread each keeps them fast and repeatable."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def make_tiny_config():
    return tiny_config


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    """The synthetic results, as tidy rows."""
    from synthetic_results import make_results

    return make_results()


@pytest.fixture(scope="module")
def prepared(raw: pd.DataFrame) -> pd.DataFrame:
    """The synthetic results, prepared for analysis."""
    from replication.analysis import selection

    return selection.prepare(raw)


@pytest.fixture(scope="module")
def expected() -> Expected:
    """The variants the synthetic results' config expects."""
    from synthetic_results import config as synthetic_config

    from replication.analysis import selection

    return selection.Expected.from_config(synthetic_config())
