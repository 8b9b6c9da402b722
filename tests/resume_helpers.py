"""Run a job of the command line, SIGKILL it once it has checkpointed, and run it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "replication", *args]


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stderr[-4000:]}"
    return result


def checkpointed(directory: Path, **position: object) -> Callable[[], bool]:
    """True once ``directory`` holds a checkpoint whose meta has ``position`` (e.g. ``phase='extended'``)."""

    def ready() -> bool:
        try:
            meta = json.loads((directory / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        return all(meta.get(k) == v for k, v in position.items())

    return ready


def kill_after(cmd: list[str], ready: Callable[[], bool], timeout: float = 600) -> None:
    """Start ``cmd``; SIGKILL it as soon as ``ready()`` (bounded wait); fails if it ended first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"the job ended before it was ready to be killed:\n{proc.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the job was not ready to be killed within {timeout} s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"the job was not killed (exit status {proc.returncode})"


def differing(a: Path, b: Path, names: list[str]) -> list[str]:
    """Those of ``names`` (relative paths) whose bytes differ between directories ``a`` and ``b``."""
    missing = [n for n in names if not (a / n).exists() or not (b / n).exists()]
    assert not missing, f"missing outputs: {missing}"
    return [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]
