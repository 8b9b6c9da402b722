"""The stage benchmarks run at a tiny size and print their comparison tables (figures, not timed tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

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


@pytest.mark.slow
def test_online_against_bare_sac():
    out = benchmark(
        "bench_online.py", "--steps", "400", "--learning-starts", "100", "--episode-steps", "40",
        "--hidden", "16", "16", "--repeats", "1",
    )  # fmt: skip
    for label in ("bare SAC.learn", "replication.agents.online (training)", "replication.agents.online (whole job)"):
        assert float(table_row(out, label)[-1]) > 0


@pytest.mark.slow
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


@pytest.mark.slow
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


def _tiny_study(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\nenvs: [hopper]\nseeds: [0]\nenv_options: {hopper: {max_episode_steps: 50}}\n"
        "budget: {total_steps: 600, pause_fractions: [0.5, 1.0], finetune_pause: 0.5}\n"
        "online: {learning_starts: 200, net_arch: [16, 16], batch_size: 16, snapshot_interval: 100,"
        " checkpoint_interval: 100000}\n"
        "evaluation: {interval: 200, episodes: 1}\n"
        "validation: {episodes: 1, online_fraction: 0.1, offline_fraction: 0.1}\n"
        "newdata: {size: 50, pause: 0.5}\n"
        "finetune: {pex_initial_collection_steps: 10, wsrl: {warmup_steps: 10}}\n"
        "analysis: {c4: {enabled: false}, c5: {enabled: false}}\n"
    )
    return path


@pytest.mark.slow
def test_learning_parity_with_bare_sac(tmp_path):
    """The package's online stage and a bare SAC.learn of one seed give the same curve and weights."""
    cfg = _tiny_study(tmp_path)
    out = benchmark("bench_learning.py", "--config", str(cfg), "--seeds", "0", "--out", str(tmp_path / "out"))
    assert "| 0 |" in out and "| yes | yes (3) |" in out
    assert "mean over 1 seed(s): +0.00 (one seed: no interval over seeds)" in out
    curves = pd.read_csv(tmp_path / "out" / "parity.csv")
    wide = curves.pivot_table(index="env_step", columns="loop", values="return")
    assert list(wide.index) == [200, 300, 400, 600]  # the package also evaluates at its pause (300)
    wide = wide.dropna()
    assert (wide["replication online"] == wide["bare SB3 SAC.learn"]).all()
    assert (tmp_path / "out" / "parity.png").stat().st_size > 10_000


@pytest.mark.slow
def test_learning_parity_tells_apart_other_weights(tmp_path):
    """The parity check can fail: a bare run of another seed differs from the package's run in weights."""
    import importlib.util

    from replication.plan import config

    spec = importlib.util.spec_from_file_location("bench_learning", ROOT / "benchmarks" / "bench_learning.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg_file = _tiny_study(tmp_path)
    online = bench.run_package(cfg_file, "hopper", 0, tmp_path / "online")
    cfg = config.load(cfg_file)
    _, same = bench.run_bare(cfg, "hopper", 0)
    _, other = bench.run_bare(cfg, "hopper", 1)
    assert bench.same_weights(online, same) == (3, [])
    compared, differ = bench.same_weights(online, other)
    assert compared == 3 and differ == [200, 400, 600]
