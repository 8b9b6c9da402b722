"""Exact snapshots of live Python objects that hold simulators, for resumable runs, and the
checkpoint directories of resumable jobs.

Gymnasium's MuJoCo environments pickle through ``EzPickle``, which stores only constructor
arguments and builds a fresh env on load: the simulator state, the episode's step counter and
the RNGs would be lost. :func:`dumps` pickles such objects by their full ``__dict__`` instead
(MuJoCo's ``MjModel``/``MjData`` pickle natively), so a restored env continues its episode
exactly where it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import mujoco
import numpy as np
import torch
from gymnasium.utils import EzPickle

from replication.io import fsync_path, remove_tree

_MJDATA_FIELDS = ("qpos", "qvel", "act", "ctrl", "mocap_pos", "mocap_quat", "qacc_warmstart")


class _DataView:
    """Marks an attribute that is a view of one of the env's ``MjData`` arrays."""

    def __init__(self, field: str):
        self.field = field


def _new(cls: type) -> Any:
    return cls.__new__(cls)


def _set_dict(obj: Any, state: dict[str, Any]) -> None:
    data = state.get("data")
    obj.__dict__.update({k: getattr(data, v.field) if isinstance(v, _DataView) else v for k, v in state.items()})


def _state_of(obj: Any) -> dict[str, Any]:
    """``obj.__dict__``, with views of its ``MjData`` arrays marked so they stay views.

    gymnasium-robotics' Franka env keeps ``init_qpos``/``init_qvel`` as views of ``data.qpos``
    and ``data.qvel``; a plain copy would change what its ``reset`` does.
    """
    state = dict(obj.__dict__)
    data = state.get("data")
    if data is None or not hasattr(data, "qpos"):
        return state
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            for field in _MJDATA_FIELDS:
                if np.shares_memory(value, getattr(data, field)):
                    state[key] = _DataView(field)
                    break
    return state


class _StatePickler(cloudpickle.CloudPickler):
    def __init__(self, file: io.BytesIO, external: list[Any]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._external = {id(o): i for i, o in enumerate(external)}

    def persistent_id(self, obj: Any) -> Any:
        i = self._external.get(id(obj))
        return None if i is None else ("external", i)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type):
            return super().reducer_override(obj)
        if isinstance(obj, EzPickle) or isinstance(getattr(obj, "__dict__", {}).get("data"), mujoco.MjData):
            return (_new, (type(obj),), _state_of(obj), None, None, _set_dict)
        return super().reducer_override(obj)


def dumps(obj: Any, external: list[Any] | None = None) -> bytes:
    """Pickle ``obj`` with its full state, simulators included.

    Objects in ``external`` (e.g. the episodes of a static dataset that the job rebuilds from its
    input file anyway) are stored as references to their position in that list, not by value.
    """
    buffer = io.BytesIO()
    _StatePickler(buffer, external or []).dump(obj)
    return buffer.getvalue()


class _StateUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, external: list[Any]):
        super().__init__(file)
        self._external = external

    def persistent_load(self, pid: Any) -> Any:
        return self._external[pid[1]]


def loads(data: bytes, external: list[Any] | None = None) -> Any:
    """Unpickle :func:`dumps`' bytes; ``external``: the objects ``dumps`` was given, in the same order."""
    return _StateUnpickler(io.BytesIO(data), external or []).load()


def rng_states() -> dict[str, Any]:
    """The global RNG states a training loop draws from (python, numpy, torch; CUDA where present)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


# ---- checkpoint directories ----------------------------------------------------------------------
#
# A checkpoint is a directory ``<job>/checkpoint`` whose ``meta.json`` is written last. It is built
# as ``checkpoint.tmp`` and swapped in by renames (the previous one kept as ``checkpoint.old`` until
# the new one is in place), so a kill at any moment leaves one complete checkpoint: the new, or the
# old. ``meta.json`` carries the job's key (:func:`job_key`): a checkpoint of other settings or
# other inputs is never resumed.

META = "meta.json"


def job_key(*parts: Any) -> str:
    """A digest of everything that determines a job's results (config, arguments, input hashes)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_checkpoint(directory: Path | str, key: str, fill: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Atomically replace ``directory`` by a new checkpoint; ``fill(tmp)`` writes its files into ``tmp``.

    ``fill`` returns what goes into ``meta.json`` besides the key; returns that meta, with the
    checkpoint's size in bytes and the seconds it took.
    """
    start = time.perf_counter()
    directory = Path(directory)
    tmp, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {"key": key, **fill(tmp)}
    files = [f for f in tmp.iterdir() if f.is_file()]
    meta["bytes"] = sum(f.stat().st_size for f in files)
    for f in files:
        fsync_path(f)
    meta["seconds"] = time.perf_counter() - start
    (tmp / META).write_text(json.dumps(meta, default=str))
    fsync_path(tmp / META)
    fsync_path(tmp)
    if (directory / META).exists():
        remove_tree(old)
        directory.rename(old)
    else:
        remove_tree(directory)
    tmp.rename(directory)
    fsync_path(directory.parent)
    remove_tree(old)
    return meta


def find_checkpoint(directory: Path | str, key: str) -> tuple[Path, dict[str, Any]] | None:
    """The complete checkpoint of ``directory`` (or the previous one, if a swap was cut short) made
    with ``key``, and its meta; ``None`` if there is none. A checkpoint of another key is removed."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / META).exists():
            meta = json.loads((candidate / META).read_text())
            if meta.get("key") == key:
                return candidate, meta
    remove_checkpoint(directory)
    return None


def remove_checkpoint(directory: Path | str) -> None:
    """Remove a job's checkpoint (and any half-written or previous one). Each goes whole: a kill
    midway never leaves a checkpoint with its ``meta.json`` but without some of its files."""
    directory = Path(directory)
    for suffix in ("", ".old", ".tmp"):
        remove_tree(directory.with_name(directory.name + suffix))
