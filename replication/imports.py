"""Job start-up: import d3rlpy without scikit-learn, which it loads for one unused algorithm.

d3rlpy 2.x imports ``sklearn.neighbors.NearestNeighbors`` when it is imported, for PRDC only. The
study never runs PRDC, and importing scikit-learn costs about 2.5 s of every job's start-up (a
third of it; ``python -X importtime -c "import d3rlpy"``). :func:`import_d3rlpy` imports d3rlpy
with a stand-in for that one name; the stand-in builds the real ``NearestNeighbors`` when it is
first used, so PRDC still works. The stand-in modules are removed from ``sys.modules`` as soon as
d3rlpy is imported: a later ``import sklearn`` anywhere gets the real package.

Nothing numerical changes: d3rlpy's code paths are the same; only the import is deferred.

d3rlpy also imports ``gym`` 0.26.2 (for its optional gym wrappers; this package uses gymnasium
only), and ``import gym`` prints the ``gym-notices`` deprecation banner on stderr, at the top of
every job's log. Neither gym nor gym-notices offers a switch for it, so :func:`import_gym_quietly`
imports gym with stderr captured and writes back everything except that exact banner (the text
gym-notices holds for the installed gym version): warnings and errors still show.

``import gymnasium_robotics`` (the Kitchen environments) likewise prints a notice on stderr about the
reward functions of the Adroit hand environments (farama-notifications' text for the installed
version), which this package does not use: :func:`import_robotics_quietly` drops that exact text.
"""

from __future__ import annotations

import contextlib
import importlib
import io
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


def gym_notice() -> str | None:
    """The banner ``import gym`` prints for the installed gym version (None: gym prints none)."""
    try:
        from importlib.metadata import version

        from gym_notices import notices

        return notices.notices.get(version("gym")) or None
    except Exception:  # gym or gym-notices absent, or a gym-notices without this table
        return None


def without_notice(captured: str, notice: str | None) -> str:
    """``captured`` stderr text without the one banner line block ``notice`` (printed with a newline)."""
    return captured.replace(notice + "\n", "", 1) if notice else captured


def import_quietly(module: str, notice: str | None) -> None:
    """Import ``module`` (when not imported yet) with the one stderr text ``notice`` dropped; an
    ImportError is left to whoever needs the module."""
    if module in sys.modules or notice is None:
        return
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured), contextlib.suppress(ImportError):
        importlib.import_module(module)
    sys.stderr.write(without_notice(captured.getvalue(), notice))


def import_gym_quietly() -> None:
    """Import gym (when installed and not imported yet) without its deprecation banner."""
    if "gym" not in sys.modules:
        import_quietly("gym", gym_notice())


def robotics_notice() -> str | None:
    """The notice ``import gymnasium_robotics`` prints for the installed version (None: it prints none)."""
    try:
        from importlib.metadata import version

        from farama_notifications import notifications

        return notifications.get("gymnasium_robotics", {}).get(version("gymnasium-robotics")) or None
    except Exception:  # gymnasium-robotics or farama-notifications absent
        return None


def import_robotics_quietly() -> types.ModuleType:
    """Import (or return) gymnasium_robotics without its notice about the Adroit environments."""
    if "gymnasium_robotics" not in sys.modules:
        import_quietly("gymnasium_robotics", robotics_notice())
    return importlib.import_module("gymnasium_robotics")


def import_d3rlpy() -> types.ModuleType:
    """Import (or return) d3rlpy, skipping scikit-learn when it is not loaded yet, and without gym's banner."""
    import_gym_quietly()
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
