"""Atomic writes (a file is either complete or absent, never half written), and the project root."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # config/, paper/ and results/ live here


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_path(path: Path | str) -> None:
    """Flush ``path`` (a file or a directory entry list) to disk: what a checkpoint relies on survives
    a lost node, not only a killed process."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path | str) -> None:
    """Remove directory ``path`` so that a kill at any moment leaves it whole or gone: it is renamed
    to ``<path>.del`` (one atomic step) before being deleted; a leftover ``.del`` is removed first."""
    path = Path(path)
    trash = path.with_name(path.name + ".del")
    shutil.rmtree(trash, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def link_or_copy(source: Path | str, target: Path | str) -> None:
    """Make ``target`` hold ``source``'s bytes, atomically: a hard link where the filesystem allows
    one (no second copy on disk), a copy otherwise. ``source`` stays."""
    target = Path(target)
    with atomic_path(target) as tmp:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path: Path | str, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_to_builtin) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def _to_builtin(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays, paths and dataclasses."""
    import dataclasses

    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
