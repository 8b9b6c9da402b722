"""WSRL fine-tuning from tiny offline CQL and Cal-QL agents trained on a real short online run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from replication.agents import finetune as ft
from replication.agents import job
from replication.agents.datasets import load_transitions
from replication.agents.finetune import wsrl
from replication.agents.learners import build_learner, load_learner, quiet_d3rlpy
from replication.io import read_json
from replication.plan import config
from replication.plan.ledger import Ledger
from replication.plan.schema import ConfigError
from replication.plan.settings import finetune_settings, learner_settings, settings_of
from replication.plan.variants import finetune_ledger
from tests.test_finetune import REMAINING, CountSteps, T, ft_config, make_cell

# Trains agents: the slow tier.
pytestmark = pytest.mark.slow

WARMUP = 100  # of the REMAINING = 300 fine-tuning env steps


def wsrl_config(**options):
    return ft_config(finetune={"wsrl": {"warmup_steps": WARMUP, **options}})


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """An online run and offline CQL and Cal-QL agents on its buffer at the pause."""
    return make_cell(tmp_path_factory, wsrl_config(), tuple(wsrl.SOURCES))


def learner_of(root, algo):
    quiet_d3rlpy()
    return load_learner(root / algo, "best", "cpu")


class Recorder:
    """Wraps WSRLAgent's ``store`` and ``update``: env steps, updates per env step, batch composition."""

    def __init__(self, mp):
        self.steps = 0
        self.updates: dict[int, int] = {}
        self.online_rows: list[int] = []  # per batch: how many of its observations are online ones
        self.seen: set[bytes] = set()
        store, update = wsrl.WSRLAgent.store, wsrl.WSRLAgent.update
        recorder = self

        def recording_store(agent, obs, action, reward):
            recorder.steps += 1
            recorder.seen.add(np.asarray(obs, dtype=np.float32).tobytes())
            store(agent, obs, action, reward)

        def recording_update(agent, batch):
            recorder.updates[recorder.steps] = recorder.updates.get(recorder.steps, 0) + 1
            rows = np.asarray(batch.observations, dtype=np.float32)
            recorder.online_rows.append(sum(row.tobytes() in recorder.seen for row in rows))
            update(agent, batch)

        mp.setattr(wsrl.WSRLAgent, "store", recording_store)
        mp.setattr(wsrl.WSRLAgent, "update", recording_update)


def wsrl_run(cfg, root, data, out):
    """``run_finetune`` of WSRL with its env steps, updates and batches recorded."""
    real_make_env = job.make_env  # the training env: the job frame makes it
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job, "make_env", lambda *a, **k: CountSteps(real_make_env(*a, **k)))
        recorder = Recorder(mp)
        before = len(CountSteps.counts)
        source = settings_of(cfg, "wsrl").source
        summary = ft.run_finetune(cfg, "hopper", 0, "wsrl", root / source, data, out, progress=False)
        steps = CountSteps.counts[before:]
    assert len(steps) == 1
    return summary, steps[0], recorder


# --- the transfer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", wsrl.SOURCES)
def test_sac_holds_the_offline_actor_and_q_functions(cell, source):
    offline = learner_of(cell[1], source)
    sac = wsrl.transfer(offline, device="cpu")
    a, b = offline.impl.modules, sac.impl.modules
    # the offline target critic lags its critic, so copying the wrong one would show
    assert any(not torch.equal(x, y) for x, y in zip(a.q_funcs.parameters(), a.targ_q_funcs.parameters(), strict=True))
    assert len(b.q_funcs) == len(a.q_funcs) == offline.config.n_critics
    for name in ("policy", "q_funcs", "targ_q_funcs", "log_temp"):
        src, dst = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert list(src) == list(dst) and len(src) > 0, name
        for key in src:
            assert torch.equal(src[key], dst[key]), f"{name}.{key}"
            assert src[key].data_ptr() != dst[key].data_ptr(), f"{name}.{key} is shared, not copied"
    for i in range(len(a.q_funcs)):  # every Q-function of the ensemble, one by one
        assert all(torch.equal(x, y) for x, y in zip(a.q_funcs[i].parameters(), b.q_funcs[i].parameters(), strict=True))
    # same networks and settings; the batch size alone may differ
    for key in ("gamma", "tau", "actor_learning_rate", "critic_learning_rate", "temp_learning_rate", "n_critics"):
        assert getattr(sac.config, key) == getattr(offline.config, key), key
    assert wsrl.transfer(offline, batch_size=64).config.batch_size == 64
    # same actions: the greedy SAC is the greedy offline agent
    obs = load_transitions(cell[2])[0].observations[:8]
    np.testing.assert_array_equal(sac.predict(obs), offline.predict(obs))
    report = wsrl.check_transfer(offline, sac)
    assert all(r["equal"] for r in report.values())
    # the check really checks: a broken transfer is refused
    with torch.no_grad():
        next(b.targ_q_funcs[1].parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match="targ_q_funcs"):
        wsrl.check_transfer(offline, sac)


def test_iql_is_refused_as_source(cell):
    cfg = cell[0]
    quiet_d3rlpy()
    iql = build_learner(learner_settings(cfg, "hopper", "iql"), "cpu")
    iql.create_impl((11,), 3)
    transitions, _ = load_transitions(cell[2])
    with pytest.raises(TypeError, match=r"CQL or Cal-QL.*got IQL"):
        ft.build_agent(finetune_settings(cfg, "hopper", "wsrl"), iql, transitions, np.random.default_rng(0))
    # the configured source is the one accepted: a CQL agent where Cal-QL is configured is refused too
    with pytest.raises(TypeError, match="configured: calql"):
        ft.build_agent(
            finetune_settings(cfg, "hopper", "wsrl"), learner_of(cell[1], "cql"), transitions, np.random.default_rng(0)
        )


def test_a_warmup_without_updates_is_refused_early(cell, tmp_path):
    cfg, root, data = cell
    long = wsrl_config(warmup_steps=REMAINING)
    refused = r"finetune.wsrl.warmup_steps: 300 env steps without updates leave wsrl no update in the fine-tuning"
    with pytest.raises(ConfigError, match=refused + r" budget of hopper \(300 env steps\); lower .* to 299 or less"):
        ft.Finetune(long, "hopper", 0, "wsrl", root / "calql", data, tmp_path / "a")
    ft.Finetune(wsrl_config(warmup_steps=REMAINING - 1), "hopper", 0, "wsrl", root / "calql", data, tmp_path / "b")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("source", "iql"),
        ("warmup_steps", -1),
        ("updates_per_step", 0),
        ("actor_updates", "twice"),
        ("batch_size", 0),
        ("target_entropy", "x"),
        ("backup_entropy", "no"),
    ],
)
def test_bad_settings_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=f"finetune.wsrl.{key}"):
        wsrl_config(**{key: value})


def test_defaults():
    options = config.resolve({})["finetune"]["wsrl"]
    assert options == {
        "source": "calql",
        "warmup_steps": 5000,
        "updates_per_step": 4,
        "actor_updates": "once",
        "batch_size": None,
        "target_entropy": None,
        "backup_entropy": False,
        "keep_offline_data": False,
    }
    assert "wsrl" in config.resolve({})["finetune"]["methods"]  # the paper profile runs it (beyond the study)


def test_target_entropy_option(cell):
    from d3rlpy.models.torch.parameters import get_parameter

    offline = learner_of(cell[1], "calql")
    log_prob = torch.tensor([[1.5], [-0.5], [2.0]])
    for target, entropy in ((None, -3.0), (-3.0, -3.0), (2.0, 2.0)):  # None: -action_dim (hopper: 3)
        sac = wsrl.transfer(offline, device="cpu")
        wsrl.set_target_entropy(sac, target)
        temp = get_parameter(sac.impl.modules.log_temp).detach().exp()
        loss = sac.impl.update_temp(log_prob)
        torch.testing.assert_close(loss.detach(), -(temp * (log_prob + entropy)).mean())
        assert not torch.equal(get_parameter(sac.impl.modules.log_temp).detach().exp(), temp)


def test_backup_entropy_option(cell):
    from d3rlpy.algos.qlearning.torch.sac_impl import SACImpl
    from d3rlpy.models.torch import build_squashed_gaussian_distribution
    from d3rlpy.models.torch.parameters import get_parameter

    from replication.agents import learners

    learner = learner_of(cell[1], "calql")
    buffer = learners.replay_buffer(load_transitions(cell[2])[0])
    sac = wsrl.transfer(learner, device="cpu")
    batch = wsrl.torch_batch(sac, buffer.sample_transition_batch(16))
    impl = sac.impl

    def drawn(seed):  # the next action and its log-prob that a target computed after manual_seed(seed) draws
        torch.manual_seed(seed)
        with torch.no_grad():
            dist = build_squashed_gaussian_distribution(impl.modules.policy(batch.next_observations))
            action, log_prob = dist.sample_with_log_prob()
            return impl._targ_q_func_forwarder.compute_target(batch.next_observations, action, "min"), log_prob

    min_q, log_prob = drawn(0)
    temp = get_parameter(impl.modules.log_temp).detach().exp()
    torch.manual_seed(0)
    d3rlpy_target = SACImpl.compute_target(impl, batch)
    torch.testing.assert_close(d3rlpy_target, min_q - temp * log_prob)
    wsrl.set_backup_entropy(sac, True)  # d3rlpy's target, left as is
    torch.manual_seed(0)
    torch.testing.assert_close(impl.compute_target(batch), d3rlpy_target)
    wsrl.set_backup_entropy(sac, False)  # the reference's: the min target Q at the sampled next action
    torch.manual_seed(0)
    target = impl.compute_target(batch)
    torch.testing.assert_close(target, min_q)
    assert not torch.allclose(target, d3rlpy_target)


def test_one_env_step_is_utd_critic_updates_and_one_actor_update_on_their_union(cell):
    cfg, root, data = cell
    transitions, _ = load_transitions(data)
    agent = ft.build_agent(
        finetune_settings(cfg, "hopper", "wsrl"), learner_of(root, "calql"), transitions, np.random.default_rng(0)
    )
    rows = transitions.observations
    for i in range(40):
        agent.store(rows[i], np.zeros(3, dtype=np.float32), 0.0)
    agent.end_episode(False)
    impl, calls = agent.learner.impl, []
    for name in ("update_critic", "update_critic_target", "update_actor"):
        method = getattr(impl, name)

        def record(*args, _name=name, _method=method):
            calls.append((_name, args[0].observations.clone() if args else None))
            return _method(*args)

        setattr(impl, name, record)
    policy = [p.detach().clone() for p in impl.modules.policy.parameters()]
    for _ in range(3):
        agent.update(agent.batch())
    assert all(torch.equal(a, b) for a, b in zip(policy, impl.modules.policy.parameters(), strict=True))
    agent.update(agent.batch())
    assert not all(torch.equal(a, b) for a, b in zip(policy, impl.modules.policy.parameters(), strict=True))
    assert [name for name, _ in calls] == ["update_critic", "update_critic_target"] * 4 + ["update_actor"]
    minibatches = [obs for name, obs in calls if name == "update_critic"]
    assert all(len(obs) == 32 for obs in minibatches)
    torch.testing.assert_close(calls[-1][1], torch.cat(minibatches))  # the actor batch: 4 x 32 rows
    assert agent.counts == {"critic": 4, "actor": 1} and agent.learner.grad_step == 4 and not agent.pending
    assert agent.stats()["wsrl"]["actor_batch_size"] == 128


# --- fine-tuning runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(cell, tmp_path_factory):
    cfg, root, data = cell
    out = tmp_path_factory.mktemp("wsrl")
    rlpd = wsrl_config(keep_offline_data=True)
    cql = wsrl_config(source="cql", updates_per_step=2, batch_size=16, actor_updates="every")
    return {
        "wsrl": (out / "wsrl", *wsrl_run(cfg, root, data, out / "wsrl")),
        "rlpd": (out / "rlpd", *wsrl_run(rlpd, root, data, out / "rlpd")),
        "cql": (out / "cql", *wsrl_run(cql, root, data, out / "cql")),
    }


@pytest.mark.parametrize("run", ["wsrl", "rlpd", "cql"])
def test_wsrl_spends_exactly_the_remaining_budget_with_its_warmup(runs, cell, run):
    out, summary, env_steps, recorder = runs[run]
    before = finetune_ledger(cell[0], "hopper")
    assert before.remaining == REMAINING
    ledger = Ledger.load(out / "ledger.json")
    assert ledger.spent == ledger.total == T and ledger.remaining == 0
    assert ledger.by_category()["finetune"] == REMAINING
    assert env_steps == recorder.steps == summary["env_steps"] == REMAINING
    per_step = 2 if run == "cql" else 4
    # no update during the warm-up, then updates_per_step minibatches (critic updates) after every env step
    assert all(step > WARMUP for step in recorder.updates)
    assert recorder.updates == dict.fromkeys(range(WARMUP + 1, REMAINING + 1), per_step)
    critic = (REMAINING - WARMUP) * per_step
    assert summary["updates"] == critic == summary["final_grad_step"]
    # one actor update per env step on the union of its minibatches ("cql": every, one per minibatch)
    actor = critic if run == "cql" else REMAINING - WARMUP
    assert summary["wsrl"]["updates"] == {"critic": critic, "actor": actor}
    assert summary["wsrl"]["actor_batch_size"] == (16 if run == "cql" else 4 * 32)
    assert summary["wsrl"]["backup_entropy"] is False
    assert summary["updates_per_step"] == per_step
    stats = summary["wsrl"]
    assert stats["warmup_steps"] == WARMUP and stats["source"] == ("cql" if run == "cql" else "calql")
    assert summary["source_algo"] == stats["source"] and summary["start_grad_step"] > 0
    assert stats["batch_size"] == (16 if run == "cql" else 32)
    assert all(r["equal"] for r in stats["transfer"].values())
    assert (out / "learnable_final.d3").exists() and (out / "curve.csv").exists()


def test_wsrl_batches_hold_online_data_only(runs):
    _, summary, _, recorder = runs["wsrl"]
    assert recorder.online_rows and all(n == 32 for n in recorder.online_rows)
    assert summary["initial_buffer_transitions"] == 0 and "mixing" not in summary
    assert 0 < summary["buffer"]["online_transitions"] <= REMAINING


def test_keep_offline_data_gives_half_offline_batches(runs):
    _, summary, _, recorder = runs["rlpd"]
    assert recorder.online_rows and all(n == 16 for n in recorder.online_rows)
    mixing = summary["mixing"]
    assert mixing["rule"] == 0.5 and mixing["offline_fraction"] == 0.5
    assert summary["initial_buffer_transitions"] == mixing["offline_transitions"] > 0
    assert len(json.dumps(summary)) > 0


# --- resuming after a kill ------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [False, True])
def test_a_checkpoint_holds_the_sac_alone_and_refers_to_offline_episodes(cell, keep):
    from replication.agents import checkpoint

    cfg, root, data = cell
    cfg = wsrl_config(keep_offline_data=keep)
    transitions, _ = load_transitions(data)
    agent = ft.build_agent(
        finetune_settings(cfg, "hopper", "wsrl"), learner_of(root, "calql"), transitions, np.random.default_rng(0)
    )
    assert checkpoint.agent_learners(agent) == [agent.learner]  # the offline source is not kept
    episodes = checkpoint.buffer_episodes(agent)
    assert len(episodes) == (len(agent.offline_buffer.episodes) if keep else 0)
    assert agent.online_buffer.transition_count == 0 and agent.update_start == WARMUP


@pytest.mark.parametrize("keep", [False, True])
def test_a_killed_wsrl_job_resumes_to_identical_outputs(cell, tmp_path, keep):
    """SIGKILL mid-run after a checkpoint past the warm-up; the same command resumes to the same outputs."""
    from tests.resume_helpers import checkpointed, command, differing, kill_after, run, write_config

    cfg, root, data = cell
    overrides = {"finetune": {"checkpoint_interval": 70, "wsrl": {"keep_offline_data": keep}}}
    cfg = config.resolve(config.deep_merge(cfg, overrides))
    args = ["--config", str(write_config(cfg, tmp_path / "config.yaml")), "--env", "hopper", "--seed", "0"]
    args += ["--method", "wsrl", "--offline", str(root / "calql"), "--data", str(data), "--no-progress"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run(command("finetune", *args, "--out", str(whole)))
    ready = checkpointed(resumed / "checkpoint", phase="budget")
    meta = resumed / "checkpoint" / "meta.json"
    kill_after(command("finetune", *args, "--out", str(resumed)), lambda: ready() and read_json(meta)["step"] > WARMUP)
    assert not (resumed / "finetune.json").exists()
    step = read_json(meta)["step"]
    log = run(command("finetune", *args, "--out", str(resumed))).stderr
    assert f"resumed from the checkpoint at step {step}" in log
    summary = read_json(resumed / "finetune.json")
    assert summary["resumed_from"] and not (resumed / "checkpoint").exists()
    assert not differing(whole, resumed, ["curve.csv", "ledger.json", "learnable_final.d3"])
    for key in ("final_grad_step", "updates", "env_steps", "buffer", "wsrl", "mixing"):
        assert summary.get(key) == read_json(whole / "finetune.json").get(key), key
