"""Work that must not move the global random streams a learner draws from.

Stable-Baselines3's replay buffer samples its batches from numpy's *global* RNG and SAC samples
its actions from torch's; anything else that draws from those streams between two ``learn``
calls (writing a dataset, evaluating, validating) would change every later batch and action of
the run. :func:`isolated_rng` runs such work and then puts the global states back, so a run that
pauses is the same SAC as one that never did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from replication.agents import checkpoint


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run the block, then restore the global RNG states it found (whatever the block drew)."""
    states = checkpoint.rng_states()
    try:
        yield
    finally:
        checkpoint.set_rng_states(states)
