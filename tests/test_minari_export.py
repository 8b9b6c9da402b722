"""Minari export: a dataset written by the package, loaded back with minari, transition by transition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from replication.agents.datasets import collect_transitions, save_dataset, sha256_of

minari = pytest.importorskip("minari")


def make_dataset(tmp_path: Path, env: str, size: int, max_steps: int) -> Path:
    """A real dataset: random actions on the study env, saved by the package's own writer."""
    options = {"max_episode_steps": max_steps}
    rng = np.random.default_rng(0)
    from replication.agents.envs import env_spaces

    space = env_spaces(env, **options)[1]
    transitions = collect_transitions(env, 0, lambda obs: rng.uniform(space.low, space.high), size, 0.0, options)
    path = tmp_path / f"{env}.h5"
    save_dataset(
        transitions, path, env=env, seed=0, pause=size, strategy="buffer", collector="random", env_options=options
    )
    return path


def d3rlpy_transitions(path: Path) -> list[tuple]:
    """Every transition d3rlpy trains on, in order: (obs, action, reward, next obs, terminal)."""
    import d3rlpy

    from replication.agents.datasets import load_dataset

    dataset, _ = load_dataset(path)
    picker = d3rlpy.dataset.BasicTransitionPicker()
    out = []
    for episode in dataset.episodes:
        for i in range(episode.transition_count):
            t = picker(episode, i)
            out.append((t.observation, t.action, float(t.reward[0]), t.next_observation, bool(t.terminal)))
    return out


def minari_transitions(dataset) -> list[tuple]:
    out = []
    for ep in dataset.iterate_episodes():
        for i in range(len(ep.actions)):
            out.append(
                (
                    ep.observations[i],
                    ep.actions[i],
                    float(ep.rewards[i]),
                    ep.observations[i + 1],
                    bool(ep.terminations[i]),
                )
            )
    return out


def test_hopper_round_trip_keeps_every_transition_and_episode_end(tmp_path):
    source = make_dataset(tmp_path, "hopper", 300, 40)
    meta = json.loads(Path(f"{source}.json").read_text())
    assert meta["terminal_episodes"] > 0 and meta["timeout_episodes"] > 0  # both kinds of episode end
    root = tmp_path / "minari"
    cmd = [sys.executable, "-m", "replication", "export-minari", str(source), "--out", str(root)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    data = root / "replication" / "hopper-seed0-hopper-v0" / "data"
    dataset = minari.MinariDataset(data)  # loaded back from a local path by Minari itself

    expected, got = d3rlpy_transitions(source), minari_transitions(dataset)
    assert len(got) == len(expected) == meta["transitions"] - meta["timeout_episodes"]
    for (o, a, r, n, d), (mo, ma, mr, mn, md) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(mo, o)
        np.testing.assert_array_equal(ma, a)
        assert mr == r and md == d
        np.testing.assert_array_equal(mn, n)
    episodes = list(dataset.iterate_episodes())
    assert len(episodes) == meta["episodes"]
    assert sum(bool(ep.terminations[-1]) for ep in episodes) == meta["terminal_episodes"]
    assert sum(bool(ep.truncations[-1]) for ep in episodes) == meta["timeout_episodes"]
    assert all(not ep.terminations[:-1].any() and not ep.truncations[:-1].any() for ep in episodes)

    spec = dataset.spec
    assert spec.env_spec is not None and spec.env_spec.id == "Hopper-v5" and spec.env_spec.max_episode_steps == 40
    package = dataset.storage.metadata["replication"]
    assert package["source_sha256"] == sha256_of(source) == meta["sha256"]
    assert (package["env"], package["seed"], package["pause"], package["collector"]) == ("hopper", 0, 300, "random")
    assert package["truncated_last_steps_left_out"] == meta["timeout_episodes"]
    env = dataset.recover_environment()  # the registered env, as the spec says
    assert env.spec.id == "Hopper-v5" and env.observation_space.shape == dataset.observation_space.shape
    env.close()

    again = subprocess.run(cmd, capture_output=True, text=True)  # Minari never overwrites a dataset
    assert again.returncode != 0 and "already exists" in again.stderr


def test_wrapped_env_is_exported_without_env_spec_and_says_why(tmp_path):
    from replication.agents.minari_export import export_minari

    source = make_dataset(tmp_path, "sawyer-push", 60, 25)
    data = export_minari(source, tmp_path / "minari", "replication/push-v0")
    dataset = minari.MinariDataset(data)
    assert dataset.spec.env_spec is None
    assert "make_env('sawyer-push'" in dataset.storage.metadata["replication"]["env_spec_missing_because"]
    assert len(minari_transitions(dataset)) == len(d3rlpy_transitions(source))


def test_a_tampered_source_is_refused(tmp_path):
    from replication.agents.datasets import DatasetError
    from replication.agents.minari_export import export_minari

    source = make_dataset(tmp_path, "hopper", 50, 20)
    source.write_bytes(source.read_bytes() + b"x")
    with pytest.raises(DatasetError, match="does not match"):
        export_minari(source, tmp_path / "minari")


def readme_example() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    after = text.split("<!-- minari-example: run by tests/test_minari_export.py -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_readme_example_trains_d3rlpy_on_exactly_the_source_transitions(tmp_path, monkeypatch):
    """The README's section as written, on an export at its own paths (exports/, the hopper buffer id)."""
    source = make_dataset(tmp_path, "hopper", 300, 40)
    from replication.agents.minari_export import export_minari

    monkeypatch.chdir(tmp_path)
    export_minari(source, "exports", "replication/hopper-seed0-dataset_buffer-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", "unset by the example")
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    expected = d3rlpy_transitions(source)
    import d3rlpy

    picker = d3rlpy.dataset.BasicTransitionPicker()
    got = [picker(ep, i) for ep in namespace["dataset"].episodes for i in range(ep.transition_count)]
    assert len(got) == len(expected) == len(namespace["qlearning"]["rewards"])
    for (o, a, r, n, d), t in zip(expected, got, strict=True):
        np.testing.assert_array_equal(t.observation, o)
        np.testing.assert_array_equal(t.action, a)
        np.testing.assert_array_equal(t.next_observation, n)
        assert float(t.reward[0]) == r and bool(t.terminal) == d
    q = namespace["qlearning"]
    np.testing.assert_array_equal(q["observations"], np.stack([o for o, *_ in expected]))
    np.testing.assert_array_equal(q["next_observations"], np.stack([n for *_, n, _ in expected]))
    np.testing.assert_array_equal(q["terminals"], [d for *_, d in expected])
    assert namespace["iql"].grad_step == 200  # the learner trained
