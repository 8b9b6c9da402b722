"""The workflow's run lock: held by a live process only, released by the kernel however it dies."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replication.plan import runlock

HOLD = (  # a process that takes the lock, says so, and waits to be killed
    "import sys, time; from replication.plan import runlock; lock = runlock.acquire(sys.argv[1]); "
    "print(lock.held, flush=True); time.sleep(600)"
)


def test_a_live_holder_refuses_others_and_its_death_frees_the_lock(tmp_path):
    out = tmp_path / "results" / "a"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"  # it holds the lock now
        refused = runlock.acquire(out)
        assert not refused.held and refused.holder["pid"] == holder.pid
        assert f"pid {holder.pid}" in refused.refusal() and "still running" in refused.refusal()
        other = runlock.acquire(tmp_path / "results" / "b")  # another config: its own lock
        assert other.held
        other.release()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
        holder.stdout.close()
    deadline = time.monotonic() + 60
    lock = runlock.acquire(out)
    while not lock.held and time.monotonic() < deadline:  # the kernel drops it as the process goes
        time.sleep(0.05)
        lock = runlock.acquire(out)
    assert lock.held and lock.holder["pid"] == os.getpid()
    lock.release()


def test_only_snakemake_locks_of_this_config_are_stale(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    locks = Path(".snakemake/locks")
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("results/a/cells/hopper/seed0/online/curve.csv\nresults/a/tidy.csv\n")
    (locks / "0.input.lock").write_text("results/a/config.yaml\n")
    (locks / "1.output.lock").write_text("results/ab/tidy.csv\n")  # another config whose name starts alike
    lock = runlock.acquire("results/a")
    removed = runlock.clear_stale_snakemake_locks(lock)
    lock.release()
    assert sorted(p.name for p in removed) == ["0.input.lock", "0.output.lock"]
    assert sorted(p.name for p in locks.iterdir()) == ["1.output.lock"]


JOB = (  # a job instance that takes its job lock, says so, and waits to be killed
    "import sys, time; from replication.plan import runlock\n"
    "with runlock.job_lock(sys.argv[1], poll_seconds=0.05):\n"
    "    print('held', flush=True); time.sleep(600)"
)


def test_a_second_instance_of_a_job_waits_for_the_first_to_end(tmp_path):
    """Two instances of one job (a workflow restarted while its cluster jobs still run): the second
    waits, naming the first, and goes on once the first has died (SIGKILL: the kernel frees the lock)."""
    out = tmp_path / "cells" / "hopper" / "seed0" / "online"
    first = subprocess.Popen([sys.executable, "-c", JOB, str(out)], stdout=subprocess.PIPE, text=True)
    second = None
    try:
        assert first.stdout.readline().strip() == "held"
        second = subprocess.Popen(
            [sys.executable, "-c", JOB, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        waiting = second.stderr.readline()
        assert "waiting for another instance of this job" in waiting and f"pid {first.pid}" in waiting
        time.sleep(0.5)
        assert second.poll() is None
        os.kill(first.pid, signal.SIGKILL)
        assert second.stdout.readline().strip() == "held"  # it took the lock once the first was gone
        with pytest.raises(BlockingIOError):  # and holds it now
            fd = os.open(out.with_name("online" + runlock.JOB_LOCK_SUFFIX), os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=60)
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
