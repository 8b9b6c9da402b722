"""Offline datasets: episode structure, hashed files, and the d3rlpy conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from replication.agents.datasets import (
    DatasetError,
    Transitions,
    load_dataset,
    load_transitions,
    metadata_path,
    read_metadata,
    save_dataset,
    verify_dataset,
)

FIELDS = ("observations", "actions", "rewards", "terminals", "timeouts")
# episode lengths and how each ends: "t" terminal (the env terminated), "o" timeout (truncated or cut)
EPISODES = [(5, "t"), (7, "o"), (4, "t"), (3, "o")]


def make_transitions(episodes=EPISODES, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> Transitions:
    n = sum(length for length, _ in episodes)
    rng = np.random.default_rng(seed)
    terminals, timeouts = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    end = 0
    for length, kind in episodes:
        end += length
        (terminals if kind == "t" else timeouts)[end - 1] = True
    return Transitions(
        observations=rng.normal(size=(n, obs_dim)),
        actions=rng.uniform(-1, 1, size=(n, act_dim)),
        rewards=rng.normal(size=n),
        terminals=terminals,
        timeouts=timeouts,
    )


# --- validation --------------------------------------------------------------------------------


def test_a_well_formed_dataset_validates() -> None:
    t = make_transitions()
    t.validate()
    assert len(t) == 19
    assert t.episode_bounds() == [(0, 5), (5, 12), (12, 16), (16, 19)]
    np.testing.assert_allclose(t.episode_returns(), [t.rewards[a:b].sum() for a, b in t.episode_bounds()], rtol=1e-6)
    assert t.observations.dtype == np.float32 and t.actions.dtype == np.float32


def test_refuses_a_step_both_terminal_and_timeout() -> None:
    t = make_transitions()
    t.timeouts[4] = True  # step 4 is already terminal
    with pytest.raises(DatasetError, match="step 4 is marked both terminal and timeout"):
        t.validate()


def test_refuses_trailing_rows_after_the_last_episode_end() -> None:
    t = make_transitions()
    t.timeouts[-1] = False  # the last episode no longer ends: its 3 steps would be dropped silently by d3rlpy
    with pytest.raises(DatasetError, match="3 trailing steps"):
        t.validate()
    with pytest.raises(DatasetError, match="trailing"):
        t.to_mdp_dataset()


@pytest.mark.parametrize("field", ["observations", "rewards"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_refuses_nan_and_inf(field: str, bad: float) -> None:
    t = make_transitions()
    getattr(t, field).reshape(-1)[7] = bad
    with pytest.raises(DatasetError, match="NaN or inf"):
        t.validate()


def test_refuses_arrays_of_different_lengths_and_empty_data() -> None:
    t = make_transitions()
    t.actions = t.actions[:-1]
    with pytest.raises(DatasetError, match="actions has 18 rows, rewards has 19"):
        t.validate()
    empty = Transitions(np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros(0))
    with pytest.raises(DatasetError, match="empty"):
        empty.validate()


def test_summary() -> None:
    summary = make_transitions().summary()
    assert summary["transitions"] == 19
    assert summary["episodes"] == 4
    assert (summary["terminal_episodes"], summary["timeout_episodes"]) == (2, 2)
    assert (summary["observation_dim"], summary["action_dim"]) == (3, 2)


# --- files -------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Transitions, Path, dict]:
    t = make_transitions()
    path = tmp_path / "data" / "buffer.h5"
    meta = save_dataset(t, path, env="hopper", seed=3, pause_step=200000, strategy="buffer")
    return t, path, meta


def test_save_then_load_gives_the_same_arrays(saved: tuple[Transitions, Path, dict]) -> None:
    t, path, meta = saved
    assert path.exists() and metadata_path(path).exists()
    assert (meta["transitions"], meta["episodes"]) == (19, 4)
    assert len(meta["sha256"]) == 64
    assert (meta["env"], meta["seed"], meta["pause_step"], meta["strategy"]) == ("hopper", 3, 200000, "buffer")
    assert read_metadata(path) == json.loads(json.dumps(meta))
    assert verify_dataset(path)["sha256"] == meta["sha256"]

    loaded, loaded_meta = load_transitions(path)
    for field in FIELDS:
        a, b = getattr(t, field), getattr(loaded, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    assert loaded_meta == read_metadata(path)


def test_load_dataset_gives_the_mdp_dataset(saved: tuple[Transitions, Path, dict]) -> None:
    _, path, meta = saved
    dataset, loaded_meta = load_dataset(path)
    assert loaded_meta["sha256"] == meta["sha256"]
    assert [ep.terminated for ep in dataset.episodes] == [kind == "t" for _, kind in EPISODES]
    assert [ep.size() for ep in dataset.episodes] == [length for length, _ in EPISODES]


def test_a_tampered_file_is_refused(saved: tuple[Transitions, Path, dict]) -> None:
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="content hash .* does not match"):
        verify_dataset(path)
    with pytest.raises(DatasetError, match="hash"):
        load_transitions(path)


def test_a_missing_sidecar_is_refused(saved: tuple[Transitions, Path, dict]) -> None:
    _, path, _ = saved
    metadata_path(path).unlink()
    with pytest.raises(DatasetError, match="metadata file .* is missing"):
        load_dataset(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nothing.h5")


def test_a_broken_dataset_is_never_written(tmp_path: Path) -> None:
    t = make_transitions()
    t.terminals[-1] = True  # the last step is now both terminal and timeout
    path = tmp_path / "broken.h5"
    with pytest.raises(DatasetError, match="both terminal and timeout"):
        save_dataset(t, path)
    assert not path.exists() and not metadata_path(path).exists()


# --- d3rlpy ------------------------------------------------------------------------------------


def test_to_mdp_dataset_keeps_episodes_and_their_ends() -> None:
    t = make_transitions()
    dataset = t.to_mdp_dataset()
    assert len(dataset.episodes) == len(EPISODES)
    assert sum(ep.size() for ep in dataset.episodes) == len(t)
    # d3rlpy counts a transition per step of a terminated episode, one fewer for a truncated one.
    assert dataset.transition_count == len(t) - sum(kind == "o" for _, kind in EPISODES)
    assert [ep.terminated for ep in dataset.episodes] == [kind == "t" for _, kind in EPISODES]
    for ep, (start, stop) in zip(dataset.episodes, t.episode_bounds(), strict=True):
        np.testing.assert_array_equal(ep.observations, t.observations[start:stop])
        np.testing.assert_array_equal(ep.actions, t.actions[start:stop])
        np.testing.assert_array_equal(ep.rewards.reshape(-1), t.rewards[start:stop])


def test_without_timeouts_truncated_episodes_would_merge() -> None:
    """Why timeouts matter: the same steps with the timeouts dropped give fewer, merged episodes."""
    t = make_transitions([(5, "t"), (7, "o"), (4, "t")])
    merged = Transitions(t.observations, t.actions, t.rewards, t.terminals, np.zeros(len(t), dtype=bool))
    assert len(t.to_mdp_dataset().episodes) == 3
    assert len(merged.to_mdp_dataset().episodes) == 2
