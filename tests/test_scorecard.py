"""The claims scorecard (and the report that embeds it) on synthetic results with known effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_results import WITH_WSRL, config, make_results

from replication import tidy
from replication.analysis import inference, report, scorecard, tables
from replication.analysis import selection as sel
from replication.analysis.scorecard import INCONCLUSIVE, NOT_EVALUATED, NOT_REPRODUCED, REPRODUCED
from replication.analysis.selection import Expected, MissingResultsError

REPS = 50


def _verdicts(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["test"], table["verdict"], strict=True))


@pytest.fixture(scope="module")
def clear_case(prepared: pd.DataFrame, expected: Expected) -> pd.DataFrame:
    """Every effect the claims state, clearly present."""
    return scorecard.evaluate_claims(prepared, expected, reps=REPS)


def test_interval_rules() -> None:
    g, less, at_least = scorecard.rule_greater, scorecard.rule_less, scorecard.rule_at_least
    assert g(0.2, 0.1, 0.3, 0.0, 0.05) == REPRODUCED
    assert g(0.05, 0.001, 0.099, 0.0, 0.05) == REPRODUCED  # estimate exactly at the margin, lo just above null
    assert g(0.1, -0.1, 0.3, 0.0, 0.05) == INCONCLUSIVE
    assert g(0.0255, 0.001, 0.05, 0.0, 0.05) == INCONCLUSIVE  # significant, but the estimate is below the margin
    assert g(0.0105, 0.001, 0.02, 0.0, 0.05) == NOT_REPRODUCED  # significant but negligible
    assert g(0.03, 0.01, 0.0499, 0.0, 0.05) == NOT_REPRODUCED
    assert g(-0.2, -0.3, -0.1, 0.0, 0.05) == NOT_REPRODUCED
    assert less(-0.2, -0.3, -0.1, 0.0, 0.05) == REPRODUCED
    assert less(-0.0255, -0.05, -0.001, 0.0, 0.05) == INCONCLUSIVE  # mirror of the case above
    assert less(0.1, -0.02, 0.3, 0.0, 0.05) == NOT_REPRODUCED
    assert at_least(0.04, -0.02, 0.1, 0.0, 0.05) == REPRODUCED
    assert at_least(-0.025, -0.049, -0.001, 0.0, 0.05) == NOT_REPRODUCED  # wholly below the level to recover
    assert at_least(-0.2, -0.3, -0.1, 0.0, 0.05) == NOT_REPRODUCED
    assert at_least(-0.1, -0.3, 0.1, 0.0, 0.05) == INCONCLUSIVE
    assert at_least(0.0, -0.05, 0.05, 0.0, 0.05) == INCONCLUSIVE  # lo exactly at null - margin
    assert scorecard.combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert scorecard.combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert scorecard.combine([INCONCLUSIVE, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert scorecard.combine([NOT_EVALUATED]) == NOT_EVALUATED


def _effect(mean: float, p: float = 1.0, lo: float | None = None, hi: float | None = None) -> scorecard.EnvEffect:
    """An environment effect with Holm-adjusted p-value ``p`` in the direction of its mean."""
    lo = mean - 0.05 if lo is None else lo
    hi = mean + 0.05 if hi is None else hi
    return scorecard.EnvEffect("e", mean, lo, hi, p if mean > 0 else 1.0, p if mean < 0 else 1.0, 0.05, 0.025)


def test_environment_effects() -> None:
    assert _effect(0.2, 0.01).helps and not _effect(0.2, 0.03).helps  # Holm-adjusted p against the level
    assert not _effect(0.04, 0.001).helps  # significant, below the margin
    assert _effect(-0.2, 0.001).hurts and not _effect(-0.2, 0.001).helps
    assert _effect(0.0, lo=-0.02, hi=0.049).negligible and not _effect(0.0, lo=-0.02, hi=0.05).negligible
    assert _effect(0.0, lo=-0.049, hi=0.1).not_worse and not _effect(0.0, lo=-0.05, hi=0.1).not_worse
    # from a matrix: one clear effect among three; Holm multiplies the smallest p-value by 3
    rng = np.random.default_rng(0)
    d = rng.normal(0.0, 0.05, size=(5, 3))
    d[:, 0] += 0.3
    effects = scorecard.env_effects(d, ["a", "b", "c"], 0.05)
    assert [e.helps for e in effects] == [True, False, False]
    raw = inference.mean_interval(d[:, 0]).p_greater
    assert effects[0].p_helps == pytest.approx(3 * raw)


def test_per_environment_rules() -> None:
    helps, flat, hurts = _effect(0.2, 0.001), _effect(0.0, lo=-0.01, hi=0.01), _effect(-0.2, 0.001)
    wide, unclear_up = _effect(0.0, lo=-0.3, hi=0.3), _effect(0.2, 0.2)
    assert scorecard.rule_heterogeneous([helps, flat, flat], 0.001, 0.05) == REPRODUCED
    assert scorecard.rule_heterogeneous([helps, flat, flat], 0.2, 0.05) == INCONCLUSIVE  # no evidence of differences
    # every environment helps: no evidence against "depends on the task" (strongly different all-positive
    # effects do depend on it); only differences shown by the test reproduce it
    assert scorecard.rule_heterogeneous([helps, helps], 0.9, 0.05) == INCONCLUSIVE
    assert scorecard.rule_heterogeneous([helps, helps], 0.001, 0.05) == REPRODUCED
    assert scorecard.rule_heterogeneous([flat, flat], 0.9, 0.05) == NOT_REPRODUCED
    assert scorecard.rule_heterogeneous([wide, wide], 0.9, 0.05) == INCONCLUSIVE
    few = scorecard.rule_few
    shown_small = inference.Interval(0.0, -0.03, 0.03, 0.5, 0.5)  # the other environments' effects: below the margin
    unknown = inference.Interval(0.0, -0.2, 0.2, 0.5, 0.5)  # wide: not evidence that they do not help
    broad = inference.Interval(0.15, 0.08, 0.22, 0.0, 1.0)  # they help too, on average
    allowed = scorecard.few_allowed(3, 0.34)  # a few of three environments: one
    assert few([helps, flat, flat], shown_small, allowed, 0.05) == REPRODUCED
    assert few([helps, flat, flat], unknown, allowed, 0.05) == INCONCLUSIVE  # no detection elsewhere is not "no help"
    assert few([helps, unclear_up, unclear_up], broad, allowed, 0.05) == NOT_REPRODUCED
    assert few([helps, helps, flat], shown_small, allowed, 0.05) == NOT_REPRODUCED
    assert few([flat, hurts, flat], shown_small, allowed, 0.05) == NOT_REPRODUCED  # helps nowhere (hurting included)
    assert few([flat, flat, flat], shown_small, allowed, 0.05) == NOT_REPRODUCED
    assert few([unclear_up, flat, flat], shown_small, allowed, 0.05) == INCONCLUSIVE  # not significant after Holm
    assert few([wide, flat, flat], unknown, allowed, 0.05) == INCONCLUSIVE
    assert [scorecard.few_allowed(n, 0.34) for n in (2, 3, 6, 12)] == [1, 1, 2, 4]
    assert scorecard.rule_mixed([helps, hurts, flat]) == REPRODUCED
    assert scorecard.rule_mixed([helps, helps, flat]) == NOT_REPRODUCED
    assert scorecard.rule_mixed([helps, wide]) == INCONCLUSIVE


def test_clearly_better_case_is_reproduced(clear_case: pd.DataFrame) -> None:
    v = _verdicts(clear_case)
    for test in ("C1.1", "C1.2", "C2.1", "C2.2", "C3.1", "C3.2", "C3.3", "C4.1", "C4.2", "C4.3", "C5.1"):
        assert v[test] == REPRODUCED, test
    assert v["C5.2"] == NOT_EVALUATED  # optional: no offline Cal-QL rows per reward mode
    claims = clear_case.drop_duplicates("claim").set_index("claim")
    assert (claims.loc[["C1", "C2", "C3", "C4", "C5"], "claim_verdict"] == REPRODUCED).all()
    assert (claims.loc[["C1", "C2", "C3", "C4", "C5"], "scope"] == scorecard.STUDY).all()
    # C6 (beyond the study) needs WSRL, which this run's finetune.methods lacks
    c6 = clear_case[clear_case["claim"] == "C6"]
    assert (c6["verdict"] == NOT_EVALUATED).all() and (c6["claim_verdict"] == NOT_EVALUATED).all()
    assert (c6["details"] == "fine-tuning method wsrl is not in finetune.methods of the configuration").all()
    assert (c6["scope"] == scorecard.BEYOND_STUDY).all()
    c2 = clear_case.set_index("test").loc["C2.1"]
    assert c2["ci_lo"] > 0.5 and c2["null"] == 0.5
    c5 = clear_case.set_index("test").loc["C5.1"]
    assert c5["estimate"] == pytest.approx(0.3, abs=0.02)  # the synthetic gap, in normalised units


def _only(*names: str) -> dict:
    claims = scorecard.load_claims()
    claims["claims"] = {k: v for k, v in claims["claims"].items() if k in names}
    return claims


def test_clearly_not_better_case_is_not_reproduced(expected: Expected) -> None:
    worse = sel.prepare(make_results(validation_gain=-0.3, c5_gap=-0.2, rec_effect={"kitchen": 0.0}))
    table = scorecard.evaluate_claims(worse, expected, _only("C1", "C2", "C5"), reps=REPS)
    v = _verdicts(table)
    assert v["C2.1"] == NOT_REPRODUCED
    assert v["C5.1"] == NOT_REPRODUCED
    assert v["C1.2"] == NOT_REPRODUCED  # no larger effect on Kitchen
    no_gap = scorecard.evaluate_claims(sel.prepare(make_results(c5_gap=0.0)), expected, _only("C5"), reps=REPS)
    assert _verdicts(no_gap)["C5.1"] == NOT_REPRODUCED  # a negligible difference does not reproduce it


def test_noisy_case_is_inconclusive(expected: Expected) -> None:
    noisy = sel.prepare(make_results(c5_gap=0.08, noise=0.15, rng_seed=1))
    assert _verdicts(scorecard.evaluate_claims(noisy, expected, _only("C5"), reps=REPS))["C5.1"] == INCONCLUSIVE


def test_switched_off_analyses_are_not_evaluated(prepared: pd.DataFrame) -> None:
    exp = Expected.from_config(config(analysis={"c4": {"enabled": False}, "c5": {"enabled": False}}))
    table = scorecard.evaluate_claims(prepared, exp, _only("C4", "C5"), reps=REPS)
    for claim in ("C4", "C5"):
        rows = table[table["claim"] == claim]
        assert (rows["verdict"] == NOT_EVALUATED).all() and (rows["claim_verdict"] == NOT_EVALUATED).all()


def test_missing_results_of_a_switched_on_analysis_fail(raw: pd.DataFrame, expected: Expected) -> None:
    claims = _only("C4", "C5")
    no_extended = sel.prepare(raw[raw["variant_options"] != "extended=1"])
    with pytest.raises(MissingResultsError, match="extended=1"):
        scorecard.evaluate_claims(no_extended, expected, claims, reps=REPS)
    no_binary = sel.prepare(raw[raw["variant_options"] != "reward=binary"])
    with pytest.raises(MissingResultsError, match="reward=binary"):
        scorecard.evaluate_claims(no_binary, expected, claims, reps=REPS)


def test_claims_file_is_complete() -> None:
    claims = scorecard.load_claims()
    assert list(claims["claims"]) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    for claim in claims["claims"].values():
        assert any(t["role"] == "decisive" for t in claim["tests"])
        assert claim["statement"]
    beyond = [cid for cid, claim in claims["claims"].items() if claim.get("beyond_study")]
    assert beyond == ["C6"] and "Beyond the study" in claims["claims"]["C6"]["statement"]
    c6 = {t["id"]: t for t in claims["claims"]["C6"]["tests"]}
    c31 = claims["claims"]["C3"]["tests"][0]
    assert c6["C6.1"]["statistic"] == c31["statistic"] and c6["C6.1"]["window_fraction"] == c31["window_fraction"]
    assert {t["rule"] for t in c6.values()} == {"at_least"} and {t["method"] for t in c6.values()} == {"wsrl"}


def test_claims_file_errors_name_the_problem(tmp_path) -> None:
    bad = tmp_path / "claims.yaml"
    bad.write_text("claims:\n  C9:\n    tests:\n      - {id: C9.1, role: decisive, statistic: nope, rule: greater}\n")
    with pytest.raises(ValueError, match="unknown statistic 'nope'"):
        scorecard.load_claims(bad)
    bad.write_text(
        "claims:\n  C9:\n    tests:\n      - {id: C9.1, role: decisive, statistic: finetune_early_change, "
        "rule: greater}\n"
    )
    with pytest.raises(ValueError, match="needs a null_value"):
        scorecard.load_claims(bad)
    bad.write_text(
        "claims:\n  C9:\n    tests:\n      - {id: C9.1, role: decisive, statistic: recommendation_effect_by_env, "
        "rule: heterogeneous, compared_with: snapshot}\n"
    )
    with pytest.raises(ValueError, match="compared_with must be online or control"):
        scorecard.load_claims(bad)


def test_c1s_decisive_tests_compare_with_the_control_and_the_framework_supports() -> None:
    tests = {t["id"]: t for t in scorecard.load_claims()["claims"]["C1"]["tests"]}
    decisive = [i for i, t in tests.items() if t["role"] == "decisive"]
    assert decisive == ["C1.1", "C1.2"] and all(tests[i]["compared_with"] == "control" for i in decisive)
    vs_online = [i for i, t in tests.items() if t.get("compared_with", "online") == "online"]
    assert vs_online == ["C1.5", "C1.6"] and all(tests[i]["role"] == "supporting" for i in vs_online)
    assert all(tests[i]["baseline_at"] == "ledger_step" for i in vs_online)


def test_c1_against_the_control_is_what_the_offline_learner_adds(raw: pd.DataFrame) -> None:
    """The recommendation minus the control, per (env, seed), averaged over algorithms and pauses; results
    without the control are an error that names it."""
    claims = scorecard.load_claims()
    df, expected = sel.prepare(raw), Expected.from_config(config())
    table = scorecard.evaluate_claims(df, expected, claims, reps=REPS).set_index("test")
    rec = df[(df["stage"] == "recommend") & (df["selection"] == "best-of") & (df["dataset"] == "buffer")]
    rec = rec[(rec["metric"] == sel.NORMALIZED) & (rec["variant_options"] == "")]
    control = df[(df["selection"] == "online") & (df["metric"] == sel.NORMALIZED)]
    merged = rec.merge(control[["env", "seed", "pause", "value"]], on=["env", "seed", "pause"], suffixes=("", "_c"))
    per_cell = (merged["value"] - merged["value_c"]).groupby([merged["env"], merged["seed"]]).mean()
    per_env = per_cell.groupby(level="env").mean()
    sparse = per_env[["kitchen"]].mean() - per_env.drop("kitchen").mean()
    assert table.loc["C1.2", "estimate"] == pytest.approx(sparse)
    with pytest.raises(MissingResultsError, match="control"):
        scorecard.evaluate_claims(sel.prepare(raw[raw["selection"] != "online"]), expected, claims, reps=REPS)


@pytest.fixture(scope="module")
def built(raw: pd.DataFrame, tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("run")
    path = out / "tidy.csv"
    tidy.write(raw, path)
    cfg = config()
    s1 = scorecard.build_scorecard([path], out / "scorecard", cfg, reps=REPS)
    written = tables.build_tables([path], out / "tables", cfg)
    return {"out": out, "cfg": cfg, "s1": s1, "tables": [p for v in written.values() for p in v]}


def test_build_scorecard_writes_csv_and_markdown(built: dict) -> None:
    csv_path, md_path = built["s1"]
    table = pd.read_csv(csv_path)
    assert list(table.columns) == list(scorecard.COLUMNS)
    assert set(table["claim"]) == {"C1", "C2", "C3", "C4", "C5", "C6"}
    md = md_path.read_text()
    assert "| beyond the study " in md and "| C6.1 (beyond the study) " in md  # C6's scope, in both tables
    assert "Claims of the study (C1, C2, C3, C4, C5): 5 reproduced. Beyond the study" in md
    assert "| C2      | reproduced" in md and "greater (null 0.5, margin 0.05)" in md
    assert "| 5 x 3 " in md and "| 5 x 1 " in md  # seeds x environments behind each test


def test_report_embeds_results_and_lists_choices(built: dict) -> None:
    out = built["out"]
    bench = out / "benchmarks" / "online" / "hopper_0.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                     "3600\t1:00:00\t1500.5\t1\t1\t1\t0\t0\t99\t3500\n")  # fmt: skip
    fig = out / "figures" / "F1.png"
    fig.parent.mkdir()
    fig.write_bytes(b"\x89PNG fake")
    path = report.write_report(
        out / "report.md", built["cfg"], tables=built["tables"], figures=[fig], scorecard=built["s1"][1],
        benchmarks=[bench],
    )  # fmt: skip
    text = path.read_text()
    assert "![F1](figures/F1.png)" in text
    assert "**T1. Final-policy recommendation" in text and "[CSV](tables/T1.csv)" in text
    assert "| C1      |" in text
    assert "Claims of the study (C1, C2, C3, C4, C5): 5 reproduced." in text  # C6 is not counted with them
    assert "IQL, PEX and Cal-QL fine-tuning" in report.figure_captions(built["cfg"])["F2"]
    assert "| finetune.wsrl.source " in text  # the choices table has WSRL's choices
    # every (choice) key of config/defaults.yaml appears with its value in this run
    for choice in report.marked_choices(report.DEFAULTS_FILE):
        assert f"| {choice['key']} " in text
    assert "| newdata.pause" in text and "| 0.6 " in text
    assert "| rliable " in text and "| online " in text and "1.000" in text  # one hour of the online stage
    with pytest.raises(FileNotFoundError, match="missing.png"):
        report.write_report(out / "r2.md", built["cfg"], figures=[out / "missing.png"])


def test_choice_comments_are_parsed_with_continuations(tmp_path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text(
        "a: 1            # (choice) first\n"
        "b:\n"
        "  c: [1, 2]     # (choice) second, which goes on\n"
        "                # on the next line\n"
        "  d: 3          # not a choice\n"
        "e: '#x'         # (choice) quoted hash\n"
    )
    got = {c["key"]: (c["literal"], c["note"]) for c in report.marked_choices(f)}
    assert got == {
        "a": ("1", "first"),
        "b.c": ("[1, 2]", "second, which goes on on the next line"),
        "e": ("'#x'", "quoted hash"),
    }


def test_benchmark_costs_group_by_stage(tmp_path) -> None:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for stage, name, s in (("offline", "iql_a.tsv", 7200), ("offline", "cql_a.tsv", 3600), ("online", "x.tsv", 1800)):
        p = tmp_path / "benchmarks" / stage / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(header + f"{s}\t-\t100\t1\t1\t1\t0\t0\t99\t{s}\n")
    costs = report.benchmark_costs(sorted((tmp_path / "benchmarks").rglob("*.tsv"))).set_index("Stage")
    assert costs.loc["offline", "Jobs"] == 2
    assert costs.loc["offline", "Total hours"] == pytest.approx(3.0)
    assert costs.loc["all stages", "Total hours"] == pytest.approx(3.5)
    assert np.isfinite(costs.loc["online", "Peak RSS (MB)"])
    assert "CPU hours" not in costs.columns  # Snakemake's cpu_time is not trustworthy (see report.py)
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not a Snakemake benchmark file"):
        report.benchmark_costs([bad])


def test_budget_matched_baseline_uses_online_after_the_same_env_steps(
    prepared: pd.DataFrame, expected: Expected
) -> None:
    df = prepared
    ctx = scorecard.Context(df, expected, reps=10, seed=0, confidence=0.95, margin=0.05, poi_margin=0.05, alpha=0.05)
    test = {"id": "X", "treatment": {"dataset": "newdata", "validation": "full", "selection": "offline"}}
    at_pause, _ = scorecard._recommendation_effects(ctx, {**test, "baseline_at": "pause"})
    matched, pairs = scorecard._recommendation_effects(ctx, {**test, "baseline_at": "ledger_step"})
    assert set(pairs["env_step"]) == {73_000}  # pause 60K + 10K newdata + 3K validation
    norm = df[df["metric"] == sel.NORMALIZED]
    online = norm[(norm["stage"] == "online") & (norm["variant_options"] == "")]
    o60 = online[online["env_step"] == 60_000].pivot(index="seed", columns="env", values="value")
    o70 = online[online["env_step"] == 70_000].pivot(index="seed", columns="env", values="value")
    envs = list(expected.envs)
    np.testing.assert_allclose(at_pause - matched, (o70 - o60)[envs].to_numpy())


def test_duplicated_tasks_do_not_narrow_an_interval(prepared: pd.DataFrame, expected: Expected) -> None:
    """The tasks of one (env, seed) share an online run: copying them must not count as more evidence."""
    rec = prepared[prepared["stage"] == "recommend"]
    copies = rec.assign(pause=rec["pause"] + 1)  # every (algorithm, dataset, pause) task twice
    doubled = pd.concat([prepared, copies], ignore_index=True)
    once = scorecard.evaluate_claims(prepared, expected, _only("C2"), reps=REPS).set_index("test")
    twice = scorecard.evaluate_claims(doubled, expected, _only("C2"), reps=REPS).set_index("test")
    for test in ("C2.1", "C2.2"):
        assert twice.loc[test, ["estimate", "ci_lo", "ci_hi"]].tolist() == pytest.approx(
            once.loc[test, ["estimate", "ci_lo", "ci_hi"]].tolist()
        )
    assert "54 tasks" in once.loc["C2.1", "details"] and "108 tasks" in twice.loc["C2.1", "details"]


def test_one_seed_gives_no_verdict(raw: pd.DataFrame) -> None:
    cfg = config(seeds=[0])
    table = scorecard.evaluate_claims(sel.prepare(raw[raw["seed"] == 0]), Expected.from_config(cfg), reps=REPS)
    assert set(table["verdict"]) <= {INCONCLUSIVE, NOT_EVALUATED}
    evaluated = table[table["verdict"] == INCONCLUSIVE]
    assert len(evaluated) >= 11 and evaluated["details"].str.startswith("too few seeds: 1").all()
    assert set(table["claim_verdict"]) <= {INCONCLUSIVE, NOT_EVALUATED}
    assert (table["n_seeds"] == 1).all()
    md = scorecard.scorecard_markdown(table, scorecard.load_claims())  # no numbers: shown as a dash
    assert "| 1 x 3 " in md and "env(s) help" not in md
    assert table.set_index("test").loc["C4.1", "n_envs"] == 1 and table.set_index("test").loc["C1.1", "n_envs"] == 3
    assert "too few seeds" in report.evidence_warning(cfg) or "fewer than" in report.evidence_warning(cfg)
    assert report.evidence_warning(config()) == ""


def test_too_few_environments_is_inconclusive(prepared: pd.DataFrame) -> None:
    exp = Expected.from_config(config(envs=["hopper", "kitchen"]))
    df = prepared[prepared["env"].isin(["hopper", "kitchen"])]
    table = scorecard.evaluate_claims(df, exp, _only("C1", "C3"), reps=REPS).set_index("test")
    assert table.loc["C1.3", "details"] == "too few environments: 2 (this test needs 5)"
    assert table.loc["C3.2", "verdict"] == INCONCLUSIVE and table.loc["C1.1", "verdict"] != INCONCLUSIVE


def test_two_seeds_show_numbers_without_a_verdict(raw: pd.DataFrame) -> None:
    cfg = config(seeds=[0, 1])
    table = scorecard.evaluate_claims(sel.prepare(raw[raw["seed"] < 2]), Expected.from_config(cfg), reps=REPS)
    c5 = table.set_index("test").loc["C5.1"]
    assert c5["verdict"] == INCONCLUSIVE and c5["details"].startswith("too few seeds: 2")
    assert c5["ci_lo"] < c5["estimate"] < c5["ci_hi"]  # computed, shown, not decided


def test_two_seeds_of_one_environment_leave_tests_that_need_more_without_numbers(raw: pd.DataFrame) -> None:
    cfg = config(seeds=[0, 1], envs=["hopper"])
    df = sel.prepare(raw[(raw["seed"] < 2) & (raw["env"].str.startswith("hopper"))])
    table = scorecard.evaluate_claims(df, Expected.from_config(cfg), _only("C1"), reps=REPS).set_index("test")
    c11 = table.loc["C1.1"]  # the heterogeneity test needs two environments: no numbers, no crash
    assert c11["verdict"] == INCONCLUSIVE and "too few environments: 1 (this test needs 2)" in c11["details"]
    assert c11["details"].startswith("too few seeds: 2") and np.isnan(c11["estimate"])


# --------------------------------------------------------------------------------------------
# C6 (WSRL, beyond the study)


def _wsrl_config(**wsrl: object) -> dict:
    return config(finetune={"methods": list(WITH_WSRL), "wsrl": wsrl})


def _c6(df: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    return scorecard.evaluate_claims(sel.prepare(df), Expected.from_config(cfg), _only("C3", "C6"), reps=REPS)


def test_c6_finds_wsrl_that_neither_drops_nor_falls_behind() -> None:
    gain = {env: 0.1 for env in ("hopper", "kitchen", "sawyer-push")}
    table = _c6(make_results(methods=WITH_WSRL, ft_gain={"wsrl": gain}), _wsrl_config()).set_index("test")
    assert table.loc["C6.1", "verdict"] == REPRODUCED and table.loc["C6.2", "verdict"] == REPRODUCED
    assert table.loc["C6.1", "claim_verdict"] == REPRODUCED and table.loc["C6.1", "scope"] == scorecard.BEYOND_STUDY
    assert table.loc["C6.2", "estimate"] == pytest.approx(0.1, abs=0.02)
    assert "switch level from recommend" in table.loc["C6.1", "details"]  # the offline Cal-QL agent's row
    assert table.loc["C3.1", "verdict"] == REPRODUCED  # IQL's drop is untouched by WSRL's rows


def test_c6_is_not_reproduced_when_wsrl_drops_and_ends_behind() -> None:
    loss = {env: -0.2 for env in ("hopper", "kitchen", "sawyer-push")}
    df = make_results(methods=WITH_WSRL, wsrl_drop=0.3, ft_gain={"wsrl": loss})
    table = _c6(df, _wsrl_config()).set_index("test")
    assert table.loc["C6.1", "verdict"] == NOT_REPRODUCED and table.loc["C6.2", "verdict"] == NOT_REPRODUCED
    assert table.loc["C6.1", "ci_hi"] < 0 and table.loc["C6.2", "ci_hi"] < 0


def test_c6_names_the_ablation_that_keeps_offline_data() -> None:
    table = _c6(make_results(methods=WITH_WSRL), _wsrl_config(keep_offline_data=True)).set_index("test")
    for test in ("C6.1", "C6.2"):
        assert table.loc[test, "details"].startswith("WSRL (offline data kept) (finetune.wsrl.keep_offline_data")


def test_beyond_study_claims_are_not_counted_with_the_study() -> None:
    rows = [
        {"claim": c, "claim_verdict": v, "scope": s}
        for c, v, s in (
            ("C1", REPRODUCED, scorecard.STUDY),
            ("C2", INCONCLUSIVE, scorecard.STUDY),
            ("C6", REPRODUCED, scorecard.BEYOND_STUDY),
        )
    ]
    line = scorecard.summary_line(pd.DataFrame(rows))
    assert line.startswith("Claims of the study (C1, C2): 1 reproduced, 1 inconclusive.")
    assert "Beyond the study (not claims of the paper, not counted above): C6 reproduced." in line


def test_claims_file_rejects_a_beyond_study_that_is_not_a_boolean(tmp_path) -> None:
    bad = tmp_path / "claims.yaml"
    bad.write_text("claims:\n  C9:\n    beyond_study: maybe\n    tests: []\n")
    with pytest.raises(ValueError, match="beyond_study must be true or false"):
        scorecard.load_claims(bad)


def test_report_names_wsrl_where_it_names_the_fine_tuning_methods() -> None:
    cfg = _wsrl_config()
    assert report.figure_captions(cfg)["F2"].startswith("Fine-tuning curves: IQL, PEX, Cal-QL and WSRL fine-tuning")
    assert "WSRL (offline data kept) fine-tuning" in report.finetune_methods_text(_wsrl_config(keep_offline_data=True))
    assert "C6 is not one of the paper's" in report._methods_line(cfg)
    assert "WSRL" not in report._methods_line(config())
