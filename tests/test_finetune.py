"""Online fine-tuning (IQL, PEX, Cal-QL) from tiny offline agents trained on a real short online run."""

from __future__ import annotations

import copy
import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from replication.agents import checkpoint, job
from replication.agents import finetune as ft
from replication.agents.datasets import Transitions, load_transitions
from replication.agents.finetune.pex import OFFLINE, ONLINE, PolicyExpansion, choice_probabilities, expand_policy
from replication.agents.learners import empty_buffer, load_learner, quiet_d3rlpy, replay_buffer
from replication.agents.offline import run_offline
from replication.io import read_json
from replication.plan import provenance
from replication.plan.ledger import BudgetError, Ledger
from replication.plan.settings import finetune_settings
from replication.plan.variants import OfflineDataset, finetune_ledger
from replication.plan.vocabulary import FINETUNE_METHODS
from tests.conftest import tiny_config

# Trains agents: the slow tier.
pytestmark = pytest.mark.slow

TINY = {"gradient_steps": 60, "hidden_units": [32, 32], "batch_size": 32}
PAUSE = 1000
T = 2000
REMAINING = 300  # T - 1000 online - 0.35 x 2000 offline validation
EXTENDED = 100
METHODS = ("iql", "pex", "calql")  # the grid's methods; WSRL: tests/test_wsrl.py


def ft_config(**overrides):
    """tiny_config made cheaper for fine-tuning: random-action online data (no SAC updates before the
    pause), evaluations every 100 steps, and offline validation charging 700 steps, which leaves 300.
    Cal-QL mixes proportionally (the sensitivity setting; the paper profile's 0.5 is PEX's fixed ratio)."""
    base = {
        "online": {"learning_starts": 1900},
        "evaluation": {"interval": 100},
        "validation": {"offline_fraction": 0.35},
        "offline": {algo: dict(TINY) for algo in ("iql", "cql", "calql")},
        "finetune": {"methods": list(METHODS), "calql_mixing": "proportional"},
    }
    from replication.plan import config

    return tiny_config(["hopper"], total_steps=T, **config.deep_merge(base, overrides))


class CountSteps(gym.Wrapper):
    """Counts the env steps a fine-tuning run really takes."""

    counts: list[int] = []

    def __init__(self, env):
        super().__init__(env)
        self.index = len(CountSteps.counts)
        CountSteps.counts.append(0)

    def step(self, action):
        CountSteps.counts[self.index] += 1
        return self.env.step(action)


def make_cell(tmp_path_factory, cfg: dict, algos: tuple[str, ...]):
    """An online run of ``cfg`` and offline agents ``algos`` on its buffer at the pause (as offline.py
    makes them); returns (cfg, the cell's directory, the dataset file)."""
    from replication.agents.online import run_online

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cell")
    run_online(cfg, "hopper", 0, root / "online", progress=False)
    data = root / "online" / f"pause_{PAUSE}" / "dataset_buffer.h5"
    for algo in algos:
        run_offline(
            cfg, "hopper", 0, algo, data, root / "online", OfflineDataset("buffer", PAUSE), root / algo, progress=False
        )
    return cfg, root, data


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """An online run and offline IQL and Cal-QL agents on its buffer at the pause."""
    return make_cell(tmp_path_factory, ft_config(), ("iql", "calql"))


def finetune_run(cfg, root, data, method, out, extended_steps=0):
    """``run_finetune`` with the training env's steps counted; returns (summary, env steps taken)."""
    real_make_env = job.make_env  # the training env: the job frame makes it
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job, "make_env", lambda *a, **k: CountSteps(real_make_env(*a, **k)))
        before = len(CountSteps.counts)
        source = FINETUNE_METHODS[method]
        summary = ft.run_finetune(cfg, "hopper", 0, method, root / source, data, out, extended_steps, progress=False)
        steps = CountSteps.counts[before:]
    assert len(steps) == 1, "one training env per run"
    return summary, steps[0]


@pytest.fixture(scope="module")
def runs(cell, tmp_path_factory):
    cfg, root, data = cell
    out = tmp_path_factory.mktemp("finetune")
    return {m: (out / m, *finetune_run(cfg, root, data, m, out / m, EXTENDED if m == "iql" else 0)) for m in METHODS}


@pytest.fixture(scope="module")
def iql_learner(cell):
    quiet_d3rlpy()
    return load_learner(cell[1] / "iql", "best", "cpu")


# --- budget ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_method_spends_exactly_the_remaining_budget(runs, cell, method):
    cfg = cell[0]
    out, summary, env_steps = runs[method]
    before = finetune_ledger(cfg, "hopper")
    assert before.remaining == REMAINING
    ledger = Ledger.load(out / "ledger.json")
    assert ledger.spent == T and ledger.remaining == 0
    assert ledger.by_category()["finetune"] == REMAINING
    assert ledger.entries[: len(before.entries)] == before.entries  # what was charged before fine-tuning
    extra = EXTENDED if method == "iql" else 0
    assert env_steps == REMAINING + extra  # steps the training env really took
    assert summary["env_steps"] == summary["budget_env_steps"] == REMAINING
    assert summary["timings"]["env_steps"] == REMAINING
    collect = cfg["finetune"]["pex_initial_collection_steps"] if method == "pex" else 0
    assert summary["updates"] == (REMAINING - collect) * cfg["finetune"]["updates_per_step"]
    curve = pd.read_csv(out / "curve.csv", keep_default_na=False)
    plain = curve[curve["variant_options"] == ""]
    steps = sorted(plain["env_step"].unique())
    # one evaluation at the switch (the offline agent), then every 100 fine-tuning steps, the last at T
    assert steps == [before.spent + k for k in range(0, REMAINING + 1, 100)]
    assert set(plain["stage"]) == {"finetune"} and set(plain["algo"]) == {method}
    assert set(plain["dataset"]) == {"buffer"} and set(plain["validation"]) == {"full"}
    assert set(plain["pause"]) == {PAUSE} and set(plain["selection"]) == {""}
    assert {"score", "return"} <= set(plain["metric"])
    fj = read_json(out / "finetune.json")
    assert fj["method"] == method and fj["source_algo"] == FINETUNE_METHODS[method] and fj["device"] == "cpu"
    assert fj["provenance"]["git"] == provenance.git_state() and fj["provenance"]["wall_seconds"] > 0
    assert fj["timings"]["env_steps_per_second"] > 0 and fj["timings"]["updates_per_second"] > 0
    assert fj["timings"]["eval_seconds"] > 0
    assert (out / "learnable_final.d3").exists()


def test_extension_is_tagged_and_outside_the_ledger(runs):
    out, summary, _ = runs["iql"]
    curve = pd.read_csv(out / "curve.csv", keep_default_na=False)
    ext = curve[curve["variant_options"] == ft.EXTENDED_OPTION]
    assert sorted(ext["env_step"].unique()) == [T + EXTENDED]
    assert curve[curve["variant_options"] == ""]["env_step"].max() == T
    assert Ledger.load(out / "ledger.json").spent == T
    assert summary["extension"]["env_steps"] == EXTENDED
    assert summary["extension"]["charged_to_ledger"] is False
    assert (out / "learnable_extended.d3").exists()
    for method in ("pex", "calql"):
        assert runs[method][1]["extension"] is None


def test_no_budget_left_is_a_clear_error(cell, tmp_path):
    cfg, root, data = cell
    broke = copy.deepcopy(cfg)
    broke["validation"]["offline_fraction"] = 0.5  # 1000 online + 1000 offline validation = T
    with pytest.raises(BudgetError, match=r"online_training=1000.*offline_validation=1000"):
        ft.run_finetune(broke, "hopper", 0, "iql", root / "iql", data, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_two_runs_with_one_seed_are_identical(runs, cell, tmp_path):
    cfg, root, data = cell
    out, summary, _ = runs["pex"]
    again, _ = finetune_run(cfg, root, data, "pex", tmp_path / "again")
    pd.testing.assert_frame_equal(pd.read_csv(out / "curve.csv"), pd.read_csv(tmp_path / "again" / "curve.csv"))
    assert again["pex"]["offline_policy_chosen"] == summary["pex"]["offline_policy_chosen"]
    a = load_learner_file(out / "learnable_final.d3")
    b = load_learner_file(tmp_path / "again" / "learnable_final.d3")
    for (name, x), (_, y) in zip(a.items(), b.items(), strict=True):
        assert torch.equal(x, y), name


def test_a_finished_run_puts_back_its_deleted_outputs_unless_the_code_changed(runs, cell, monkeypatch):
    """A batch job killed after one of its runs finished: Snakemake deletes every run's outputs, and
    the rerun puts the finished one's back without training; under other code it trains again."""
    cfg, root, data = cell
    out, _, _ = runs["calql"]
    before = {name: (out / name).read_bytes() for name in ft.FINISHED_OUTPUTS}
    source = root / FINETUNE_METHODS["calql"]

    def deleted_then_rerun() -> dict:
        for name in ft.FINISHED_OUTPUTS:
            (out / name).unlink()  # as Snakemake does to the outputs of an unfinished job
        return ft.run_finetune(cfg, "hopper", 0, "calql", source, data, out, 0, progress=False)

    with monkeypatch.context() as mp:
        mp.setattr(job, "make_env", lambda *a, **k: pytest.fail("a finished run was trained again"))
        again = deleted_then_rerun()
    assert again == json.loads(before["finetune.json"])
    assert all((out / name).read_bytes() == data_ for name, data_ in before.items())
    with monkeypatch.context() as mp:
        mp.setattr(checkpoint, "code_fingerprint", lambda: "other code")
        trained = deleted_then_rerun()
    assert trained["total_seconds"] != again["total_seconds"]  # it ran
    assert (out / "curve.csv").read_bytes() == before["curve.csv"]


def load_learner_file(path):
    import d3rlpy

    learner = d3rlpy.load_learnable(str(path), device="cpu")
    return {
        f"{m}.{k}": v
        for m, mod in learner.impl.modules.get_torch_modules().items()
        for k, v in mod.state_dict().items()
    }


# --- PEX ------------------------------------------------------------------------------------------


def test_pex_starts_from_the_offline_critic_with_a_new_actor(iql_learner):
    offline = iql_learner
    torch.manual_seed(123)
    online = expand_policy(offline, "cpu")
    a, b = offline.impl.modules, online.impl.modules
    # the offline target critic lags its critic, so copying the wrong one would show
    assert any(not torch.equal(x, y) for x, y in zip(a.q_funcs.parameters(), a.targ_q_funcs.parameters(), strict=True))
    for name in ("q_funcs", "targ_q_funcs", "value_func"):
        src, dst = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert list(src) == list(dst) and len(src) > 0
        for key in src:
            assert torch.equal(src[key], dst[key]), f"{name}.{key}"
            assert src[key].data_ptr() != dst[key].data_ptr(), f"{name}.{key} is shared, not copied"
    assert len(a.q_funcs) == len(b.q_funcs) == 2
    policy_src, policy_dst = a.policy.state_dict(), b.policy.state_dict()
    assert any(not torch.equal(policy_src[k], policy_dst[k]) for k in policy_src if "_logstd" not in k)
    assert not b.actor_optim.optim.state  # a fresh actor optimiser
    # the critic optimiser continues the offline one
    src_state = a.critic_optim.optim.state_dict()["state"]
    dst_state = b.critic_optim.optim.state_dict()["state"]
    assert src_state and src_state.keys() == dst_state.keys()
    for k in src_state:
        assert torch.equal(src_state[k]["exp_avg"], dst_state[k]["exp_avg"])
    report = ft.pex.check_transfer(offline, online)
    assert report["q_funcs"]["equal"] and report["value_func"]["equal"] and not report["policy"]["equal"]
    # the check really checks: a broken transfer is refused
    with torch.no_grad():
        next(b.value_func.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match="value_func"):
        ft.pex.check_transfer(offline, online)


def test_pex_choices_follow_the_softmax_of_the_online_critic(iql_learner, cell):
    offline = iql_learner
    online = expand_policy(offline, "cpu")
    transitions, _ = load_transitions(cell[2])
    obs = transitions.observations[5]
    pex = PolicyExpansion(offline, online, beta=3.0, rng=np.random.default_rng(7))
    proposals = pex.proposals(obs, sample=False)
    # the critic's min over its two Q-functions, computed here without PEX
    x = torch.as_tensor(obs[None]).expand(2, -1)
    with torch.no_grad():
        q = torch.stack([qf(x, proposals).q_value.reshape(-1) for qf in online.impl.modules.q_funcs]).min(0).values
    q = q.numpy().astype(np.float64)
    np.testing.assert_allclose(pex.q_values(obs, proposals), q, rtol=1e-6)
    gap = q[1] - q[0]
    assert abs(gap) > 1e-4, "the two proposals need different values for this test"
    target = 0.3 if gap > 0 else 0.7  # probability of the offline proposal
    tuned_beta = abs(np.log((1 - 0.3) / 0.3) / gap)
    n = 4000
    for beta in (tuned_beta, 3.0):
        pex.beta = beta
        p = choice_probabilities(q, beta)[OFFLINE]
        if beta == tuned_beta:
            assert p == pytest.approx(target)
        picks = sum(pex.select(obs, proposals) == OFFLINE for _ in range(n))
        sigma = np.sqrt(n * p * (1 - p))
        assert abs(picks - n * p) <= 4 * sigma + 1, (picks, n * p, beta)
    # without epsilon, evaluation picks the proposal of higher Q
    pex.beta = 3.0
    greedy = pex.greedy(obs)
    best = proposals[int(np.argmax(q))][None]
    np.testing.assert_allclose(greedy, online.config.action_scaler.reverse_transform(best)[0].numpy(), rtol=1e-6)


def test_pex_proposes_the_offline_mean_and_evaluates_on_its_own_stream(iql_learner, cell):
    offline = iql_learner
    online = expand_policy(offline, "cpu")
    obs = load_transitions(cell[2])[0].observations[5]
    pex = PolicyExpansion(
        offline, online, 3.0, np.random.default_rng(7), eval_epsilon=1.0, eval_rng=np.random.default_rng(8)
    )
    mean = pex.proposals(obs, sample=False)[OFFLINE]
    draws = torch.stack([pex.proposals(obs, sample=True) for _ in range(5)])
    assert all(torch.equal(d[OFFLINE], mean) for d in draws), "the offline proposal is its policy's mean"
    assert not torch.equal(draws[0, ONLINE], draws[1, ONLINE]), "the online proposal is sampled"
    # evaluation draws only from its own generator: training's torch and numpy streams do not move
    torch_state, train_state = torch.get_rng_state(), copy.deepcopy(pex.rng.bit_generator.state)
    actions = [pex.greedy(obs) for _ in range(20)]
    assert torch.equal(torch.get_rng_state(), torch_state) and pex.rng.bit_generator.state == train_state
    assert len({a.tobytes() for a in actions}) > 1, "epsilon 1: evaluation samples"
    with pytest.raises(ValueError, match="epsilon"):
        PolicyExpansion(offline, online, 3.0, np.random.default_rng(7), eval_epsilon=1.5)


def reference_pex_actor_step(learner, offline_policy, obs: torch.Tensor, inv_temperature: float) -> None:
    """PEX's ``policy_update`` (pex/algorithms/pex.py), written out here with plain torch on d3rlpy's modules."""
    m = learner.impl.modules
    weight_temp, max_weight = learner.config.weight_temp, learner.config.max_weight

    def min_q(q_funcs, actions):
        return torch.stack([qf(obs, actions).q_value for qf in q_funcs]).min(0).values

    with torch.no_grad():
        a1 = torch.tanh(offline_policy(obs).mu)  # the offline policy's deterministic action
        out = m.policy(obs)
        a2 = torch.distributions.Normal(torch.tanh(out.mu), out.logstd.exp()).rsample().clamp(-1.0, 1.0)
        logits = torch.cat([min_q(m.q_funcs, a1), min_q(m.q_funcs, a2)], dim=1) * inv_temperature
        w = torch.distributions.Categorical(logits=logits).sample().unsqueeze(-1).float()
        actions = (1 - w) * a1 + w * a2
        adv = min_q(m.targ_q_funcs, actions) - m.value_func(obs)
        exp_adv = torch.exp(weight_temp * adv).clamp(max=max_weight)
    out = m.policy(obs)
    log_prob = torch.distributions.Normal(torch.tanh(out.mu), out.logstd.exp()).log_prob(actions).sum(-1, keepdim=True)
    loss = torch.mean(exp_adv * -log_prob)
    optim = m.actor_optim.optim
    optim.zero_grad()
    loss.backward()
    optim.step()


def test_pex_update_is_the_reference_update(iql_learner, cell):
    """One PEX step on a fixed batch equals PEX's formula computed by hand (critic: d3rlpy's IQL step)."""
    from d3rlpy.torch_utility import TorchMiniBatch

    offline = iql_learner
    learners = []
    for _ in range(3):  # the package's step, the reference by hand, d3rlpy's plain IQL step
        torch.manual_seed(11)
        learners.append(expand_policy(offline, "cpu"))
    package, by_hand, plain = learners
    initial = {k: v.clone() for k, v in package.impl.modules.policy.state_dict().items()}
    np.random.seed(3)
    batch = replay_buffer(load_transitions(cell[2])[0]).sample_transition_batch(32)
    policy = offline.impl.modules.policy

    torch.manual_seed(5)
    ft.pex.pex_update(package, policy, batch, 3.0)

    config = by_hand.config
    tb = TorchMiniBatch.from_batch(
        batch,
        config.gamma,
        False,
        by_hand.impl.device,
        config.observation_scaler,
        config.action_scaler,
        config.reward_scaler,
    )
    by_hand.impl.modules.set_train()
    by_hand.impl.update_critic(tb)  # IQL's critic and value step
    by_hand.impl.update_critic_target()
    torch.manual_seed(5)
    reference_pex_actor_step(by_hand, policy, tb.observations, 3.0)

    torch.manual_seed(5)
    plain.update(batch)  # IQL's own actor update: regression on the batch's actions

    a = package.impl.modules.policy.state_dict()
    b = by_hand.impl.modules.policy.state_dict()
    c = plain.impl.modules.policy.state_dict()
    assert any(not torch.equal(a[k], v) for k, v in initial.items()), "the step moved the actor"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(a[k], c[k], rtol=1e-5, atol=1e-6) for k in a), "PEX's step equals IQL's"
    for name in ("q_funcs", "targ_q_funcs", "value_func"):
        x = getattr(package.impl.modules, name).state_dict()
        y = getattr(by_hand.impl.modules, name).state_dict()
        assert all(torch.equal(x[k], y[k]) for k in x), name
    assert package.grad_step == 1


def test_pex_run_keeps_the_offline_policy_frozen_and_uses_both_policies(runs):
    stats = runs["pex"][1]["pex"]
    assert stats["offline_policy_frozen"] is True
    assert stats["offline_policy_chosen"] + stats["online_policy_chosen"] == REMAINING
    assert stats["initial_collection_steps"] == 20 and stats["eval_epsilon"] == 0.1
    assert stats["transfer"]["targ_q_funcs"]["equal"] is True
    mixing = runs["pex"][1]["mixing"]
    assert mixing["rule"] == 0.5 and 0.4 < mixing["offline_fraction"] < 0.6


# --- buffers and batches --------------------------------------------------------------------------


def marked(n: int, mark: float, episode: int = 10) -> Transitions:
    """``n`` steps of terminated ``episode``-step episodes whose observations are all ``mark``."""
    terminals = np.zeros(n, dtype=bool)
    terminals[episode - 1 :: episode] = True
    return Transitions(np.full((n, 3), mark), np.zeros((n, 1)), np.ones(n), terminals, np.zeros(n, dtype=bool))


def offline_share(batch) -> int:
    return int((batch.observations[:, 0] == 0.0).sum())


def test_mixed_sampler_fixed_ratio():
    offline = replay_buffer(marked(600, 0.0))
    sampler = ft.MixedSampler(offline, replay_buffer(marked(40, 1.0)), 0.5, np.random.default_rng(0))
    for _ in range(20):
        assert offline_share(sampler.sample(64)) == 32
    assert sampler.stats()["offline_fraction"] == 0.5
    sampler = ft.MixedSampler(offline, replay_buffer(marked(50, 1.0)), 0.25, np.random.default_rng(0))
    assert offline_share(sampler.sample(64)) == 16
    # fewer online transitions than the online share of a batch (32 of 64): the whole batch is offline
    sampler = ft.MixedSampler(offline, replay_buffer(marked(20, 1.0)), 0.5, np.random.default_rng(0))
    assert offline_share(sampler.sample(64)) == 64
    with pytest.raises(ValueError, match="calql_mixing"):
        ft.mixing_rule(1.5)


def test_mixed_sampler_proportional_is_uniform_over_the_union():
    offline = replay_buffer(marked(600, 0.0))
    online = empty_buffer(offline, cache_size=20)
    sampler = ft.MixedSampler(offline, online, "proportional", np.random.default_rng(1))
    assert offline_share(sampler.sample(64)) == 64  # no online data yet
    for i in range(200):  # 20 online episodes of 10 terminated steps, through d3rlpy's writer
        online.append(np.ones(3, dtype=np.float32), np.zeros(1, dtype=np.float32), 1.0)
        if i % 10 == 9:
            online.clip_episode(True)
    assert online.transition_count == 200
    n = 100 * 64
    drawn = sum(offline_share(sampler.sample(64)) for _ in range(100))
    p = 600 / 800
    assert abs(drawn - n * p) <= 4 * np.sqrt(n * p * (1 - p))
    assert sampler.stats()["offline_transitions"] == 600 and sampler.stats()["online_transitions"] == 200


def test_calql_batches_are_half_offline_in_the_paper_profile_and_proportional_otherwise():
    """finetune.calql_mixing: 0.5 (the Cal-QL paper and launch scripts) gives every batch half offline
    samples once the online buffer can fill its half; proportional gives |D| / (|D| + n_online)."""
    from replication.plan import config

    rule = ft.mixing_rule(config.resolve()["finetune"]["calql_mixing"])
    assert rule == 0.5
    offline = replay_buffer(marked(600, 0.0))
    online = replay_buffer(marked(200, 1.0))
    half = ft.MixedSampler(offline, online, rule, np.random.default_rng(0))
    assert all(offline_share(half.sample(64)) == 32 for _ in range(20))
    proportional = config.resolve({"finetune": {"calql_mixing": "proportional"}})["finetune"]["calql_mixing"]
    union = ft.MixedSampler(offline, online, ft.mixing_rule(proportional), np.random.default_rng(0))
    n, p = 100 * 64, 600 / 800
    drawn = sum(offline_share(union.sample(64)) for _ in range(100))
    assert abs(drawn - n * p) <= 4 * np.sqrt(n * p * (1 - p))
    assert abs(drawn - n * 0.5) > 4 * np.sqrt(n * 0.25)  # distinguishable from the 50/50 mix


def test_the_calql_mix_is_part_of_a_finetuning_jobs_key(cell, tmp_path):
    """Changing finetune.calql_mixing reruns Cal-QL fine-tuning: its checkpoints and outputs carry the mix."""
    from replication.plan import config

    cfg, root, data = cell
    keys = {}
    for mix in ("proportional", 0.5):
        mixed = config.deep_merge(cfg, {"finetune": {"calql_mixing": mix}})
        job = ft.Finetune(mixed, "hopper", 0, "calql", root / "calql", data, tmp_path / str(mix), progress=False)
        keys[mix] = job.finetune_key("sha")
    assert keys["proportional"] != keys[0.5]


def test_iql_buffer_starts_with_the_dataset(cell, runs):
    cfg, root, data = cell
    quiet_d3rlpy()
    transitions, meta = load_transitions(data)
    learner = load_learner(root / "iql", "best", "cpu")
    agent = ft.build_agent(finetune_settings(cfg, "hopper", "iql"), learner, transitions, np.random.default_rng(0))
    expected = len(transitions) - int(transitions.timeouts.sum())  # d3rlpy: a timeout's last step has no next step
    assert agent.online_buffer.transition_count == expected == replay_buffer(transitions).transition_count
    assert runs["iql"][1]["initial_buffer_transitions"] == expected
    buf = runs["iql"][1]["buffer"]
    assert buf["initial_transitions"] == expected
    assert 0 < buf["online_transitions"] <= REMAINING + EXTENDED


def test_calql_online_returns_to_go_come_from_finished_episodes(cell):
    from d3rlpy.torch_utility import _compute_return_to_go

    cfg, root, data = cell
    quiet_d3rlpy()
    transitions, _ = load_transitions(data)
    learner = load_learner(root / "calql", "best", "cpu")
    agent = ft.build_agent(finetune_settings(cfg, "hopper", "calql"), learner, transitions, np.random.default_rng(0))
    assert agent.sampler.rule == "proportional"
    rewards = np.arange(1, 6, dtype=np.float32)
    for r in rewards:
        agent.store(np.zeros(11, dtype=np.float32), np.zeros(3, dtype=np.float32), float(r))
    assert agent.online_buffer.transition_count == 0  # the running episode is not sampled
    agent.end_episode(True)
    assert agent.online_buffer.transition_count == 5
    for i in range(5):
        episode, index = agent.online_buffer.buffer[i]
        rtg = agent.online_buffer.transition_picker(episode, index).rewards_to_go
        got = _compute_return_to_go(learner.config.gamma, rtg, None)
        want = sum(learner.config.gamma**k * r for k, r in enumerate(rewards[i:]))
        np.testing.assert_allclose(got, [want], rtol=1e-6)
    batch = agent.batch()
    assert len(batch) == learner.config.batch_size
    assert len(json.dumps(agent.stats())) > 0


def test_calql_batches_offline_share_at_start_and_end_is_recorded_and_reported(runs, tmp_path):
    """finetune.json keeps the offline share of the first and last Cal-QL batches; the report shows it."""
    from replication.analysis import report

    out, summary, _ = runs["calql"]
    mixing = summary["mixing"]
    assert mixing["rule"] == "proportional"
    # the online buffer is empty at the first update (episodes enter it when they end): all offline
    assert (
        mixing["first_batch"]["expected_offline_fraction"] == 1.0 and mixing["first_batch"]["online_transitions"] == 0
    )
    last = mixing["last_batch"]
    n_offline = mixing["offline_transitions"]
    assert 0 < last["online_transitions"] <= REMAINING
    assert last["expected_offline_fraction"] == pytest.approx(n_offline / (n_offline + last["online_transitions"]))
    table = report.batch_mixing([out / "finetune.json", runs["iql"][0] / "finetune.json", tmp_path / "absent.json"])
    assert len(table) == 1  # Cal-QL only; missing files skipped
    row = table.iloc[0]
    assert row["first batch"] == 1.0 and row["last batch"] == pytest.approx(last["expected_offline_fraction"])
    assert row["all batches"] == pytest.approx(mixing["offline_fraction"])
    cfg = {"finetune": {"calql_mixing": "proportional"}}
    text = "\n".join(report.mixing_section([out / "finetune.json"], cfg))
    assert "finetune.calql_mixing = proportional" in text and "| proportional" in text


# --- resuming after a kill ------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_killed_finetuning_job_resumes_to_identical_outputs(cell, tmp_path, method):
    """SIGKILL the job mid-run after a checkpoint (agent, buffers, env mid-episode, ledger, RNGs); the
    same command resumes it and ends with the uninterrupted job's outputs. IQL runs its C4 extension
    too, and is killed there, after its budget part."""
    from replication.plan import config
    from tests.resume_helpers import checkpointed, command, differing, kill_after, run, write_config

    cfg, root, data = cell
    cfg = config.resolve(config.deep_merge(cfg, {"finetune": {"checkpoint_interval": 70}}))
    extended = 300 if method == "iql" else 0
    args = ["--config", str(write_config(cfg, tmp_path / "config.yaml")), "--env", "hopper", "--seed", "0"]
    args += ["--method", method, "--offline", str(root / FINETUNE_METHODS[method]), "--data", str(data)]
    args += ["--extended-steps", str(extended), "--no-progress"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run(command("finetune", *args, "--out", str(whole)))
    assert not (whole / "checkpoint").exists()  # removed when the job finishes

    # checkpoints every 70 env steps: mid-episode; IQL is killed in its extension, after the budget part
    phase = "extended" if extended else "budget"
    kill_after(command("finetune", *args, "--out", str(resumed)), checkpointed(resumed / "checkpoint", phase=phase))
    assert not (resumed / "finetune.json").exists()
    meta = json.loads((resumed / "checkpoint" / "meta.json").read_text())
    log = run(command("finetune", *args, "--out", str(resumed))).stderr
    assert f"resumed from the checkpoint at step {meta['step']}" in log
    summary = read_json(resumed / "finetune.json")
    assert summary["resumed_from"] and not (resumed / "checkpoint").exists()
    outputs = ["curve.csv", "ledger.json", "learnable_final.d3", *(["learnable_extended.d3"] if extended else [])]
    assert not differing(whole, resumed, outputs)
    for key in ("final_grad_step", "updates", "env_steps", "mixing", "pex", "buffer"):
        assert summary.get(key) == read_json(whole / "finetune.json").get(key), key


class _CountingAgent(ft.Agent):
    """An agent without a learner that counts its updates (acting: zero actions)."""

    method = "iql"
    updates_per_step = 3

    def __init__(self, action_size: int):
        self.action_size, self.updates = action_size, 0

    def explore(self, obs):
        return np.zeros(self.action_size, dtype=np.float32)

    greedy = explore

    def store(self, obs, action, reward) -> None:
        pass

    def end_episode(self, terminated: bool) -> None:
        pass

    def batch(self):
        return None

    def update(self, batch) -> None:
        self.updates += 1


def test_an_agent_sets_its_own_updates_per_env_step(tmp_path):
    """The loop reads the agent's ``updates_per_step`` where it sets one (else the config's)."""
    cfg = ft_config()
    job = ft.Finetune(cfg, "hopper", 0, "iql", tmp_path / "offline", tmp_path / "data.h5", tmp_path / "out")
    job.env = job.make_env()
    job.agent = _CountingAgent(job.env.action_space.shape[0])
    job.updates_per_step = ft.updates_per_step(job.agent, cfg["finetune"]["updates_per_step"])
    job.evaluator = job.make_evaluator()
    job.segment(10, 0, "", charge=False)
    assert job.agent.updates == 30 and job.timings.updates == 30 and job.timings.env_steps == 10
    assert ft.updates_per_step(ft.Agent(), 2) == 2
