"""One live workflow per results directory, held by a kernel lock that dies with its holder.

Snakemake's own directory lock is a pair of files in ``.snakemake/locks``: a run killed hard
(SIGKILL, out-of-memory kill, node loss, a scheduler's hard limit) leaves them behind, and the next
run refuses to start until someone passes ``--unlock``. This module replaces that failure mode:

* the workflow's main process takes ``flock`` on ``results/<name>/.workflow.lock`` (non-blocking)
  and keeps it open for its whole life; the kernel drops the lock when the process dies, however
  it dies, so the same command always starts again;
* a second run of the same config finds the lock held and is refused, with the holder's pid,
  host and command line in the message;
* whoever holds the lock knows that no live Snakemake works on ``results/<name>/``, so any
  Snakemake lock file naming a path there is stale and is removed (runs started without the
  profiles' ``nolock``, e.g. a plain ``snakemake --cores all``, leave such files when killed).

Runs of different configs (different ``results/<name>/``) lock different files and run side by
side in one checkout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = ".workflow.lock"


@dataclasses.dataclass
class RunLock:
    """The outcome of :func:`acquire`: held by us, or by the process described in ``holder``."""

    path: Path
    held: bool
    holder: dict[str, Any]
    fd: int | None = None

    def refusal(self) -> str:
        """Why a run is refused while another live process holds the lock."""
        h = self.holder
        who = f"pid {h.get('pid', '?')} on {h.get('host', '?')}, started {h.get('started', '?')}"
        command = " ".join(h.get("argv", [])) or "?"
        return (
            f"another run of this config is still running on {self.path.parent}/ ({who}: {command}); "
            "wait for it to finish or stop it. Runs of other configs (another results/<name>/) may run "
            "at the same time."
        )

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.held = False


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def acquire(out_dir: Path | str) -> RunLock:
    """Take the run lock of ``out_dir`` without waiting; the lock stays held while the process lives.

    The file is never removed (removing it would let two processes lock two different files of the
    same name); its content says who holds it. A filesystem without ``flock`` support raises
    :class:`OSError` naming the file.
    """
    path = Path(out_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        held = _try_flock(fd, path)
    except OSError:
        os.close(fd)
        raise
    if not held:
        os.close(fd)
        return RunLock(path, False, _read_holder(path))
    os.set_inheritable(fd, False)  # jobs started by the workflow must not keep it after it dies
    return RunLock(path, True, _claim(fd), fd)


def _try_flock(fd: int, path: Path) -> bool:
    """Take ``flock`` on ``fd`` (the file ``path``) without waiting: ``False`` if a live process holds it.
    A filesystem without ``flock`` support raises :class:`OSError` naming the file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        why = f"cannot lock {path} ({err.strerror}): the results filesystem must support flock"
        raise OSError(err.errno, why) from err
    return True


def _claim(fd: int) -> dict[str, Any]:
    """Write who holds the lock of ``fd`` (this process) into its file; returns that record."""
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return holder


def stale_snakemake_locks(out_dir: Path | str, lock_dir: Path | str = ".snakemake/locks") -> list[Path]:
    """Snakemake lock files (relative to the working directory) naming a path under ``out_dir``."""
    lock_dir = Path(lock_dir)
    if not lock_dir.is_dir():
        return []
    prefix = os.path.normpath(out_dir) + os.sep
    root = os.path.normpath(os.path.abspath(out_dir)) + os.sep
    stale = []
    for lockfile in sorted(lock_dir.glob("*.lock")):
        try:
            keys = lockfile.read_text().split("\n")
        except OSError:
            continue
        if any(k.startswith(prefix) or os.path.abspath(k).startswith(root) for k in keys if k.strip()):
            stale.append(lockfile)
    return stale


def clear_stale_snakemake_locks(lock: RunLock, lock_dir: Path | str = ".snakemake/locks") -> list[Path]:
    """Remove the Snakemake lock files of dead runs of ``lock``'s config (only while we hold ``lock``)."""
    if not lock.held:
        raise RuntimeError("only the holder of the run lock may clear Snakemake's locks")
    removed = stale_snakemake_locks(lock.path.parent, lock_dir)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


# ---- one live instance of a job -------------------------------------------------------------------
#
# On a cluster, a workflow that dies (its node lost, its login session killed) leaves its jobs running
# under the scheduler; the same command started again submits them anew, and for a while two instances
# of a job would write the same directory. Each training job therefore holds a kernel lock on
# ``<out>.job.lock`` while it runs: a second instance waits until the first has ended (however it ends),
# then resumes from what the first left (its checkpoint, or from the start if it had finished).

JOB_LOCK_SUFFIX = ".job.lock"


@contextlib.contextmanager
def job_lock(out: Path | str, poll_seconds: float = 5.0) -> Iterator[None]:
    """Hold the lock of the job writing ``out`` (a directory or a file) for the block; waits, saying for
    whom, while another live instance of the same job holds it."""
    out = Path(out)
    path = out.with_name(out.name + JOB_LOCK_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        said = False
        while not _try_flock(fd, path):
            if not said:
                h = _read_holder(path)
                print(
                    f"waiting for another instance of this job to end (pid {h.get('pid', '?')} on "
                    f"{h.get('host', '?')}, started {h.get('started', '?')}): {path}",
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            time.sleep(poll_seconds)
        _claim(fd)
        yield
    finally:
        os.close(fd)
