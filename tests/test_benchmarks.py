"""The stage benchmarks run at a tiny size and print their comparison tables (figures, not timed tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def benchmark(script: str, *args: str, cwd: Path = ROOT) -> str:
    """The output of ``benchmarks/<script> args`` run in ``cwd``; fails the test if it fails."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def table_row(out: str, label: str) -> list[str]:
    return next(line for line in out.splitlines() if line.startswith(label)).split()


def test_online_against_bare_sac():
    out = benchmark(
        "bench_online.py", "--steps", "400", "--learning-starts", "100", "--episode-steps", "40",
        "--hidden", "16", "16", "--repeats", "1",
    )  # fmt: skip
    for label in ("bare SAC.learn", "replication.agents.online (training)", "replication.agents.online (whole job)"):
        assert float(table_row(out, label)[-1]) > 0


def test_offline_against_bare_fit_trains_the_same_networks():
    out = benchmark(
        "bench_offline.py", "--env", "hopper", "--online-steps", "400", "--episode-steps", "50",
        "--gradient-steps", "20", "--chunk", "10", "--hidden", "16", "16", "--batch", "16", "--settings-steps", "10",
    )  # fmt: skip
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| iql") or line.startswith("| c")]
    algos = {r[0].strip(): [c.strip() for c in r] for r in rows if len(r) == 7}
    assert set(algos) == {"iql", "cql", "calql"}
    for r in algos.values():
        assert float(r[3]) > 0 and r[4] == "identical" and r[6] == "identical"


def test_finetune_against_bare_updates(tmp_path):
    benchmark(
        "bench_finetune.py", "--out", str(tmp_path), "--total-steps", "1000", "--learning-starts", "200",
        "--episode-steps", "20", "--gradient-steps", "20", "--hidden", "16", "16", "--batch", "16",
        "--eval-interval", "400", "--eval-episodes", "1", "--bare-batches", "20",
    )  # fmt: skip
    throughput = pd.read_csv(tmp_path / "throughput.csv")
    assert list(throughput.method) == ["iql", "pex", "calql"]
    assert (throughput.ratio > 0).all() and (throughput.env_steps == 450).all()


def test_dag_against_rerunning_sac_per_variant():
    out = benchmark("bench_dag.py", "--configfile", "config/paper.yaml")
    assert "online phase: naive / DAG = 14.8x env steps, 14.7x gradient steps" in out
