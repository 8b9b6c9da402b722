"""Job start-up: import d3rlpy without scikit-learn, which it loads for one unused algorithm.

d3rlpy 2.x imports ``sklearn.neighbors.NearestNeighbors`` when it is imported, for PRDC only. The
study never runs PRDC, and importing scikit-learn costs about 2.5 s of every job's start-up (a
third of it; ``python -X importtime -c "import d3rlpy"``). :func:`import_d3rlpy` imports d3rlpy
with a stand-in for that one name; the stand-in builds the real ``NearestNeighbors`` when it is
first used, so PRDC still works. The stand-in modules are removed from ``sys.modules`` as soon as
d3rlpy is imported: a later ``import sklearn`` anywhere gets the real package.

Nothing numerical changes: d3rlpy's code paths are the same; only the import is deferred.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyNearestNeighbors:
    """``sklearn.neighbors.NearestNeighbors(*args, **kwargs)``, built on first use.

    PRDC builds one as a class attribute when d3rlpy is imported; this defers it (and the import of
    scikit-learn) to the first attribute access, which only running PRDC makes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs, self._real = args, kwargs, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # protocol look-ups (class creation asks for __set_name__)
            raise AttributeError(name)
        if self._real is None:
            from sklearn.neighbors import NearestNeighbors

            self._real = NearestNeighbors(*self._args, **self._kwargs)
        return getattr(self._real, name)


def import_d3rlpy() -> types.ModuleType:
    """Import (or return) d3rlpy, skipping scikit-learn when it is not loaded yet."""
    if "d3rlpy" in sys.modules or "sklearn" in sys.modules:
        return importlib.import_module("d3rlpy")
    package = types.ModuleType("sklearn")
    package.__path__ = []  # a package with no submodules: any other sklearn import fails fast
    neighbors = types.ModuleType("sklearn.neighbors")
    neighbors.NearestNeighbors = LazyNearestNeighbors  # type: ignore[attr-defined]
    package.neighbors = neighbors  # type: ignore[attr-defined]
    stubs = {"sklearn": package, "sklearn.neighbors": neighbors}
    sys.modules.update(stubs)
    try:
        return importlib.import_module("d3rlpy")
    except ImportError:  # a d3rlpy that needs more of scikit-learn: import everything for real
        for name in [m for m in sys.modules if m == "d3rlpy" or m.startswith("d3rlpy.")]:
            del sys.modules[name]
        _remove(stubs)
        return importlib.import_module("d3rlpy")
    finally:
        _remove(stubs)


def _remove(stubs: dict[str, types.ModuleType]) -> None:
    for name, module in stubs.items():
        if sys.modules.get(name) is module:
            del sys.modules[name]
