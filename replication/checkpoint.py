"""Exact snapshots of live Python objects that hold simulators, for resumable runs.

Gymnasium's MuJoCo environments pickle through ``EzPickle``, which stores only constructor
arguments and builds a fresh env on load: the simulator state, the episode's step counter and
the RNGs would be lost. :func:`dumps` pickles such objects by their full ``__dict__`` instead
(MuJoCo's ``MjModel``/``MjData`` pickle natively), so a restored env continues its episode
exactly where it was.
"""

from __future__ import annotations

import io
import pickle
import random
from typing import Any

import cloudpickle
import mujoco
import numpy as np
import torch
from gymnasium.utils import EzPickle

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
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type):
            return super().reducer_override(obj)
        if isinstance(obj, EzPickle) or isinstance(getattr(obj, "__dict__", {}).get("data"), mujoco.MjData):
            return (_new, (type(obj),), _state_of(obj), None, None, _set_dict)
        return super().reducer_override(obj)


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` with its full state, simulators included."""
    buffer = io.BytesIO()
    _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def rng_states() -> dict[str, Any]:
    """The global RNG states a training loop draws from (python, numpy, torch)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
