"""Work that must not move the global random streams a learner draws from.

Stable-Baselines3's replay buffer samples its batches from numpy's *global* RNG and SAC samples
its actions from torch's; anything else that draws from those streams between two ``learn``
calls (writing a dataset, evaluating, validating) would change every later batch and action of
the run. :func:`isolated_rng` runs such work and then puts the global states back, so a run that
pauses is the same SAC as one that never did.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def global_rng_states() -> dict[str, Any]:
    """The states of python's, numpy's and torch's (CPU and every CUDA device) global RNGs."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }


def set_global_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None:
        torch.cuda.set_rng_state_all(states["cuda"])


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run the block, then restore the global RNG states it found (whatever the block drew)."""
    states = global_rng_states()
    try:
        yield
    finally:
        set_global_rng_states(states)
