"""The sequential scorecard: design, boundaries, stage state, plan, scorecard columns, driver, calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from replication.analysis import calibration, inference, scorecard
from replication.plan import claims as plan_claims
from replication.plan import config, sequential
from replication.plan.plan import Plan
from replication.plan.schema import ConfigError
from replication.study import study, user_config

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "config" / "ci.yaml"
DESIGN = {"initial": 2, "step": 1, "max": 3, "min_seeds": 2}


def seq_config(name: str = "seqtest", **extra) -> dict:
    return {**config.read_yaml(CI), "name": name, "seeds": dict(DESIGN), **extra}


def test_looks_and_boundaries() -> None:
    assert sequential.Design(3, 2, 9).looks == (3, 5, 7, 9)
    assert sequential.Design(2, 2, 5).looks == (2, 4, 5)  # the last look capped at max
    assert sequential.Design(4, 1, 4).looks == (4,)
    assert sequential.Design(3, 2, 9).confidence(0.95) == pytest.approx(1 - 0.05 / 4)


def test_weighted_split_and_the_looks_claims() -> None:
    equal, weighted = sequential.Design(3, 2, 9, 3), sequential.Design(3, 2, 9, 3, (1, 1, 1, 2))
    assert [equal.confidence(0.95, k) for k in (1, 4)] == [1 - 0.05 / 4] * 2  # as before weights existed
    assert sum(weighted.shares()) == pytest.approx(1) and weighted.shares()[-1] == pytest.approx(0.4)
    assert [weighted.confidence(0.95, k) for k in (1, 4)] == pytest.approx([0.99, 0.98])
    assert sequential.Design.of(weighted.as_dict()) == weighted and "weights" not in equal.as_dict()
    claims = {**scorecard.load_claims(), "min_seeds": 5}
    last = weighted.look_claims(claims, 4)
    assert last["bootstrap"]["confidence"] == pytest.approx(0.98) and last["alpha"] == pytest.approx(0.02)
    assert last["min_seeds"] == 3 and claims["min_seeds"] == 5  # the design's minimum, the claims untouched
    assert "min_seeds" not in sequential.Design(5, 2, 9).look_claims({}, 1)  # none set: the claims file's


@pytest.mark.parametrize(
    ("seeds", "why"),
    [
        ({"initial": 3, "step": 2, "max": 9}, "would decide nothing"),  # paper/claims.yaml min_seeds is 5
        ({"initial": 3, "step": 2, "max": 9, "min_seeds": 4}, "would decide nothing"),
        ({"initial": 3, "step": 2, "max": 9, "min_seeds": 1}, "at least 2"),
        ({"initial": 3, "step": 2, "max": 9, "min_seeds": 3, "weights": [1, 2]}, "one positive number per look"),
    ],
)
def test_a_design_whose_looks_cannot_decide_is_refused(seeds, why) -> None:
    assert why in sequential.check(seeds, 5)
    assert sequential.check({**seeds, "initial": 5, "min_seeds": 5, "weights": [1, 2, 3]}, 5) is None


def test_repeated_looks_need_the_split_and_the_split_holds() -> None:
    """Under the null, a t test repeated at every look errs more than its level; at the split level the
    error over all looks stays below the one-sided 2.5%, the guarantee the design claims."""
    design, rng, sims = sequential.Design(3, 2, 9), np.random.default_rng(0), 4000
    data = rng.normal(0, 1, size=(sims, design.max))
    weighted = sequential.Design(3, 2, 9, weights=(1, 1, 1, 2))
    for levels, bound in (([0.95] * 4, None), ([design.confidence(0.95)] * 4, 0.025),
                           ([weighted.confidence(0.95, k) for k in (1, 2, 3, 4)], 0.025)):  # fmt: skip
        rejected = np.zeros(sims, dtype=bool)
        for n, confidence in zip(design.looks, levels, strict=True):
            rejected |= [inference.mean_interval(row[:n], confidence).lo > 0 for row in data]
        if bound is None:
            assert rejected.mean() > 0.05  # naive repeated looks: 6.7%, well above 2.5%
        else:
            assert rejected.mean() <= bound + 3 * np.sqrt(bound / sims)


def test_plain_seeds_resolve_unchanged_and_a_design_resolves_to_its_first_stage(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plain = config.resolve(config.read_yaml(CI))
    assert plain["seeds"] == [0, 1] and "sequential" not in plain
    cfg = config.resolve(seq_config())
    assert cfg["seeds"] == [0, 1] and cfg.get("claims") is None
    assert cfg["sequential"]["stage"] == 1 and "C3.2" in cfg["sequential"]["open"]
    assert cfg["sequential"]["min_seeds"] == 2  # the design's own minimum travels with the stage


@pytest.mark.parametrize(
    "seeds",
    [
        {"initial": 4, "step": 1, "max": 3},
        {"initial": 1, "step": 1, "max": 3},
        {"initial": 2, "max": 3},
        {"initial": 2, "step": 1, "max": 3},  # below the claims file's min_seeds, and no min_seeds of its own
        {**DESIGN, "weights": [1, -1]},
        {**DESIGN, "weights": [1, 1, 1]},
        {**DESIGN, "alpha": 0.1},
    ],
)
def test_a_bad_design_is_refused(seeds, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="seeds"):
        config.resolve(seq_config(seeds=seeds))


def test_open_tests_stop_with_their_claim() -> None:
    claims = plan_claims.load()
    every = sequential.test_ids(claims)
    assert sequential.open_tests(claims, every, {}) == every
    # C3.1 decided: C3's other decisive tests stay open; C1.2 not reproduced: all of C1 stops
    left = sequential.open_tests(claims, every, {"C3.1": "reproduced", "C1.2": "not reproduced"})
    assert "C3.1" not in left and {"C3.2", "C3.3"} <= set(left)
    assert not any(t.startswith("C1.") for t in left)
    # a claim whose decisive tests are all decided keeps no supporting test open
    c2 = [t["id"] for t in claims["C2"]["tests"] if t["role"] == "decisive"]
    assert not any(t.startswith("C2.") for t in sequential.open_tests(claims, every, dict.fromkeys(c2, "reproduced")))


def s1_rows(cfg: dict, verdicts: dict[str, str]) -> list[dict]:
    """S1 rows of the stage ``cfg`` is at, with the given verdicts (inconclusive otherwise)."""
    n, stage = len(cfg["seeds"]), cfg["sequential"]["stage"]
    return [
        {"test": t, "verdict": verdicts.get(t, scorecard.INCONCLUSIVE), "n_seeds": n, "stage": stage}
        for t in cfg["sequential"]["open"]
    ]


def test_advance_plans_the_open_tests_only_and_refuses_a_stale_scorecard(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    claims = plan_claims.load()
    cfg = config.resolve(seq_config())
    results = Path("results/seqtest")
    with pytest.raises(ValueError, match="not at stage 1"):
        sequential.advance(results, cfg, [{**r, "n_seeds": 3} for r in s1_rows(cfg, {})], claims)
    decided = {t: "reproduced" for t in cfg["sequential"]["open"] if t not in ("C3.2", "C3.3")}
    state = sequential.advance(results, cfg, s1_rows(cfg, decided), claims)
    assert state["stage"] == 2 and not state["done"] and state["design"] == DESIGN  # min_seeds recorded
    second = config.resolve(seq_config())
    assert second["seeds"] == [0, 1, 2] and second["claims"] == ["C3"]
    assert second["sequential"]["open"] == ["C3.2", "C3.3"]
    # the plan adds the third seed only for what C3.2 and C3.3 read: PEX and Cal-QL fine-tuning
    new = {(j.key[0], j.key[3]) for j in Plan.build(second).jobs if j.key[2] == 2}
    assert {v for r, v in new if r == "finetune"} <= {"pex", "calql"} and ("online", "") in new
    assert len(Plan.build(second).jobs) < len(Plan.build({**second, "sequential": None}).jobs)
    with pytest.raises(ValueError, match="lacks stage 2"):
        sequential.advance(results, second, s1_rows(cfg, {}), claims)
    last = sequential.advance(results, second, s1_rows(second, {}), claims)
    assert last["done"] and last["stage"] == 2 and last["undecided"] == ["C3.2", "C3.3"]
    assert config.resolve(seq_config())["sequential"] == second["sequential"]  # the last stage, unchanged
    for changed in ({**DESIGN, "max": 4}, {**DESIGN, "weights": [1, 2]}):  # weights are part of the design
        with pytest.raises(ValueError, match="differs from the design"):
            config.resolve(seq_config(seeds=changed))


def fake_snakemake(calls: list[int]):
    """A Snakemake that writes the stage's S1: at stage 1 every open test but C3.2 and C3.3 decided."""

    def run(args: list[str]) -> int:
        cfg = config.resolve(user_config(args))
        calls.append(cfg["sequential"]["stage"])
        verdicts = {} if calls[-1] > 1 else {t: "reproduced" for t in cfg["sequential"]["open"]}
        verdicts.pop("C3.2", None), verdicts.pop("C3.3", None)
        out = Path("results", cfg["name"], "scorecard")
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(s1_rows(cfg, verdicts)).to_csv(out / "S1.csv", index=False)
        return 0

    return run


def test_one_command_equals_the_stages_by_hand(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("auto", "hand"):
        Path(f"{name}.yaml").write_text(pd.io.json.ujson_dumps(seq_config(name)))  # JSON is YAML
    with pytest.raises(ValueError, match="no scorecard yet"):
        study(["--configfile", "auto.yaml"], decide_only=True)
    calls: list[int] = []
    assert study(["--configfile", "auto.yaml"], runner=fake_snakemake(calls)) == 0
    assert calls == [1, 2]
    assert study(["--configfile", "auto.yaml"], runner=fake_snakemake(calls)) == 0 and calls == [1, 2]  # ended
    by_hand: list[int] = []
    for _ in range(2):
        fake_snakemake(by_hand)(["--configfile", "hand.yaml"])
        assert study(["--configfile", "hand.yaml"], decide_only=True) == 0
    auto, hand = (sequential.read_state(f"results/{n}") for n in ("auto", "hand"))
    assert auto == hand and auto["done"] and [s["seeds"] for s in auto["stages"]] == [2, 3]


def test_a_plain_config_is_one_snakemake_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    calls: list[list[str]] = []
    args = ["--configfile", str(CI), "--cores", "1"]
    assert study(args, runner=lambda a: calls.append(a) or 0) == 0 and calls == [args]


def test_sequential_scorecard_keeps_earlier_rows_and_adds_its_columns(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = calibration.calibration_config(["hopper", "kitchen", "sawyer-push"], 3)
    rng = np.random.default_rng(0)
    df, expected = calibration.synthetic_results(cfg, "effect", 0.1, rng)
    claims = scorecard.load_claims()
    plain = scorecard.evaluate_claims(df, expected, claims, reps=100)
    assert list(plain.columns) == list(scorecard.COLUMNS)  # a fixed design's S1 has no new column
    design = sequential.Design(2, 1, 3, 2, (1, 3))
    seq = {**design.as_dict(), "stage": 2, "open": sequential.test_ids(claims["claims"])}
    cfg = {**cfg, "name": "seqcard", "sequential": seq}
    kept = {**plain.iloc[0].to_dict(), "stage": 1, "verdict": "reproduced", "details": "from stage 1"}
    state = {**sequential.initial_state(design, []), "decided": {kept["test"]: kept}}
    from replication.io import write_json

    write_json(sequential.state_path("results/seqcard"), state)
    table = scorecard._sequential_table(df, expected, claims, cfg, 100, None)
    assert list(table.columns) == [*scorecard.COLUMNS, *scorecard.SEQUENTIAL_COLUMNS]
    first = table.iloc[0]
    assert first["details"] == "from stage 1" and first["stage"] == 1 and bool(first["decided"])
    assert set(table["stage"].iloc[1:]) == {2}
    assert first["confidence"] == pytest.approx(0.9875) and set(table["confidence"].iloc[1:]) == {0.9625}
    assert set(table["min_seeds"]) == {2} and "CI 96.25%" in scorecard.scorecard_markdown(table, claims)
    # the design's minimum of 2 seeds, not the claims file's 5, decides at 3 seeds
    assert (table["verdict"].iloc[1:] != scorecard.INCONCLUSIVE).any()
    # the looks' boundaries are wider than the fixed design's: no interval of stage 2 is narrower
    both = plain.iloc[1:].merge(table.iloc[1:], on="test", suffixes=("", "_seq"))
    width = (both["ci_hi"] - both["ci_lo"]).dropna()
    assert ((both["ci_hi_seq"] - both["ci_lo_seq"])[width.index] >= width - 1e-12).all()
    assert "Stage (seeds)" in scorecard.scorecard_markdown(table, claims)


@pytest.mark.parametrize("scenario", calibration.SCENARIOS)
def test_categorical_labels_give_the_same_verdicts(scenario) -> None:
    cfg = calibration.calibration_config(["hopper", "kitchen", "kitchen-sparse", "sawyer-push"], 3)
    df, _ = calibration.synthetic_results(cfg, scenario, 0.1, np.random.default_rng(1))
    claims = {**scorecard.load_claims(), "min_seeds": 2}
    plain = calibration._verdicts(df, cfg, 3, claims, 100, 0)
    assert calibration._verdicts(calibration.compact(df), cfg, 3, claims, 100, 0) == plain


def test_sequential_calibration_reports_error_power_seeds_and_cost() -> None:
    design = sequential.Design(3, 2, 5)
    sim = calibration.Simulation(("hopper", "kitchen", "sawyer-push"), min_seeds=2, reps=100)
    runs = [calibration.calibrate_sequential(s, 2, design, sim) for s in calibration.SCENARIOS]
    for r in runs:
        assert r["looks"] == [3, 5] and r["grid_gpu_hours_per_seed"] > 0
        per_seed = r["grid_gpu_hours_per_seed"]  # the first stage runs the whole grid, later ones at most that
        assert 3 * per_seed - 0.5 <= r["expected_gpu_hours"] <= 5 * per_seed + 0.5
        for shares in r["tests"].values():
            looks = {3, 5} if r["scenario"] == "effect" else {5}  # power at every look, errors at the most seeds
            assert 3 <= shares["expected_seeds"] <= 5 and set(shares["fixed_reproduced"]) == looks
            by_look = shares["reproduced_by_look"]  # cumulative, ending at the design's share of "reproduced"
            assert by_look[3] <= by_look[5] == shares["reproduced"]
    twice = calibration.merge_sequential([runs[0], runs[0]])  # chunks of one scenario: weighted means
    assert twice["sims"] == 4 and twice["tests"] == runs[0]["tests"]
    assert twice["expected_gpu_hours"] == pytest.approx(runs[0]["expected_gpu_hours"])
    text = calibration.sequential_markdown(runs)
    assert "| C3.1 |" in text and "Expected GPU-hours" in text and "null, by 3 seeds" in text
    assert "the fixed design of the same power" in text
    with pytest.raises(ValueError, match="every scenario"):
        calibration.sequential_markdown(runs[:2])


def test_calibrate_command_runs_the_sequential_design_and_refuses_looks_that_decide_nothing(capsys) -> None:
    from replication import cli

    args = ["calibrate", "--design", "sequential", "--initial", "2", "--step", "1", "--max", "3", "--sims", "1",
            "--envs", "hopper", "kitchen", "--reps", "50", "--noise", "rl"]  # fmt: skip
    with pytest.raises(SystemExit, match="would decide nothing"):  # the claims file's min_seeds is 5
        cli.main(args)
    assert cli.main([*args, "--min-seeds", "2", "--weights", "1", "2"]) == 0
    text = capsys.readouterr().out
    assert "'min_seeds': 2, 'weights': [1.0, 2.0]" in text and "confidence 0.9833, 0.9667" in text
    assert "rl noise, drawdown 0.3, min_seeds 2" in text and "| C1.1 |" in text


@pytest.mark.slow
def test_a_sequential_run_killed_in_its_second_stage_resumes_with_the_same_command(tmp_path) -> None:
    """Two stages through the real workflow (seeds {initial: 2, step: 1, max: 3}); SIGKILL to the whole
    process group once the second stage's first job runs; the same command finishes the run."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    try:
        from test_workflow import TINY
    except ImportError:  # run as a package module
        from tests.test_workflow import TINY

    tiny = {**TINY, "name": "seq", "envs": ["hopper"], "seeds": dict(DESIGN), "videos": {"enabled": False}}
    # one job per cell: fewer processes, and the layout whose cell jobs stage 2's claims cut must not rerun
    tiny["batch_jobs"] = "cell"
    (tmp_path / "seq.yaml").write_text(yaml.safe_dump(tiny))
    command = [sys.executable, "-m", "replication", "study", "--snakefile", str(ROOT / "Snakefile"),
               "--directory", str(tmp_path), "--profile", str(ROOT / "profiles" / "local"),
               "--configfile", str(tmp_path / "seq.yaml"), "--cores", "2"]  # fmt: skip
    results = tmp_path / "results" / "seq"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 900
    state_file, first_seed = results / "sequential" / "state.json", results / "cells" / "hopper" / "seed0"
    while not (state_file.is_file() and json.loads(state_file.read_text())["stage"] == 2):
        assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.2)
    stage_one = {p: p.stat().st_mtime_ns for p in first_seed.rglob("*") if p.is_file() and "lock" not in p.name}
    second = results / "cells" / "hopper" / "seed2" / "logs"
    while not (second.is_dir() and any(second.iterdir())) and proc.poll() is None:
        assert time.monotonic() < deadline, "the second stage did not start"
        time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    assert json.loads((results / "sequential" / "state.json").read_text())["stage"] == 2
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    state = json.loads((results / "sequential" / "state.json").read_text())
    assert state["done"] and [s["seeds"] for s in state["stages"]] == [2, 3]
    s1 = pd.read_csv(results / "scorecard" / "S1.csv")
    assert list(s1.columns[-len(scorecard.SEQUENTIAL_COLUMNS) :]) == list(scorecard.SEQUENTIAL_COLUMNS)
    assert set(s1.loc[s1["stage"] == 2, "n_seeds"]) <= {3}
    rerun_files = {p for p, t in stage_one.items() if p.stat().st_mtime_ns != t}
    assert not rerun_files, f"the second stage reran jobs of the first stage's seeds: {sorted(rerun_files)[:5]}"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)  # an ended run: nothing to do
    assert again.returncode == 0 and "has ended" in again.stderr
