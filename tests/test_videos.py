"""Rollout videos: real policies rendered headless from a run's folder layout, and the no-GL path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from replication.analysis.report import write_report
from replication.analysis.videos import choose_backend, markdown, probe_backend
from replication.plan import config
from replication.plan.settings import learner_settings

# Trains agents: the slow tier.
pytestmark = pytest.mark.slow

SEED = 0
VIDEOS = {"enabled": True, "fps": 10, "size": [64, 48], "max_steps": 15}


def tidy_row(stage: str, algo: str, value: float, **extra) -> dict:
    row = {
        "env": "hopper",
        "suite": "locomotion",
        "seed": SEED,
        "stage": stage,
        "algo": algo,
        "dataset": "buffer",
        "validation": "none",
        "selection": "offline",
        "variant_options": "",
        "pause": 400,
        "env_step": 400,
        "metric": "score",
        "value": value,
        "episodes": 1,
    }
    return {**row, **extra}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A run folder with real (untrained) policies where the workflow puts them, and its tidy table."""
    import d3rlpy

    from replication.agents import learners
    from replication.agents.datasets import collect_transitions
    from replication.agents.online import build_sac
    from replication.agents.policies import export_sac_actor
    from replication.io import write_json
    from replication.plan.settings import online_settings

    root = tmp_path_factory.mktemp("videos")
    small = config.read_yaml(config.CONFIG_DIR / "config.yaml")  # the default run's settings
    overrides = {
        "name": "clips",
        "envs": ["hopper"],
        "seeds": [SEED],
        "videos": VIDEOS,
        "env_options": {"hopper": {"max_episode_steps": 30}},
    }
    cfg = config.resolve(config.deep_merge(small, overrides))
    cell = root / "results" / "clips" / "cells" / "hopper" / f"seed{SEED}"
    # recommended: the exported policy of the best offline recommendation at the last pause (here: CQL)
    actor = cell / "offline" / "buffer-p1000" / "cql" / "policy_last.pt"
    export_sac_actor(build_sac(online_settings(cfg, "hopper"), SEED), actor)
    # fine-tuned: d3rlpy learners saved as the fine-tuning jobs save them; PEX needs its offline learner
    transitions = collect_transitions("hopper", SEED, lambda obs: np.zeros(3, dtype=np.float32), 200)
    d3rlpy.seed(SEED)
    learner = learners.build_learner(learner_settings(cfg, "hopper", "iql"), "cpu:0")
    learners.prepare(learner, learners.replay_buffer(transitions))
    source = cell / "offline" / "buffer-p400" / "iql"
    source.mkdir(parents=True)
    learner.save(str(source / "learnable_best.d3"))
    write_json(source / "validation.json", {"best_step": 0, "last_step": 0})
    from replication.agents.finetune.pex import expand_policy

    for method, saved in (("iql", learner), ("pex", expand_policy(learner, "cpu:0"))):
        folder = cell / "finetune" / method
        folder.mkdir(parents=True)
        saved.save(str(folder / "learnable_final.d3"))
        write_json(folder / "finetune.json", {"offline_dir": str(source), "offline_checkpoint": "best"})
    rows = [
        tidy_row("recommend", "iql", 1.0, pause=1000, env_step=1000),
        tidy_row("recommend", "cql", 2.0, pause=1000, env_step=1000),  # the best at the last pause
        tidy_row("recommend", "calql", 9.0),  # an earlier pause: not the final recommendation
        tidy_row("recommend", "cql", 9.0, pause=1000, env_step=1000, metric="return"),  # not the score
        tidy_row("finetune", "iql", 5.0, env_step=1000),
        tidy_row("finetune", "pex", 3.0, env_step=1000),
        tidy_row("finetune", "pex", 8.0, env_step=700),  # not at the end of the budget
    ]
    tidy = root / "tidy.csv"
    pd.DataFrame(rows).to_csv(tidy, index=False)
    cfg_file = root / "results" / "clips" / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    return root, tidy, cfg


def render(root: Path, tidy: Path, cfg: dict, out: Path) -> subprocess.CompletedProcess:
    cfg_file = root / "results" / "clips" / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable,
        "-m",
        "replication",
        "videos",
        "--config",
        str(cfg_file),
        "--tidy",
        str(tidy),
        "--out",
        str(out),
    ]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)


def test_an_unknown_backend_fails_its_probe():
    assert probe_backend("no-such-backend") is not None
    backend, failures = choose_backend(("no-such-backend",))
    assert backend is None or backend != "no-such-backend"  # MUJOCO_GL, when set, is tried too
    assert "no-such-backend" in failures


def test_clips_of_the_final_recommended_and_best_fine_tuned_policies(run, tmp_path):
    import imageio.v2 as imageio

    from replication.agents.envs import make_env
    from replication.agents.evaluation import episode_seeds
    from replication.agents.learners import offline_policy

    root, tidy, cfg = run
    if choose_backend()[0] is None:
        pytest.skip("no MuJoCo GL back-end on this machine (the no-back-end path is tested below)")
    result = render(root, tidy, cfg, tmp_path / "videos")
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads((tmp_path / "videos" / "videos.json").read_text())
    clips = {c["role"]: c for c in status["envs"]["hopper"]["clips"]}
    assert set(clips) == {"recommended", "finetuned"}
    assert "offline CQL" in clips["recommended"]["label"] and "score 2" in clips["recommended"]["label"]
    assert "IQL FT at the end of the budget" in clips["finetuned"]["label"]  # 5.0 beats PEX's 3.0 at the end
    for clip in clips.values():
        frames = imageio.mimread(tmp_path / "videos" / clip["gif"])
        assert len(frames) == clip["steps"] + 1 == clip["frames"] and frames[0].shape[:2] == (48, 64)
        assert np.ptp(np.asarray(frames[0])) > 50  # a rendered scene, not a blank image
        assert clip["mp4"] and (tmp_path / "videos" / clip["mp4"]).stat().st_size > 0
    # the clip is the policy's real episode: the same return without rendering, from the same seed
    policy = offline_policy(
        root
        / "results"
        / "clips"
        / "cells"
        / "hopper"
        / "seed0"
        / "offline"
        / "buffer-p1000"
        / "cql"
        / "policy_last.pt"
    )
    env = make_env("hopper", SEED, max_episode_steps=30)
    obs, _ = env.reset(seed=episode_seeds(SEED, 1)[0])
    total = 0.0
    for _ in range(clips["recommended"]["steps"]):
        obs, reward, *_ = env.step(policy(obs))
        total += reward
    assert clips["recommended"]["return"] == pytest.approx(total, abs=1e-3)
    page = (tmp_path / "videos" / "hopper.html").read_text()
    assert page.count("data:image/gif;base64,") == 2

    cfg_pex = {**cfg, "videos": VIDEOS}
    rows = pd.read_csv(tidy, keep_default_na=False)
    rows.loc[(rows.algo == "pex") & (rows.env_step == 1000), "value"] = 6.0  # now PEX is the best
    pex_tidy = tmp_path / "tidy-pex.csv"
    rows.to_csv(pex_tidy, index=False)
    result = render(root, pex_tidy, cfg_pex, tmp_path / "videos-pex")
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads((tmp_path / "videos-pex" / "videos.json").read_text())
    finetuned = next(c for c in status["envs"]["hopper"]["clips"] if c["role"] == "finetuned")
    assert "PEX" in finetuned["label"] and finetuned["steps"] > 0

    report = write_report(tmp_path / "report.md", cfg, videos=tmp_path / "videos")
    text = report.read_text()
    assert "## Rollout videos" in text and "![hopper recommended](videos/hopper-recommended.gif)" in text


def test_without_a_gl_backend_the_job_succeeds_and_says_why(run, tmp_path, monkeypatch):
    from replication.analysis.videos import build_videos

    root, tidy, cfg = run
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.chdir(root)
    status = build_videos(cfg, tidy, tmp_path / "videos", backends=("no-such-backend",))
    assert status["backend"] is None and "no MuJoCo GL back-end works" in status["reason"]
    assert "No clip: no MuJoCo GL back-end works" in (tmp_path / "videos" / "hopper.html").read_text()
    assert markdown(tmp_path / "videos", tmp_path).startswith("No clips: no MuJoCo GL back-end works")


def test_report_command_without_videos(tmp_path):
    """With videos off the workflow passes ``--videos`` with no folder: no section, no error."""
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump({"name": "x", "videos": {"enabled": False}}))
    cmd = [sys.executable, "-m", "replication", "report", "--out", str(tmp_path / "r.md"), "--config", str(cfg_file)]
    result = subprocess.run([*cmd, "--videos"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "rollout videos are off in this run's configuration" in (tmp_path / "r.md").read_text()
