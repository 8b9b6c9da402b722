"""Offline datasets made from the online agent's own experience.

Format: d3rlpy's own episode file (HDF5, ``ReplayBuffer.dump``), the format its algorithms and
tools read, with a JSON sidecar (``<file>.json``) holding the metadata and the file's SHA-256.
d3rlpy's format stores every episode with its ``terminated`` flag, so true terminations and
truncations survive the round trip; loading verifies the hash before anything reads the data.

A dataset is built from flat arrays in the order steps were taken. Each episode ends on a step
that is either ``terminals`` (the environment terminated) or ``timeouts`` (truncated, or cut at
a pause point), never both; rows after the last episode end are refused, never dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from replication.io import atomic_path, write_json
from replication.plan.vocabulary import dataset_name


class DatasetError(ValueError):
    """A dataset file or array set that cannot be used as it is."""


@dataclasses.dataclass
class Transitions:
    """Flat, episode-ordered arrays of one dataset."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
        self.terminals = np.asarray(self.terminals, dtype=bool).reshape(-1)
        self.timeouts = np.asarray(self.timeouts, dtype=bool).reshape(-1)

    def __len__(self) -> int:
        return len(self.rewards)

    def validate(self) -> None:
        """Refuse arrays with a broken episode structure, naming the problem."""
        n = len(self.rewards)
        for name in ("observations", "actions", "terminals", "timeouts"):
            if len(getattr(self, name)) != n:
                raise DatasetError(f"{name} has {len(getattr(self, name))} rows, rewards has {n}")
        if n == 0:
            raise DatasetError("the dataset is empty")
        both = np.flatnonzero(self.terminals & self.timeouts)
        if both.size:
            raise DatasetError(f"step {both[0]} is marked both terminal and timeout ({both.size} such steps)")
        ends = self.terminals | self.timeouts
        if not ends[-1]:
            raise DatasetError(
                "the last step ends no episode (neither terminal nor timeout): "
                f"{n - 1 - int(np.flatnonzero(ends)[-1]) if ends.any() else n} trailing steps would be lost"
            )
        for name in ("observations", "actions", "rewards"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise DatasetError(f"{name} contain NaN or inf")

    def episode_bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every episode."""
        stops = np.flatnonzero(self.terminals | self.timeouts) + 1
        starts = np.concatenate([[0], stops[:-1]])
        return list(zip(starts.tolist(), stops.tolist(), strict=True))

    def storable(self) -> tuple[Transitions, int]:
        """These arrays without one-step episodes that end in a timeout; and how many were dropped.

        Such an episode holds no transition (there is no next observation to learn from) and
        d3rlpy does not store it, so it is dropped before saving rather than lost silently.
        """
        bounds = self.episode_bounds()
        keep = np.ones(len(self), dtype=bool)
        for a, b in bounds:
            if b - a == 1 and self.timeouts[a]:
                keep[a] = False
        if keep.all():
            return self, 0
        arrays = (self.observations, self.actions, self.rewards, self.terminals, self.timeouts)
        return Transitions(*(x[keep] for x in arrays)), int((~keep).sum())

    def episode_returns(self) -> np.ndarray:
        return np.array([self.rewards[a:b].sum() for a, b in self.episode_bounds()], dtype=np.float64)

    def to_mdp_dataset(self, transition_picker: Any = None):
        """The d3rlpy ``MDPDataset`` of these arrays, sampled through ``transition_picker`` if given."""
        import d3rlpy

        self.validate()
        return d3rlpy.dataset.MDPDataset(
            observations=self.observations,
            actions=self.actions,
            rewards=self.rewards.reshape(-1, 1),
            terminals=self.terminals.astype(np.float32),
            timeouts=self.timeouts.astype(np.float32),
            transition_picker=transition_picker,
            action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
        )

    def summary(self) -> dict[str, Any]:
        returns = self.episode_returns()
        return {
            "transitions": len(self),
            "episodes": len(returns),
            "terminal_episodes": int(self.terminals.sum()),
            "timeout_episodes": int(self.timeouts.sum()),
            "observation_dim": int(self.observations.shape[1]),
            "action_dim": int(self.actions.shape[1]),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
        }


def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_path(path: Path | str) -> Path:
    return Path(str(path) + ".json")


def save_dataset(transitions: Transitions, path: Path | str, **metadata: Any) -> dict[str, Any]:
    """Write ``transitions`` in d3rlpy's format with a metadata sidecar; returns the metadata.

    ``metadata`` should name at least env, seed, pause step and strategy; sizes, episode count,
    return statistics and the content hash are added here.
    """
    transitions.validate()
    transitions, dropped = transitions.storable()
    path = Path(path)
    dataset = transitions.to_mdp_dataset()
    with atomic_path(path) as tmp, open(tmp, "w+b") as f:
        dataset.dump(f)
    meta = {
        **metadata,
        **transitions.summary(),
        "dropped_one_step_timeout_episodes": dropped,
        "format": "d3rlpy-h5",
        "file": path.name,
        "sha256": sha256_of(path),
    }
    write_json(metadata_path(path), meta)
    return meta


def read_metadata(path: Path | str) -> dict[str, Any]:
    meta_file = metadata_path(path)
    if not meta_file.exists():
        raise DatasetError(f"{path}: metadata file {meta_file} is missing; rebuild the dataset")
    return json.loads(meta_file.read_text())


def verify_dataset(path: Path | str) -> dict[str, Any]:
    """Check the file against the hash in its metadata; returns the metadata."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    meta = read_metadata(path)
    actual = sha256_of(path)
    if actual != meta.get("sha256"):
        raise DatasetError(
            f"{path}: content hash {actual[:12]}... does not match the recorded {str(meta.get('sha256'))[:12]}...; "
            "the file was changed or corrupted after it was written. Delete it and rerun the job that makes it."
        )
    return meta


def load_transitions(path: Path | str) -> tuple[Transitions, dict[str, Any]]:
    """Read a verified dataset file back into flat arrays."""
    import d3rlpy

    meta = verify_dataset(path)
    with open(path, "rb") as f:
        episodes = d3rlpy.dataset.io.load(d3rlpy.dataset.Episode, f)
    observations, actions, rewards, terminals, timeouts = [], [], [], [], []
    for ep in episodes:
        n = ep.size()
        observations.append(ep.observations)
        actions.append(ep.actions)
        rewards.append(ep.rewards.reshape(-1))
        end = np.zeros(n, dtype=bool)
        end[-1] = True
        terminals.append(end if ep.terminated else np.zeros(n, dtype=bool))
        timeouts.append(np.zeros(n, dtype=bool) if ep.terminated else end)
    transitions = Transitions(*(np.concatenate(a) for a in (observations, actions, rewards, terminals, timeouts)))
    transitions.validate()
    if len(transitions) != meta["transitions"]:
        raise DatasetError(f"{path}: holds {len(transitions)} steps, metadata says {meta['transitions']}")
    return transitions, meta


def load_dataset(path: Path | str):
    """Verify and load a dataset file as a d3rlpy ``MDPDataset``; returns ``(dataset, metadata)``."""
    transitions, meta = load_transitions(path)
    return transitions.to_mdp_dataset(), meta


NEWDATA_SEED_OFFSET = 30_000  # (choice) collection episodes have their own seeds


def collect_transitions(
    env_name: str,
    seed: int,
    policy: Any,
    size: int,
    epsilon: float = 0.0,
    env_options: dict[str, Any] | None = None,
    seed_offset: int = NEWDATA_SEED_OFFSET,
) -> Transitions:
    """Exactly ``size`` env steps of ``policy`` with epsilon-random actions, as a dataset.

    With probability ``epsilon`` a step takes a uniformly random action instead of the
    policy's. Episodes end on the env's own termination or truncation; the episode running
    when ``size`` steps are reached is cut (a timeout). The env is built with the run's seed
    (Meta-World: the run's task variations); resets and exploration draw from generators
    seeded with ``seed + seed_offset``.
    """
    from replication.agents.envs import make_env

    if size < 1:
        raise ValueError(f"newdata size must be positive, got {size}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    env = make_env(env_name, seed, **(env_options or {}))
    rng = np.random.default_rng(seed + seed_offset)
    space = env.action_space
    obs_dim, act_dim = env.observation_space.shape[0], space.shape[0]
    observations = np.empty((size, obs_dim), dtype=np.float32)
    actions = np.empty((size, act_dim), dtype=np.float32)
    rewards = np.empty(size, dtype=np.float32)
    terminals = np.zeros(size, dtype=bool)
    timeouts = np.zeros(size, dtype=bool)
    obs, _ = env.reset(seed=seed + seed_offset)
    for t in range(size):
        if epsilon > 0 and rng.random() < epsilon:
            action = rng.uniform(space.low, space.high).astype(np.float32)
        else:
            action = np.asarray(policy(obs), dtype=np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        observations[t], actions[t] = obs, action
        rewards[t] = reward
        terminals[t] = terminated
        timeouts[t] = truncated and not terminated
        obs = env.reset()[0] if terminated or truncated else next_obs
    if not (terminals[-1] or timeouts[-1]):
        timeouts[-1] = True
    env.close()
    return Transitions(observations, actions, rewards, terminals, timeouts)


def build_newdata(
    cfg: dict[str, Any],
    env_name: str,
    seed: int,
    online_dir: Path | str,
    collector: str,
    epsilon: float,
    out: Path | str,
) -> dict[str, Any]:
    """Collect the newdata dataset of a cell with its online ``collector`` (``best`` or ``last``).

    The collector is the validated online policy (``best``) or the last one (``last``, the
    "without validation" variant) at the newdata pause. Charges exactly ``newdata.size`` env
    steps (recorded in the metadata as ``charged_env_steps``).
    """
    import time

    from replication.agents.policies import load_policy
    from replication.plan import config, provenance

    start, t0 = provenance.now(), time.perf_counter()
    if collector not in ("best", "last"):
        raise ValueError(f"collector must be 'best' or 'last', got {collector!r}")
    pause = config.newdata_pause_step(cfg)
    policy_file = Path(online_dir) / f"pause_{pause}" / f"policy_{collector}.pt"
    size = cfg["newdata"]["size"]
    transitions = collect_transitions(
        env_name, seed, load_policy(policy_file), size, epsilon, config.env_options(cfg, env_name)
    )
    return save_dataset(
        transitions,
        out,
        env=env_name,
        seed=seed,
        pause=pause,
        strategy=dataset_name(epsilon),
        collector=collector,
        epsilon=epsilon,
        charged_env_steps=size,
        env_options=config.env_options(cfg, env_name),
        provenance=provenance.job_record(cfg, start, time.perf_counter() - t0),  # no part of the data's hash
    )
