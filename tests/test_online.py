"""The online phase on short real runs: datasets, validation charges, newdata, exact resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from replication.agents.datasets import build_newdata, load_transitions, save_dataset
from replication.agents.envs import make_env
from replication.agents.online import OnlineRun, buffer_transitions, build_sac, run_online, select_candidates
from replication.plan.settings import online_settings
from tests.conftest import tiny_config

# Trains agents: the slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory):
    cfg = tiny_config(["hopper"])
    out = tmp_path_factory.mktemp("online") / "hopper"
    summary = run_online(cfg, "hopper", 0, out, progress=False)
    return cfg, out, summary


def replay_episode_ends(env_name: str, actions: np.ndarray, seed: int, **options) -> tuple[np.ndarray, np.ndarray]:
    """Terminations and truncations of the real env, replayed with the same actions from the same seed."""
    env = make_env(env_name, seed, **options)
    env.reset(seed=seed)
    terminated, truncated = [], []
    for a in actions:
        _, _, te, tr, _ = env.step(a)
        terminated.append(te)
        truncated.append(tr and not te)
        if te or tr:
            env.reset()
    return np.array(terminated), np.array(truncated)


@pytest.mark.parametrize("env_name,options", [("hopper", {}), ("halfcheetah", {"max_episode_steps": 50})])
def test_dataset_episode_boundaries_match_the_env(env_name, options, make_tiny_config):
    """Terminals are the env's terminations (hopper falls), timeouts its truncations (time limit)."""
    # no gradient steps are needed to test the data path: warm-up covers the whole run
    cfg = make_tiny_config(
        [env_name], env_options={env_name: {"max_episode_steps": 100, **options}}, online={"learning_starts": 1000}
    )
    model = build_sac(online_settings(cfg, env_name), 0)
    model.learn(450)
    data = buffer_transitions(model)
    # SB3 seeds the env with reset(seed=seed) on its first reset; replaying the stored actions
    # on a fresh env from the same seed must give the same episode ends.
    term, trunc = replay_episode_ends(env_name, data.actions, 0, **cfg["env_options"][env_name])
    assert not np.any(data.terminals & data.timeouts)
    np.testing.assert_array_equal(data.terminals, term)
    # the running episode is cut at the end: the only extra timeout is the last step
    expected_timeouts = trunc.copy()
    if not (term[-1] or trunc[-1]):
        expected_timeouts[-1] = True
    np.testing.assert_array_equal(data.timeouts, expected_timeouts)
    if env_name == "hopper":
        assert data.terminals.sum() > 0, "hopper should fall within 450 random-ish steps"
    else:
        assert data.terminals.sum() == 0 and data.timeouts.sum() >= 450 // 50


def test_episode_cut_at_pause_is_a_timeout(make_tiny_config):
    cfg = make_tiny_config(["halfcheetah"])
    model = build_sac(online_settings(cfg, "halfcheetah"), 0)
    model.learn(130)  # 100-step episodes: the second one is 30 steps in
    data = buffer_transitions(model)
    assert len(data) == 130
    assert data.timeouts[99] and data.timeouts[129]
    assert data.timeouts.sum() == 2 and data.terminals.sum() == 0
    # a prefix cut mid-episode also ends in a timeout
    prefix = buffer_transitions(model, 57)
    assert prefix.timeouts[-1] and prefix.timeouts.sum() == 1


def test_dataset_actions_are_in_the_env_range(make_tiny_config):
    """SB3 stores actions scaled to [-1, 1]; datasets hold them in the env's range (humanoid: +-0.4)."""
    cfg = make_tiny_config(["humanoid"])
    model = build_sac(online_settings(cfg, "humanoid"), 0)
    model.learn(120)
    data = buffer_transitions(model)
    assert np.all(np.abs(data.actions) <= 0.4 + 1e-6)
    assert np.abs(data.actions).max() > 0.3


def test_online_outputs(hopper_run):
    cfg, out, summary = hopper_run
    curve = pd.read_csv(out / "curve.csv")
    scores = curve[curve.metric == "score"]
    assert scores.env_step.tolist() == [500, 1000, 1500, 2000]
    assert (scores.episodes == 2).all()
    assert summary["pauses"] == [1000, 2000]
    for pause in summary["pauses"]:
        d = out / f"pause_{pause}"
        transitions, meta = load_transitions(d / "dataset_buffer.h5")
        assert len(transitions) + meta["dropped_one_step_timeout_episodes"] == pause
        assert meta["pause"] == pause and meta["strategy"] == "buffer"
        val = json.loads((d / "validation.json").read_text())
        # online validation: charged exactly online_fraction x T; evaluates what that pays for
        assert val["charged_env_steps"] == round(0.1 * 2000)
        assert 0 < val["actual_env_steps"] <= val["charged_env_steps"]
        assert len(val["candidates"]) == 2  # 200 steps pay for two 1-episode checks of 100 steps
        assert val["candidates"][-1] == pause and val["last_step"] == pause
        assert val["best_score"] == max(val["scores"])
        assert val["best_step"] == val["candidates"][int(np.argmax(val["scores"]))]
        assert (d / "policy_best.pt").exists() and (d / "policy_last.pt").exists()
    assert not (out / "checkpoint").exists()
    assert summary["timings"]["train_steps_per_second"] > 0
    assert_provenance(summary["provenance"], cfg)


def assert_provenance(record: dict, cfg: dict) -> None:
    """A job's provenance block: package, this checkout's commit, its config's digest, host and times."""
    from replication.plan import provenance

    assert record["git"]["commit"] == provenance.git_state()["commit"] and record["package"]
    assert record["config_sha256"] == provenance.config_digest(cfg)
    assert record["host"] and record["start"] and record["wall_seconds"] >= 0


def test_control_is_the_best_snapshot_at_the_best_of_ledger_step(hopper_run):
    """C1's control: the best snapshot's reporting evaluation, charged the buffer best-of recommendation's
    ledger, at every pause where that recommendation exists (not at 1.0 x T: it would overdraw)."""
    from replication import cli
    from replication.plan.variants import OfflineDataset, recommendation_ledger

    cfg, out, summary = hopper_run
    assert not (out / "control.csv").exists()  # its own job, on the finished run
    config_file = out.parent / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    args = ["control", "--config", str(config_file), "--env", "hopper", "--seed", "0", "--online", str(out)]
    assert cli.main(args) == 0
    control = pd.read_csv(out / "control.csv", keep_default_na=False)
    assert set(control["stage"]) == {"recommend"} and set(control["algo"]) == {"sac"}
    assert set(control["selection"]) == {"online"} and set(control["validation"]) == {"full"}
    assert set(control["dataset"]) == {""}
    pauses = sorted(set(control["pause"]))
    assert pauses == [1000]  # the 2000 = T pause has no validated recommendation
    score = control[control["metric"] == "score"].iloc[0]
    records = json.loads((out / "pause_1000" / "eval_best.json").read_text())
    assert score["value"] == pytest.approx(np.mean([r["score"] for r in records]))
    assert score["episodes"] == len(records)
    best_of = recommendation_ledger(cfg, "hopper", OfflineDataset("buffer", 1000), "full", "best-of")
    assert score["env_step"] == best_of.spent
    ledger = json.loads((out / "pause_1000" / "ledger_control.json").read_text())
    assert ledger["by_category"] == best_of.by_category()
    assert_provenance(json.loads((out / "control.json").read_text())["provenance"], cfg)


def test_newdata_charges_exactly_n_steps(hopper_run, tmp_path):
    cfg, out, _ = hopper_run
    for eps in (0.0, 0.5):
        meta = build_newdata(cfg, "hopper", 0, out, "best", eps, tmp_path / f"nd{eps}.h5")
        transitions, _ = load_transitions(tmp_path / f"nd{eps}.h5")
        assert meta["charged_env_steps"] == cfg["newdata"]["size"] == 300
        assert len(transitions) + meta["dropped_one_step_timeout_episodes"] == 300
        assert meta["collector"] == "best" and meta["epsilon"] == eps
        assert_provenance(meta["provenance"], cfg)
        assert transitions.timeouts[-1] or transitions.terminals[-1]
    a, _ = load_transitions(tmp_path / "nd0.0.h5")
    b, _ = load_transitions(tmp_path / "nd0.5.h5")
    assert not np.array_equal(a.actions, b.actions)


def test_candidates_are_evenly_spaced():
    snaps = list(range(250, 2001, 250))
    assert select_candidates(snaps, 2000, 4) == [500, 1000, 1500, 2000]
    assert select_candidates(snaps, 1000, 3) == [250, 500, 1000]
    assert select_candidates(snaps, 1000, 1) == [1000]


def killed_after_checkpoint(cfg: dict, out, count: int) -> None:
    """Run the online phase of hopper seed 0 into ``out`` and stop it as a kill would, right after its
    ``count``-th checkpoint."""
    original = OnlineRun.save_checkpoint
    saved = {"n": 0}

    def save_then_crash(self, model, state):
        original(self, model, state)
        saved["n"] += 1
        if saved["n"] == count:
            raise KeyboardInterrupt(f"simulated kill after checkpoint {count}")

    OnlineRun.save_checkpoint = save_then_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            run_online(cfg, "hopper", 0, out, progress=False)
    finally:
        OnlineRun.save_checkpoint = original


def test_resume_gives_identical_results(hopper_run, tmp_path):
    """A run killed after a checkpoint and restarted ends with the same numbers as one uninterrupted."""
    cfg, reference, _ = hopper_run
    killed_after_checkpoint(cfg, tmp_path / "run", 2)
    assert (tmp_path / "run" / "checkpoint" / "meta.json").exists()
    summary = run_online(cfg, "hopper", 0, tmp_path / "run", progress=False)
    assert summary["resumed_from"] == [1400]
    pd.testing.assert_frame_equal(pd.read_csv(reference / "curve.csv"), pd.read_csv(tmp_path / "run" / "curve.csv"))
    for pause in (1000, 2000):
        a = json.loads((reference / f"pause_{pause}" / "dataset_buffer.h5.json").read_text())
        b = json.loads((tmp_path / "run" / f"pause_{pause}" / "dataset_buffer.h5.json").read_text())
        assert a["sha256"] == b["sha256"]
        va = json.loads((reference / f"pause_{pause}" / "validation.json").read_text())
        vb = json.loads((tmp_path / "run" / f"pause_{pause}" / "validation.json").read_text())
        assert va == vb


def test_resume_past_a_pause_after_its_outputs_were_deleted(hopper_run, tmp_path):
    """Killed right after the checkpoint at a pause point (where evaluation and validation ran too),
    its declared pause outputs deleted as Snakemake does before rerunning an unfinished job: the
    rerun, which resumes past that pause, writes them again, and everything equals the uninterrupted run."""
    cfg, reference, _ = hopper_run
    cfg = copy.deepcopy(cfg)
    pause = 1000
    cfg["online"]["checkpoint_interval"] = pause  # the first checkpoint falls on the first pause
    run = tmp_path / "run"
    killed_after_checkpoint(cfg, run, 1)
    for name in ("dataset_buffer.h5", "validation.json"):  # the rule's outputs of that pause
        (run / f"pause_{pause}" / name).unlink(missing_ok=True)
    summary = run_online(cfg, "hopper", 0, run, progress=False)
    assert summary["resumed_from"] == [pause]
    assert (run / "curve.csv").read_bytes() == (reference / "curve.csv").read_bytes()
    for p in (1000, 2000):
        for name in ("dataset_buffer.h5", "validation.json", "eval_best.json"):
            assert (run / f"pause_{p}" / name).read_bytes() == (reference / f"pause_{p}" / name).read_bytes(), (p, name)
        for name in ("policy_best.pt", "policy_last.pt"):  # TorchScript archives name their temp file: compare weights
            a, b = (torch.jit.load(str(d / f"pause_{p}" / name)).state_dict() for d in (run, reference))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (p, name)
    assert not (run / "stage").exists() and not (run / "checkpoint").exists()


def test_a_checkpoint_of_other_settings_is_not_resumed(hopper_run, tmp_path):
    """A run whose settings changed (Snakemake reruns it) must not continue an old run's checkpoint;
    one cut short while being swapped in (only ``checkpoint.old`` complete) is still found."""
    import shutil

    from replication.agents import checkpoint
    from replication.plan import config

    cfg, _, _ = hopper_run
    run = OnlineRun(cfg, "hopper", 0, tmp_path / "run")
    changed = OnlineRun(config.deep_merge(cfg, {"online": {"learning_rate": 1e-3}}), "hopper", 0, tmp_path / "run")
    assert run.job_key() != changed.job_key()
    meta = {"key": run.job_key(), "num_timesteps": 0}
    old = run.ckpt_dir.with_name("checkpoint.old")
    checkpoint.write_checkpoint(run.ckpt_dir, run.job_key(), lambda tmp: meta)
    run.ckpt_dir.rename(old)  # killed between the two renames of a swap
    assert checkpoint.find_checkpoint(run.ckpt_dir, run.job_key())[0] == old
    assert changed.load_checkpoint() is None
    assert not old.exists() and not run.ckpt_dir.exists()  # discarded
    shutil.rmtree(tmp_path / "run")


def test_saved_buffer_dataset_round_trips(hopper_run, tmp_path):
    _, out, _ = hopper_run
    transitions, meta = load_transitions(out / "pause_1000" / "dataset_buffer.h5")
    again = save_dataset(transitions, tmp_path / "copy.h5", env="hopper", seed=0, pause=1000, strategy="buffer")
    assert again["sha256"] == meta["sha256"]


def test_pauses_are_invisible_to_sac(tmp_path):
    """A run with four pauses (datasets, validation, evaluation, checkpoints) ends as one plain learn of SAC."""
    import torch
    from stable_baselines3 import SAC

    cfg = tiny_config(["hopper"], budget={"pause_fractions": [0.25, 0.5, 0.75, 1.0]})
    run_online(cfg, "hopper", 0, tmp_path / "run", progress=False)
    paused = SAC.load(tmp_path / "run" / "model.zip", device="cpu")
    assert sorted(p.name for p in (tmp_path / "run").glob("pause_*")) == [
        "pause_1000",
        "pause_1500",
        "pause_2000",
        "pause_500",
    ]

    plain = build_sac(online_settings(cfg, "hopper"), 0)
    plain.learn(2000, log_interval=None)
    a, b = paused.policy.state_dict(), plain.policy.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), f"SAC parameter {key} differs after the pauses"
    assert torch.equal(paused.log_ent_coef, plain.log_ent_coef)
