"""A package dataset (d3rlpy HDF5 + JSON sidecar) written as a Minari dataset, for other libraries.

``replication export-minari DATASET.h5 --out DIR`` writes ``DIR/<dataset id>/data/`` in Minari's
format (HDF5 storage), readable by ``minari.load_dataset(id)`` with ``MINARI_DATASETS_PATH=DIR``
or by ``minari.MinariDataset("DIR/<dataset id>/data")``.

Episode boundaries are kept exactly: an episode that ended in a termination has ``terminations``
true on its last step, one that was truncated (time limit or a pause point) ``truncations``. The
source format stores one observation per step and not the observation after the last step, which
Minari requires (``len(observations) == len(actions) + 1``):

- after a termination that observation is written as zeros, which is what d3rlpy itself uses as
  the next observation of a terminal transition (learners do not bootstrap from it);
- a truncated episode ends one step earlier: its last stored step has no next observation, so it is
  no transition (d3rlpy never samples it either) and is left out (counted in the metadata).

So every exported transition (observation, action, reward, next observation, termination) is one of
the transitions d3rlpy trains on, in the same order, and vice versa. The Minari metadata holds the
env spec where the study env is a registered gymnasium env as it is (locomotion with its own reward
and no delay; observations cast to float32), the package's metadata under ``replication`` (env,
seed, pause, collector, strategy, env options, the SHA-256 of the source file) and the reason when
no env spec is recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from replication.agents.datasets import Transitions, load_transitions
from replication.plan.provenance import git_state

DATA_FORMAT = "hdf5"


@contextlib.contextmanager
def datasets_root(path: Path) -> Iterator[None]:
    """Minari's datasets root (``MINARI_DATASETS_PATH``) set to ``path`` inside the block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def default_dataset_id(meta: dict[str, Any], source: Path) -> str:
    """``replication/<env>-seed<k>-<file stem>-v0``, with characters Minari ids allow."""
    name = f"{meta.get('env', 'env')}-seed{meta.get('seed', 0)}-{source.stem}"
    return f"replication/{re.sub(r'[^A-Za-z0-9_-]+', '_', name)}-v0"


def registered_spec(meta: dict[str, Any]) -> tuple[Any, str | None]:
    """(gymnasium EnvSpec, None) when the study env is a registered env as it is; else (None, why not)."""
    import gymnasium as gym

    from replication.envspecs import resolve_spec

    options = dict(meta.get("env_options") or {})
    delay = options.pop("reward_delay", 1)
    spec = resolve_spec(str(meta["env"]), **options)
    if spec.suite != "locomotion":
        return None, (
            f"{spec.name} is {spec.id} behind this package's wrappers ({spec.suite}: task set-up, reward, "
            "flattened observations); rebuild it with "
            f"replication.agents.envs.make_env({spec.name!r}, seed, **env_options)"
        )
    if delay != 1:
        return (
            None,
            f"{spec.name} pays its reward with a delay of {delay} steps (replication.agents.wrappers.RewardDelay)",
        )
    registered = gym.spec(spec.id)
    kwargs = {**registered.kwargs, **spec.kwargs}
    return dataclasses.replace(registered, max_episode_steps=spec.max_episode_steps, kwargs=kwargs), None


def episode_buffers(transitions: Transitions) -> tuple[list[Any], int]:
    """Minari episode buffers of ``transitions`` and the number of left-out last steps (see module doc)."""
    from minari.data_collector import EpisodeBuffer

    buffers, left_out = [], 0
    for i, (a, b) in enumerate(transitions.episode_bounds()):
        obs, act, rew = transitions.observations[a:b], transitions.actions[a:b], transitions.rewards[a:b]
        terminated = bool(transitions.terminals[b - 1])
        if terminated:
            obs = np.concatenate([obs, np.zeros_like(obs[:1])])
        else:
            act, rew = act[:-1], rew[:-1]
            left_out += 1
        n = len(act)
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=obs,
                actions=act,
                rewards=rew.astype(np.float64),
                terminations=np.eye(1, n, n - 1, dtype=bool)[0] if terminated else np.zeros(n, dtype=bool),
                truncations=np.zeros(n, dtype=bool) if terminated else np.eye(1, n, n - 1, dtype=bool)[0],
            )
        )
    return buffers, left_out


def export_minari(source: Path | str, out: Path | str, dataset_id: str | None = None) -> Path:
    """Write the package dataset ``source`` as Minari dataset ``dataset_id`` under root ``out``.

    Returns the dataset's data directory (``out/<dataset_id>/data``). The source's SHA-256 is checked
    against its sidecar first; an existing dataset of the same id is an error (Minari never overwrites).
    """
    import minari

    from replication.agents.envs import env_spaces

    source, out = Path(source), Path(out)
    transitions, meta = load_transitions(source)
    dataset_id = dataset_id or default_dataset_id(meta, source)
    env_spec, no_spec = registered_spec(meta)
    options = {k: v for k, v in (meta.get("env_options") or {}).items()}
    observation_space, action_space = env_spaces(str(meta["env"]), **options)
    buffers, left_out = episode_buffers(transitions)
    commit = git_state().get("commit")
    out.mkdir(parents=True, exist_ok=True)
    with datasets_root(out.resolve()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`(author_email|eval_env)` is set to None")
        if (out / dataset_id).exists():
            raise ValueError(f"{out / dataset_id} already exists; remove it or pass another --dataset-id")
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env_spec,
            observation_space=observation_space,
            action_space=action_space,
            algorithm_name=str(meta.get("collector", "unknown")),
            author="replication package (arXiv 2512.00383)",
            code_permalink=f"git commit {commit}" if commit else None,
            description=(
                f"{meta.get('strategy')} dataset of study env {meta.get('env')}, seed {meta.get('seed')}, "
                f"pause {meta.get('pause')}, exported from {source.name} (sha256 {meta['sha256']})"
            ),
            data_format=DATA_FORMAT,
        )
        package = {
            key: meta.get(key)
            for key in ("env", "seed", "pause", "strategy", "collector", "epsilon", "env_options", "charged_env_steps")
            if key in meta
        }
        dataset.storage.update_metadata(
            {
                "replication": {
                    **package,
                    "source_file": source.name,
                    "source_sha256": meta["sha256"],
                    "source_transitions": len(transitions),
                    "truncated_last_steps_left_out": left_out,
                    "env_spec_missing_because": no_spec,
                }
            }
        )
    return out / dataset_id / "data"
