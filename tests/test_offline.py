"""The offline subroutine on a real short online run: training, offline validation, exports, recommendation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from replication.agents.datasets import (
    DatasetError,
    Transitions,
    load_dataset,
    load_transitions,
    metadata_path,
    save_dataset,
    sha256_of,
)
from replication.agents.envs import make_env
from replication.agents.evaluation import EpisodeRecord, Evaluator
from replication.agents.job import check_dataset
from replication.agents.learners import (
    ALGOS,
    ReturnsToGoPicker,
    build_learner,
    export_policy,
    failure_return,
    load_learner,
    offline_buffer,
    offline_policy,
    prepare,
    quiet_d3rlpy,
    replay_buffer,
    train,
    transition_picker,
)
from replication.agents.offline import checkpoint_steps, run_offline
from replication.agents.policies import load_policy
from replication.io import read_json, write_json
from replication.plan import config, provenance
from replication.plan.ledger import Ledger
from replication.plan.settings import learner_settings, sparse_failure_reward
from replication.plan.variants import OfflineDataset
from tests.conftest import tiny_config

# Trains agents: the slow tier.
pytestmark = pytest.mark.slow

TINY = {"gradient_steps": 60, "hidden_units": [32, 32], "batch_size": 32}
PAUSE = 1000  # tiny_config pauses at 0.5 and 1.0 of T = 2000


def offline_config(envs: list[str], **overrides):
    """tiny_config with tiny offline learners and 3 offline validation checkpoints (0.15 x 2000 / 100)."""
    base = {
        "analysis": {"c4": {"enabled": False}},  # no fine-tuning here, so no C4 extension
        "validation": {"offline_fraction": 0.15},
        "offline": {algo: dict(TINY) for algo in ALGOS},
    }
    return tiny_config(envs, **config.deep_merge(base, overrides))


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    from replication.agents.online import run_online

    cfg = offline_config(["hopper"])
    out = tmp_path_factory.mktemp("online") / "hopper"
    run_online(cfg, "hopper", 0, out, progress=False)
    return cfg, out


@pytest.fixture(scope="module")
def runs(online, tmp_path_factory):
    cfg, online_dir = online
    root = tmp_path_factory.mktemp("offline")
    dataset = OfflineDataset("buffer", PAUSE)
    data = online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5"
    out = {}
    for algo in ALGOS:
        summary = run_offline(cfg, "hopper", 0, algo, data, online_dir, dataset, root / algo, progress=False)
        out[algo] = (root / algo, summary)
    return out


# --- training and outputs -------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_each_algorithm_trains_and_writes_its_outputs(runs, algo):
    out, summary = runs[algo]
    for name in (
        "learnable_best.d3",
        "learnable_last.d3",
        "policy_best.pt",
        "policy_last.pt",
        "validation.json",
        "recommend.csv",
        "records.json",
        "offline.json",
        "ledger_full_offline.json",
        "ledger_full_best-of.json",
        "ledger_none_offline.json",
    ):
        assert (out / name).exists(), name
    assert not list(out.glob("*candidate*")) and not list(out.glob(".*tmp*"))
    saved = read_json(out / "offline.json")
    assert saved["algo"] == algo and saved["gradient_steps"] == 60 and saved["checkpoints"] == [20, 40, 60]
    assert saved["device"] == "cpu" and saved["timings"]["gradient_steps_per_second"] > 0
    assert saved["dataset"] == "buffer" and saved["pause"] == PAUSE and saved["skipped_variants"] == {}
    assert saved["provenance"]["git"] == provenance.git_state() and saved["provenance"]["wall_seconds"] > 0
    assert summary["best_step"] == saved["best_step"]
    # no d3rlpy log directory anywhere near the run
    assert not list(out.parent.rglob("d3rlpy_logs"))


@pytest.mark.parametrize("algo", ALGOS)
def test_validation_picks_the_highest_scoring_checkpoint(runs, online, algo):
    cfg, _ = online
    out, _ = runs[algo]
    val = read_json(out / "validation.json")
    scores = val["scores"]
    assert val["checkpoints"] == [20, 40, 60] and len(scores) == 3
    for step, score in zip(val["checkpoints"], scores, strict=True):
        assert score == pytest.approx(np.mean([r["score"] for r in val["records"][str(step)]]))
    assert val["best_step"] == val["checkpoints"][int(np.argmax(scores))]  # argmax: the earliest on ties
    assert val["best_score"] == max(scores) and val["last_step"] == 60 and val["last_score"] == scores[-1]
    # the kept best policy is that checkpoint: re-validated on the same seeds it scores the same
    v = cfg["validation"]
    validator = Evaluator("hopper", 0, v["episodes"], v["seed_offset"], cfg["env_options"]["hopper"])
    assert np.mean([r.score for r in validator(offline_policy(out))]) == pytest.approx(val["best_score"])
    # and the kept best learner is the same network as the best policy
    data, _ = load_transitions(read_json(out / "offline.json")["dataset_file"])
    best = load_learner(out, "best")
    assert best.grad_step == val["best_step"]
    obs = data.observations[:128]
    np.testing.assert_allclose(best.predict(obs), load_policy(out / "policy_best.pt").batch(obs), atol=1e-5)


@pytest.mark.parametrize("algo", ALGOS)
def test_validation_is_charged_its_fraction_of_the_budget(runs, algo):
    out, _ = runs[algo]
    val = read_json(out / "validation.json")
    assert val["charged_env_steps"] == round(0.15 * 2000)
    spent = sum(r["length"] for recs in val["records"].values() for r in recs)
    assert val["actual_env_steps"] == spent <= val["charged_env_steps"]


def test_exported_policy_gives_the_learners_actions(runs):
    out, _ = runs["cql"]
    data, _ = load_transitions(read_json(out / "offline.json")["dataset_file"])
    learner = load_learner(out, "last")
    assert learner.grad_step == 60
    obs = data.observations[::7][:200]
    expected = learner.predict(obs)
    np.testing.assert_allclose(load_policy(out / "policy_last.pt").batch(obs), expected, atol=1e-5)
    space = make_env("hopper", 0).action_space
    assert np.all(expected >= space.low - 1e-6) and np.all(expected <= space.high + 1e-6)


def plain_fit(cfg: dict, algo: str, dataset, seed: int, n_steps: int, steps_per_epoch: int):
    """A fresh Hopper learner ``algo`` trained by d3rlpy's own ``fit`` on ``dataset``, after ``d3rlpy.seed(seed)``."""
    import d3rlpy

    d3rlpy.seed(seed)
    learner = build_learner(learner_settings(cfg, "hopper", algo), "cpu")
    learner.fit(
        dataset,
        n_steps=n_steps,
        n_steps_per_epoch=steps_per_epoch,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        show_progress=False,
    )
    return learner


def test_a_run_with_checkpoints_trains_exactly_like_a_plain_fit(runs):
    """Validation between checkpoints does not touch training: the last learner is a plain fit's."""
    quiet_d3rlpy()

    out, _ = runs["iql"]
    saved = read_json(out / "offline.json")
    dataset, _ = load_dataset(saved["dataset_file"])
    obs = load_transitions(saved["dataset_file"])[0].observations[:128]
    learner = plain_fit(offline_config(["hopper"]), "iql", dataset, seed=0, n_steps=60, steps_per_epoch=60)
    np.testing.assert_array_equal(load_learner(out, "last").predict(obs), learner.predict(obs))


# --- recommendation -----------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_recommend_rows_are_the_variants_at_their_ledger_steps(runs, online, algo):
    cfg, online_dir = online
    out, summary = runs[algo]
    df = pd.read_csv(out / "recommend.csv", keep_default_na=False)
    assert set(df["stage"]) == {"recommend"} and set(df["algo"]) == {algo} and set(df["dataset"]) == {"buffer"}
    assert set(zip(df["validation"], df["selection"], strict=True)) == {
        ("full", "offline"),
        ("full", "best-of"),
        ("none", "offline"),
    }
    assert set(df["pause"]) == {PAUSE}
    expected_steps = {
        ("full", "offline"): PAUSE + 300,
        ("full", "best-of"): PAUSE + 200 + 300,
        ("none", "offline"): PAUSE,
    }
    records = read_json(out / "records.json")
    for (validation, selection), group in df.groupby(["validation", "selection"]):
        ledger = Ledger.load(out / f"ledger_{validation}_{selection}.json")
        assert set(group["env_step"]) == {ledger.spent} == {expected_steps[(validation, selection)]}
        score = group.loc[group["metric"] == "score", "value"].item()
        eps = records[f"{validation}/{selection}"]["records"]
        assert len(eps) == cfg["evaluation"]["episodes"] == group.loc[group["metric"] == "score", "episodes"].item()
        assert score == pytest.approx(np.mean([r["score"] for r in eps]))
    # best-of: the better validation score, online kept on ties
    online_val = read_json(online_dir / f"pause_{PAUSE}" / "validation.json")
    offline_val = read_json(out / "validation.json")
    chosen = summary["best_of"]["chosen"]
    assert chosen == ("offline-best" if offline_val["best_score"] > online_val["best_score"] else "online-best")
    best_of = records["full/best-of"]["records"]
    if chosen == "online-best":
        assert best_of == read_json(online_dir / f"pause_{PAUSE}" / "eval_best.json")
    else:
        assert best_of == records["full/offline"]["records"]


@pytest.mark.parametrize("case", ["middle-best-beats-online", "tie-with-online"])
def test_best_checkpoint_and_best_of_choice_follow_the_validation_scores(online, tmp_path, monkeypatch, case):
    """Scripted validation scores: the best is the earliest highest; best-of keeps online on a tie."""
    import replication.agents.offline as offline

    cfg, online_dir = online
    online_score = read_json(online_dir / f"pause_{PAUSE}" / "validation.json")["best_score"]
    scripted = [1.0, 1e9, 1e9] if case == "middle-best-beats-online" else [online_score] * 3
    calls = iter(scripted)
    monkeypatch.setattr(offline, "mean_score", lambda records: next(calls))
    data = online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5"
    summary = run_offline(cfg, "hopper", 0, "iql", data, online_dir, BUFFER, tmp_path)
    val = read_json(tmp_path / "validation.json")
    assert val["scores"] == scripted
    expected_best = 40 if case == "middle-best-beats-online" else 20
    assert val["best_step"] == summary["best_step"] == expected_best
    # the kept best learner and policy are that checkpoint's, not the last one's
    best, last = load_learner(tmp_path, "best"), load_learner(tmp_path, "last")
    assert best.grad_step == expected_best and last.grad_step == 60
    obs, _ = load_transitions(data)
    obs = obs.observations[:128]
    np.testing.assert_allclose(load_policy(tmp_path / "policy_best.pt").batch(obs), best.predict(obs), atol=1e-5)
    assert not np.allclose(best.predict(obs), last.predict(obs))
    records = read_json(tmp_path / "records.json")
    if case == "middle-best-beats-online":
        assert summary["best_of"]["chosen"] == "offline-best"
        assert records["full/best-of"]["records"] == records["full/offline"]["records"]
    else:
        assert summary["best_of"]["chosen"] == "online-best"
        assert records["full/best-of"]["records"] == read_json(online_dir / f"pause_{PAUSE}" / "eval_best.json")


def test_full_offline_is_the_reporting_evaluation_of_the_best_policy(runs, online):
    cfg, _ = online
    out, _ = runs["iql"]
    e = cfg["evaluation"]
    evaluator = Evaluator("hopper", 0, e["episodes"], e["seed_offset"], cfg["env_options"]["hopper"])
    again = [json.loads(json.dumps(r.__dict__)) for r in evaluator(offline_policy(out / "policy_best.pt"))]
    assert again == read_json(out / "records.json")["full/offline"]["records"]


def test_validated_variants_that_overdraw_the_budget_are_left_out(online, tmp_path):
    """At the 1.0 x T pause online training spends all of T: only the unvalidated variant exists."""
    cfg, online_dir = online
    cfg = config.deep_merge(cfg, {"offline": {"iql": {"gradient_steps": 6}}})
    data = online_dir / "pause_2000" / "dataset_buffer.h5"
    (tmp_path / "ledger_full_best-of.json").write_text("{}")  # a stale output of an earlier run
    summary = run_offline(cfg, "hopper", 0, "iql", data, online_dir, OfflineDataset("buffer", 2000), tmp_path)
    assert set(summary["skipped_variants"]) == {"full/offline", "full/best-of"}
    df = pd.read_csv(tmp_path / "recommend.csv", keep_default_na=False)
    assert set(zip(df["validation"], df["selection"], strict=True)) == {("none", "offline")}
    assert set(df["env_step"]) == {2000}
    assert not (tmp_path / "ledger_full_best-of.json").exists() and (tmp_path / "ledger_none_offline.json").exists()
    with pytest.raises(ValueError, match="holds the run's inputs"):
        run_offline(cfg, "hopper", 0, "iql", data, online_dir, OfflineDataset("buffer", 2000), data.parent)
    assert (data.parent / "policy_best.pt").exists()


# --- datasets that must be refused -----------------------------------------------------------------


def _copy_dataset(src, dst):
    dst.write_bytes(src.read_bytes())
    metadata_path(dst).write_text(metadata_path(src).read_text())
    return dst


BUFFER = OfflineDataset("buffer", PAUSE)


def _refused(cfg, online_dir, data, out, match, dataset=BUFFER):
    with pytest.raises(DatasetError, match=match):
        run_offline(cfg, "hopper", 0, "iql", data, online_dir, dataset, out)
    assert not (out / "offline.json").exists() and not (out / "learnable_last.d3").exists()


def test_a_tampered_dataset_is_refused(online, tmp_path):
    cfg, online_dir = online
    data = _copy_dataset(online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5", tmp_path / "d.h5")
    meta = read_json(metadata_path(data))
    write_json(metadata_path(data), {**meta, "sha256": "0" * 64})
    _refused(cfg, online_dir, data, tmp_path / "out", "content hash")


def test_a_dataset_of_another_shape_or_env_or_pause_is_refused(online, tmp_path):
    cfg, online_dir = online
    src = online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5"
    t, meta = load_transitions(src)
    keep = {k: meta[k] for k in ("env", "seed", "pause", "strategy")}
    narrow = Transitions(t.observations[:, :5], t.actions, t.rewards, t.terminals, t.timeouts)
    save_dataset(narrow, tmp_path / "narrow.h5", **keep)
    _refused(cfg, online_dir, tmp_path / "narrow.h5", tmp_path / "o1", r"observations have shape \(5,\)")
    save_dataset(t, tmp_path / "walker.h5", **{**keep, "env": "walker2d"})
    _refused(cfg, online_dir, tmp_path / "walker.h5", tmp_path / "o2", "made for environment 'walker2d'")
    _refused(cfg, online_dir, src, tmp_path / "o3", "made at pause 1000, expected 2000", OfflineDataset("buffer", 2000))
    wide = Transitions(t.observations, t.actions * 2.0, t.rewards, t.terminals, t.timeouts)
    save_dataset(wide, tmp_path / "wide.h5", **keep)
    _refused(cfg, online_dir, tmp_path / "wide.h5", tmp_path / "o4", "outside the env's range")


def test_a_broken_episode_structure_is_refused(online, tmp_path):
    import d3rlpy

    cfg, online_dir = online
    t, _ = load_transitions(online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5")
    both = Transitions(t.observations, t.actions, t.rewards, t.terminals, t.timeouts.copy())
    both.timeouts[np.flatnonzero(both.terminals)[0]] = True
    with pytest.raises(DatasetError, match="both terminal and timeout"):
        check_dataset(both, "hopper", cfg)
    trailing = Transitions(t.observations, t.actions, t.rewards, t.terminals.copy(), t.timeouts.copy())
    trailing.terminals[-3:] = trailing.timeouts[-3:] = False
    with pytest.raises(DatasetError, match="trailing steps would be lost"):
        check_dataset(trailing, "hopper", cfg)
    # a file written by d3rlpy directly, which silently drops the trailing steps, with an honest hash
    path = tmp_path / "dropped.h5"
    d3rlpy.dataset.MDPDataset(
        trailing.observations,
        trailing.actions,
        trailing.rewards[:, None],
        trailing.terminals.astype(np.float32),
        trailing.timeouts.astype(np.float32),
        action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
    ).dump(str(path))
    write_json(
        metadata_path(path), {"env": "hopper", "pause": PAUSE, "transitions": len(trailing), "sha256": sha256_of(path)}
    )
    _refused(cfg, online_dir, path, tmp_path / "out", "metadata says")


# --- actions in the env's range (Humanoid: +-0.4) ---------------------------------------------------


def test_humanoid_policies_act_in_its_range(tmp_path):
    quiet_d3rlpy()
    import d3rlpy

    cfg = offline_config(["humanoid"])
    env = make_env("humanoid", 0)
    obs_dim, low, high = env.observation_space.shape[0], env.action_space.low, env.action_space.high
    assert np.allclose(high, 0.4) and np.allclose(low, -0.4)
    rng = np.random.default_rng(0)
    n = 240
    ends = np.zeros(n, dtype=bool)
    ends[59::60] = True
    t = Transitions(
        rng.normal(size=(n, obs_dim)),
        rng.uniform(low, high, size=(n, len(low))),
        rng.normal(size=n),
        np.zeros(n, dtype=bool),
        ends,
    )
    save_dataset(t, tmp_path / "h.h5", env="humanoid", seed=0, pause=PAUSE, strategy="buffer")
    data, meta = load_transitions(tmp_path / "h.h5")
    check_dataset(data, "humanoid", cfg, meta, OfflineDataset("buffer", PAUSE))
    d3rlpy.seed(0)
    buffer = offline_buffer(learner_settings(cfg, "humanoid", "cql"), data)
    learner = build_learner(learner_settings(cfg, "humanoid", "cql"), "cpu")
    prepare(learner, buffer)
    train(learner, buffer, 5)
    probe = np.concatenate([data.observations, 50.0 * rng.normal(size=(64, obs_dim)).astype(np.float32)])
    policy = export_policy(learner, tmp_path / "p.pt", probe)
    actions = policy.batch(probe)
    np.testing.assert_allclose(actions, learner.predict(probe), atol=1e-5)
    assert np.all(np.abs(actions) <= 0.4 + 1e-6)
    assert np.abs(actions).max() > 0.2  # extreme inputs reach the range's ends, scaled to +-0.4, not +-1
    # a humanoid dataset holding actions in [-1, 1] (policy space, not the env's) is refused
    policy_space = Transitions(t.observations, t.actions / 0.4, t.rewards, t.terminals, t.timeouts)
    with pytest.raises(DatasetError, match="outside the env's range"):
        check_dataset(policy_space, "humanoid", cfg)


# --- Cal-QL returns-to-go ---------------------------------------------------------------------------


def _episodes_buffer(rewards_per_episode, terminal_flags, picker=None, obs_dim=3):
    rewards = np.concatenate(rewards_per_episode).astype(np.float32)
    n = len(rewards)
    terminals, timeouts = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    end = 0
    for r, terminal in zip(rewards_per_episode, terminal_flags, strict=True):
        end += len(r)
        (terminals if terminal else timeouts)[end - 1] = True
    t = Transitions(np.random.default_rng(0).normal(size=(n, obs_dim)), np.zeros((n, 1)), rewards, terminals, timeouts)
    return replay_buffer(t, picker)


def _rtg(picker_buffer, episode_index, step, scaler=None, gamma=0.99):
    from d3rlpy.torch_utility import _compute_return_to_go

    episode = picker_buffer.episodes[episode_index]
    transition = picker_buffer.transition_picker(episode, step)
    return float(_compute_return_to_go(gamma, transition.rewards_to_go, scaler)[0])


def test_calql_returns_to_go_are_discounted_sums_of_the_stored_episode():
    """d3rlpy: RTG = sum_k gamma^k r_{t+k} over the stored suffix; a truncated episode gives a lower bound."""
    quiet_d3rlpy()
    rng = np.random.default_rng(1)
    episodes = [rng.uniform(0, 2, 12), rng.uniform(0, 2, 9), rng.uniform(0, 2, 5)]
    flags = [True, False, True]  # terminated, truncated (time limit or pause cut), terminated
    plain = _episodes_buffer(episodes, flags)
    fast_picker = ReturnsToGoPicker(0.99)
    fast = _episodes_buffer(episodes, flags, fast_picker)
    fast_picker.precompute(fast.episodes)
    for e, (r, terminal) in enumerate(zip(episodes, flags, strict=True)):
        # a truncated episode's last step is no transition (no next observation) but its reward counts
        assert plain.episodes[e].transition_count == len(r) - (0 if terminal else 1)
        for i in range(plain.episodes[e].transition_count):
            exact = sum(0.99**k * r[i + k] for k in range(len(r) - i))
            assert _rtg(plain, e, i) == pytest.approx(exact, rel=1e-5)
            assert _rtg(fast, e, i) == _rtg(plain, e, i)  # bit-identical


def test_calql_failure_return_on_sparse_binary_rewards():
    """Kitchen-sparse: a transition with no success ahead gets r_fail' / (1 - gamma); 0 with the defaults."""
    quiet_d3rlpy()
    import d3rlpy

    cfg = offline_config(["hopper"])
    assert sparse_failure_reward(cfg, "kitchen-sparse") == 0.0
    assert sparse_failure_reward(cfg, "kitchen") is None and sparse_failure_reward(cfg, "hopper") is None
    kitchen_binary = config.deep_merge(cfg, {"env_options": {"kitchen": {"reward": "binary"}}})
    assert sparse_failure_reward(kitchen_binary, "kitchen") == 0.0
    assert (
        transition_picker(learner_settings(cfg, "hopper", "calql")) is None
        and transition_picker(learner_settings(cfg, "kitchen-sparse", "cql")) is None
    )

    failed, success = np.zeros(10), np.r_[np.zeros(7), 1.0]  # Kitchen ends the episode on success
    flags = [False, True]
    # defaults (scale 1, bias 0): the failure return is 0, the discounted sum of the stored zeros
    params = config.offline_params(cfg, "kitchen-sparse", "calql")
    assert failure_return(params, 0.0) == 0.0
    picker = transition_picker(learner_settings(cfg, "kitchen-sparse", "calql"))
    assert isinstance(picker, d3rlpy.dataset.SparseRewardTransitionPicker)
    sparse, plain = _episodes_buffer([failed, success], flags, picker), _episodes_buffer([failed, success], flags)
    for e, n in ((0, 9), (1, 8)):
        for i in range(n):
            assert _rtg(sparse, e, i) == _rtg(plain, e, i)
    assert _rtg(sparse, 1, 0) == pytest.approx(0.99**7)

    # with a reward bias the failure return is the scaled failure reward over an infinite horizon
    biased = config.deep_merge(cfg, {"offline": {"calql": {"reward_scale": 2.0, "reward_bias": -1.0}}})
    params = config.offline_params(biased, "kitchen-sparse", "calql")
    scaler = d3rlpy.preprocessing.ConstantShiftRewardScaler(shift=-1.0, multiplier=2.0, multiply_first=True)
    picker = transition_picker(learner_settings(biased, "kitchen-sparse", "calql"))
    sparse = _episodes_buffer([failed, success], flags, picker)
    for i in range(9):
        assert _rtg(sparse, 0, i, scaler) == pytest.approx(-1.0 / 0.01, rel=1e-6)
    exact = sum(0.99**k * (2.0 * success[k] - 1.0) for k in range(8))
    assert _rtg(sparse, 1, 0, scaler) == pytest.approx(exact, rel=1e-5)
    # the precomputing picker applies the same rule (without a scaler, where it is used)
    fast_picker = ReturnsToGoPicker(
        0.99, (0.0, failure_return(config.offline_params(cfg, "kitchen-sparse", "calql"), 0.0))
    )
    fast = _episodes_buffer([failed, success], flags, fast_picker)
    fast_picker.precompute(fast.episodes)
    plain_sparse = _episodes_buffer(
        [failed, success], flags, transition_picker(learner_settings(cfg, "kitchen-sparse", "calql"))
    )
    for e, n in ((0, 9), (1, 8)):
        for i in range(n):
            assert _rtg(fast, e, i) == _rtg(plain_sparse, e, i)


def test_precomputed_returns_train_exactly_like_d3rlpy(online):
    """Cal-QL with ReturnsToGoPicker, with d3rlpy's picker, and d3rlpy's own fit: the same network."""
    quiet_d3rlpy()
    import d3rlpy

    cfg, online_dir = online
    data, _ = load_transitions(online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5")
    obs = data.observations[:64]

    def ours(precompute: bool) -> np.ndarray:
        buffer = offline_buffer(learner_settings(cfg, "hopper", "calql"), data, precompute)
        d3rlpy.seed(3)
        learner = build_learner(learner_settings(cfg, "hopper", "calql"), "cpu")
        prepare(learner, buffer)
        train(learner, buffer, 20)
        return learner.predict(obs)

    buffer, _ = load_dataset(online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5")  # d3rlpy's own picker
    learner = plain_fit(cfg, "calql", buffer, seed=3, n_steps=20, steps_per_epoch=10)
    np.testing.assert_array_equal(ours(True), ours(False))
    np.testing.assert_array_equal(ours(True), learner.predict(obs))


# --- small parts ------------------------------------------------------------------------------------


def test_checkpoint_steps_are_evenly_spaced_and_end_at_G():
    assert checkpoint_steps(60, 3) == [20, 40, 60]
    assert checkpoint_steps(10, 4) == [3, 5, 8, 10]  # 2.5 and 7.5 round up
    assert checkpoint_steps(1_000_000, 3) == [333333, 666667, 1_000_000]
    assert checkpoint_steps(2, 5) == [1, 2]
    with pytest.raises(ValueError):
        checkpoint_steps(10, 0)


def test_iql_needs_one_learning_rate_for_q_and_v():
    cfg = offline_config(["hopper"], offline={"iql": {"value_learning_rate": 1e-3}})
    with pytest.raises(ValueError, match="one optimiser"):
        build_learner(learner_settings(cfg, "hopper", "iql"), "cpu")


def test_episode_records_round_trip(runs):
    out, _ = runs["calql"]
    for entry in read_json(out / "records.json").values():
        assert all(EpisodeRecord(**r).length > 0 for r in entry["records"])


@pytest.mark.parametrize("algo", ["cql", "calql"])
def test_max_q_backup_reaches_d3rlpy_and_backs_up_the_max(online, algo):
    """offline.<algo>.max_q_backup reaches d3rlpy, whose target is then max_j min_i Q'_i(s', a_j), a_j ~ pi(s')."""
    import torch
    from d3rlpy.torch_utility import TorchMiniBatch

    quiet_d3rlpy()
    cfg, online_dir = online
    data, _ = load_transitions(online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5")
    buffer = offline_buffer(learner_settings(cfg, "hopper", algo), data)
    np.random.seed(0)
    batch = buffer.sample_transition_batch(16)
    targets = {}
    for flag in (True, False):
        learner = build_learner(
            learner_settings(offline_config(["hopper"], offline={algo: {"max_q_backup": flag}}), "hopper", algo), "cpu"
        )
        prepare(learner, buffer)
        assert learner.config.max_q_backup is flag and learner.impl._max_q_backup is flag
        c, m = learner.config, learner.impl.modules
        tb = TorchMiniBatch.from_batch(
            batch, c.gamma, learner.need_returns_to_go, learner.impl.device, None, c.action_scaler, c.reward_scaler
        )
        torch.manual_seed(1)
        targets[flag] = learner.impl.compute_target(tb)
        torch.manual_seed(1)
        with torch.no_grad():
            out = m.policy(tb.next_observations)
            if flag:  # the reference's max-target backup, by hand
                raw = torch.distributions.Normal(out.mu, out.logstd.exp()).rsample((c.n_action_samples,))
                actions = torch.tanh(raw)
            else:  # d3rlpy's default: the policy's mean action
                actions = torch.tanh(out.mu)[None]
            q = torch.stack(
                [
                    torch.stack([qf(tb.next_observations, a).q_value for qf in m.targ_q_funcs]).min(0).values
                    for a in actions
                ]
            )
            expected = q.max(0).values
        torch.testing.assert_close(targets[flag], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(targets[True], targets[False]), "the max backup must differ from the mean-action one"


# --- resuming after a kill ------------------------------------------------------------------------


def test_a_killed_offline_job_resumes_to_identical_outputs(online, tmp_path):
    """SIGKILL the job (IQL then Cal-QL) during Cal-QL, after its first checkpoint; the same command
    keeps the finished IQL learner, resumes Cal-QL and ends with the uninterrupted job's outputs."""
    from tests.resume_helpers import checkpointed, command, differing, kill_after, run, write_config

    cfg, online_dir = online
    cfg = config.deep_merge(cfg, {"offline": {"checkpoint_interval": 100, "calql": {"gradient_steps": 1000}}})
    cfg = config.resolve(cfg)
    data = online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5"
    args = ["--config", str(write_config(cfg, tmp_path / "config.yaml")), "--env", "hopper", "--seed", "0"]
    args += ["--algo", "iql,calql", "--dataset", f"buffer-p{PAUSE}", "--data", str(data), "--online", str(online_dir)]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run(command("offline", *args, "--out", str(whole)))
    assert not (whole / "calql" / "checkpoint").exists()  # removed when the job finishes

    kill_after(command("offline", *args, "--out", str(resumed)), checkpointed(resumed / "calql" / "checkpoint"))
    assert not (resumed / "calql" / "offline.json").exists() and (resumed / "iql" / "offline.json").exists()
    iql_done = (resumed / "iql" / "offline.json").stat().st_mtime_ns
    step = json.loads((resumed / "calql" / "checkpoint" / "meta.json").read_text())["grad_step"]
    assert 0 < step < 1000
    log = run(command("offline", *args, "--out", str(resumed))).stderr
    assert f"resumed from its checkpoint at gradient step {step}" in log
    assert (resumed / "iql" / "offline.json").stat().st_mtime_ns == iql_done  # IQL was not trained again
    assert read_json(resumed / "calql" / "offline.json")["resumed"] is True
    assert not (resumed / "calql" / "checkpoint").exists()
    outputs = [
        f"{algo}/{name}"
        for algo in ("iql", "calql")
        for name in ("validation.json", "records.json", "recommend.csv", "learnable_best.d3", "learnable_last.d3")
    ]
    assert not differing(whole, resumed, [*outputs, "recommend.csv"])


def test_a_checkpoint_of_other_settings_is_not_resumed(online, tmp_path):
    """A checkpoint left by a job of other settings (here: another seed's key) is discarded, not resumed."""
    from replication.agents import checkpoint

    cfg, online_dir = online
    cfg = config.resolve(config.deep_merge(cfg, {"offline": {"checkpoint_interval": 20}}))
    data = online_dir / f"pause_{PAUSE}" / "dataset_buffer.h5"
    stale = tmp_path / checkpoint.CHECKPOINT_DIR
    checkpoint.write_checkpoint(stale, "another job", lambda tmp: {"grad_step": 40})
    summary = run_offline(cfg, "hopper", 0, "iql", data, online_dir, BUFFER, tmp_path, progress=False)
    assert summary["resumed"] is False and not stale.exists()
