"""scripts/gpu-check.sh: its CPU smoke test (the CUDA path needs a GPU machine)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent


def script_env() -> dict[str, str]:
    """The suite's own environment; the script rebuilds it only if its stamp says it is up to date anyway."""
    want = hashlib.sha256((ROOT / "requirements.lock").read_bytes() + (ROOT / "pyproject.toml").read_bytes())
    stamp = VENV / ".replication-lock"
    current = stamp.exists() and stamp.read_text().strip() == want.hexdigest()
    return {**os.environ, "VENV": str(VENV), "SETUP_ENV": "1" if current else "0"}


@pytest.mark.slow
def test_cpu_smoke_run_prints_the_table_and_agrees(tmp_path):
    out = tmp_path / "gpu-check.json"
    args = ["--device", "cpu", "--steps", "3", "--cpu-steps", "3", "--warmup", "1", "--check-steps", "2"]
    cmd = ["bash", str(ROOT / "scripts" / "gpu-check.sh"), *args, "--dataset-size", "400", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=script_env(), timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    record = json.loads(out.read_text())
    rows = {r["learner"]: r for r in record["rows"]}
    assert set(rows) == {"sac", "iql", "cql", "calql", "pex"}
    for name, row in rows.items():
        assert row["device"] == "cpu" and row["steps_per_second"] > 0, name
        assert row["forward_max_abs_diff"] == 0.0 and row["trained_max_abs_diff"] == 0.0, name  # same device
        assert row["agree"], name
    assert record["gpu"] == {"used": False, "reason": "the config's device is cpu"}
    header = next(line for line in result.stdout.splitlines() if line.startswith("learner"))
    assert "steps/s" in header and "speed-up" in header and "agree" in header


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine runs the real check instead")
def test_cuda_without_a_gpu_stops_with_a_reason():
    env = {**script_env(), "SETUP_ENV": "0"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "no NVIDIA GPU" in result.stderr


def test_agreement_verdict():
    from replication.gpucheck import FORWARD_TOLERANCE, TRAINED_TOLERANCE, agrees

    assert agrees("iql", 0.0, TRAINED_TOLERANCE)
    assert not agrees("iql", 0.0, 2 * TRAINED_TOLERANCE)  # IQL and PEX updates are deterministic
    assert not agrees("pex", 0.0, 2 * TRAINED_TOLERANCE)
    assert agrees("cql", 0.0, 0.5)  # sampled updates: reported, not judged
    assert not agrees("sac", 2 * FORWARD_TOLERANCE, 0.0)  # but the shared start must act the same
