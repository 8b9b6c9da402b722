"""The pinned environment: one lock used everywhere, and consistent with what is installed."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = {  # the top-level pins the lock was built from (pyproject.toml)
    "torch": "2.13.0",
    "numpy": "2.4.6",
    "gymnasium": "1.4.0",
    "mujoco": "3.3.0",
    "metaworld": "3.1.1",
    "gymnasium-robotics": "1.4.2",
    "stable-baselines3": "2.9.2",
    "d3rlpy": "2.8.0",
    "snakemake": "9.27.1",
    "seaborn": "0.13.2",
    "pytest": "9.2.0",
}


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"requirements.lock line is not an exact pin: {line!r}"
        pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def test_lock_pins_the_top_level_versions():
    pins = lock()
    for name, version in TOP_LEVEL.items():
        assert pins.get(name) == version, f"{name}: lock has {pins.get(name)}, pyproject.toml pins {version}"


def test_lock_matches_the_installed_environment():
    """Every locked package is installed at exactly its locked version (the lock is complete and true)."""
    for name, version in lock().items():
        installed = importlib.metadata.version(name).split("+")[0]
        assert installed == version, f"{name}: installed {installed}, locked {version}"


def test_every_installed_dependency_is_locked():
    """The lock is transitive: each requirement of the project and of locked packages is in it."""
    pins = lock()
    seen, todo = set(), ["replication"]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        for req in dist.requires or []:
            if ";" in req and "extra ==" in req:
                continue
            name = re.match(r"[A-Za-z0-9_.\-]+", req)[0].lower().replace("_", "-")
            if ";" in req:  # environment markers: keep those that apply here
                from packaging.requirements import Requirement

                if not Requirement(req).marker.evaluate():
                    continue
            if name not in seen:
                seen.add(name)
                assert name in pins, f"{name} (required by {dist.metadata['Name']}) is not in requirements.lock"
                todo.append(name)


def test_environment_yml_installs_exactly_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    locked = [f"{name}=={version}" for name, version in lock().items()]
    assert sorted(p.lower().replace("_", "-") for p in pip) == sorted(locked), (
        "environment.yml differs from requirements.lock; regenerate it: .venv/bin/python scripts/write-environment.py"
    )


def test_environment_yml_is_the_generated_file():
    import runpy

    render = runpy.run_path(str(ROOT / "scripts" / "write-environment.py"))["render"]
    assert (ROOT / "environment.yml").read_text() == render(), "run .venv/bin/python scripts/write-environment.py"
