"""Tables T1-T3, L1 and normalisation, checked against direct pandas computations on synthetic results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from synthetic_results import FT_PAUSE, TOTAL, WITH_WSRL, config, config_file_overrides, make_results

from replication import cli, tidy
from replication.analysis import normalize, tables
from replication.analysis import selection as sel
from replication.analysis.selection import Expected, MissingResultsError


def _rows(df: pd.DataFrame, **filters: object) -> pd.DataFrame:
    mask = df["metric"] == "score"
    for col, value in filters.items():
        mask &= df[col] == value
    return df[mask]


def test_normalisation_follows_each_suite(prepared: pd.DataFrame) -> None:
    score = prepared[prepared["metric"] == "score"].reset_index(drop=True)
    norm = prepared[prepared["metric"] == normalize.NORMALIZED].reset_index(drop=True)
    assert len(score) == len(norm)
    hop = score["env"] == "hopper"
    expected_norm = np.where(
        hop,
        (score["value"] + 20.272305) / (3234.3 + 20.272305),
        np.where(score["env"] == "kitchen", score["value"] / 4, score["value"]),
    )
    np.testing.assert_allclose(norm["value"], expected_norm)


def test_normalisation_names_a_missing_reference() -> None:
    df = tidy.frame([{"env": "swimmer", "suite": "locomotion", "seed": 0, "stage": "online", "algo": "sac",
                      "env_step": 0, "metric": "score", "value": 10.0, "episodes": 10}])  # fmt: skip
    with pytest.raises(ValueError, match="reference_returns.yaml"):
        normalize.add_normalized_score(df)


def test_normalisation_rejects_a_success_rate_above_one() -> None:
    df = tidy.frame([{"env": "sawyer-push", "suite": "metaworld", "seed": 0, "stage": "online", "algo": "sac",
                      "env_step": 0, "metric": "score", "value": 250.0, "episodes": 10}])  # fmt: skip
    with pytest.raises(ValueError, match="success"):
        normalize.add_normalized_score(df)


def test_expected_reads_dataset_names_from_the_config() -> None:
    exp = Expected.from_config(config(newdata={"epsilon": [0.0, 0.1]}))
    assert exp.datasets == ("buffer", "newdata", "newdata-eps0.1")
    assert exp.finetune_pause == FT_PAUSE
    assert Expected.from_config(config(analysis={"c4": {"enabled": False}})).c4_envs == ()


def test_t1_equals_a_direct_computation(raw: pd.DataFrame, prepared: pd.DataFrame, expected: Expected) -> None:
    t1 = tables.final_policy_table(prepared, expected)
    row = t1[(t1["env"] == "kitchen") & (t1["pause"] == 40_000) & (t1["algo"] == "cql") & (t1["dataset"] == "buffer")
             & (t1["selection"] == "best-of")].iloc[0]  # fmt: skip
    rec = _rows(raw, env="kitchen", stage="recommend", algo="cql", dataset="buffer", validation="full",
                selection="best-of", pause=40_000).set_index("seed")["value"]  # fmt: skip
    online = _rows(raw, env="kitchen", stage="online", env_step=40_000).set_index("seed")["value"]
    assert row["n_seeds"] == 5
    assert row["recommend_mean"] == pytest.approx(rec.mean())
    assert row["recommend_std"] == pytest.approx(rec.std())
    assert row["online_mean"] == pytest.approx(online.mean())
    assert row["online_std"] == pytest.approx(online.std())
    assert row["diff_mean"] == pytest.approx((rec - online).mean())
    assert row["diff_std"] == pytest.approx((rec - online).std())
    # budget-matched: online SAC after the 40K + 3K validation steps the recommendation spent (eval at 40K)
    assert row["env_step_mean"] == 43_000
    assert row["diff_matched_mean"] == pytest.approx((rec - online).mean())
    nd = t1[(t1["env"] == "kitchen") & (t1["algo"] == "cql") & (t1["dataset"] == "newdata")
            & (t1["selection"] == "best-of")].iloc[0]  # fmt: skip
    rec_nd = _rows(raw, env="kitchen", stage="recommend", algo="cql", dataset="newdata", validation="full",
                   selection="best-of", pause=60_000).set_index("seed")["value"]  # fmt: skip
    online_70 = _rows(raw, env="kitchen", stage="online", env_step=70_000).set_index("seed")["value"]
    assert nd["env_step_mean"] == 73_000  # 60K pause + 10K newdata + 3K validation
    assert nd["online_matched_mean"] == pytest.approx(online_70.mean())
    assert nd["diff_matched_mean"] == pytest.approx((rec_nd - online_70).mean())
    assert nd["diff_matched_mean"] != pytest.approx(nd["diff_mean"])
    # every (env, pause, dataset, selection, algo) once; newdata only at its pause
    assert not t1.duplicated(["env", "pause", "dataset", "selection", "algo"]).any()
    assert set(t1[t1["dataset"] == "newdata"]["pause"]) == {60_000}


def test_online_at_the_pause_is_the_nearest_evaluation_before_it(raw: pd.DataFrame, expected: Expected) -> None:
    gap = raw[~((raw["stage"] == "online") & (raw["env"] == "hopper") & (raw["env_step"] == 40_000))]
    t1 = tables.final_policy_table(sel.prepare(gap), expected)
    row = t1[(t1["env"] == "hopper") & (t1["pause"] == 40_000)].iloc[0]
    before = _rows(raw, env="hopper", stage="online", env_step=35_000, variant_options="")["value"]
    assert row["online_mean"] == pytest.approx(before.mean())


def test_t2_equals_a_direct_computation(raw: pd.DataFrame, prepared: pd.DataFrame, expected: Expected) -> None:
    t2 = tables.validation_table(prepared, expected)
    assert set(t2["pause"]) == {60_000}  # the only pause with newdata
    row = t2[(t2["env"] == "hopper") & (t2["algo"] == "iql") & (t2["dataset"] == "newdata")
             & (t2["validation"] == "full") & (t2["selection"] == "best-of")].iloc[0]  # fmt: skip
    common = {"env": "hopper", "stage": "recommend", "algo": "iql", "dataset": "newdata", "pause": 60_000}
    full = _rows(raw, validation="full", selection="best-of", **common).set_index("seed")["value"]
    none = _rows(raw, validation="none", **common).set_index("seed")["value"]
    assert row["mean"] == pytest.approx(full.mean())
    assert row["std"] == pytest.approx(full.std())
    assert row["diff_vs_none_mean"] == pytest.approx((full - none).mean())
    none_row = t2[(t2["env"] == "hopper") & (t2["algo"] == "iql") & (t2["dataset"] == "newdata")
                  & (t2["validation"] == "none")].iloc[0]  # fmt: skip
    assert np.isnan(none_row["diff_vs_none_mean"])
    # the budget each side spent: validation charges 3K env steps
    assert row["env_step_mean"] == 73_000 and none_row["env_step_mean"] == 70_000
    shown = tables.display_tables("T2", t2)[0][1]
    assert {"Spent (full)", "Spent (none)"} <= set(shown.columns)
    spent = shown.groupby("Dataset")[["Spent (full)", "Spent (none)"]].agg(set)
    assert spent.loc["newdata"].tolist() == [{"73K"}, {"70K"}] and spent.loc["buffer"].tolist() == [{"63K"}, {"60K"}]


def test_t3_equals_a_direct_computation(raw: pd.DataFrame, prepared: pd.DataFrame, expected: Expected) -> None:
    t3 = tables.finetune_table(prepared, expected)
    assert list(t3[t3["env"] == "hopper"]["method"]) == ["sac", "iql", "pex", "calql"]
    pex = _rows(raw, env="sawyer-push", stage="finetune", algo="pex", env_step=TOTAL, variant_options="")
    sac = _rows(raw, env="sawyer-push", stage="online", env_step=TOTAL, variant_options="")
    pex, sac = pex.set_index("seed")["value"], sac.set_index("seed")["value"]
    row = t3[(t3["env"] == "sawyer-push") & (t3["method"] == "pex")].iloc[0]
    assert row["final_mean"] == pytest.approx(pex.mean())
    assert row["final_std"] == pytest.approx(pex.std())
    assert row["diff_vs_sac_mean"] == pytest.approx((pex - sac).mean())
    sac_row = t3[(t3["env"] == "sawyer-push") & (t3["method"] == "sac")].iloc[0]
    assert sac_row["final_mean"] == pytest.approx(sac.mean())
    # the extended (C4) and reward (C5) variants stay out of T3
    assert t3["final_step_mean"].max() == TOTAL


def test_l1_equals_a_direct_computation(raw: pd.DataFrame, prepared: pd.DataFrame, expected: Expected) -> None:
    l1 = tables.learning_table(prepared, expected)
    assert not l1.duplicated(["env", "dataset", "pause", "algo"]).any()
    common = {"env": "hopper", "stage": "recommend", "algo": "calql", "dataset": "newdata", "validation": "none"}
    learner = _rows(raw, pause=60_000, **common).set_index("seed")["value"]
    online = _rows(raw, env="hopper", stage="online", env_step=60_000, variant_options="").set_index("seed")["value"]
    row = l1[(l1["env"] == "hopper") & (l1["dataset"] == "newdata") & (l1["algo"] == "calql")].iloc[0]
    assert row["pause"] == 60_000 and row["n_seeds"] == 5
    assert row["learner_mean"] == pytest.approx(learner.mean())
    assert row["behaviour_mean"] == pytest.approx(online.mean())
    assert row["diff_mean"] == pytest.approx((learner - online).mean())
    assert row["diff_std"] == pytest.approx((learner - online).std())
    assert row["reading"] == tables.learning_reading(row["diff_mean"], row["behaviour_mean"])
    shown = tables.display_tables("L1", l1)[0][1]
    assert {"Behaviour: SAC @ pause", "IQL", "Δ Cal-QL"} <= set(shown.columns)


@pytest.mark.parametrize(
    ("diff", "behaviour", "reading"),
    [(50.0, 400.0, "exceeded"), (-39.0, 400.0, "recovered"), (-41.0, 400.0, "lost"), (0.05, 0.0, "recovered"),
     (0.2, 0.0, "exceeded"), (-0.2, -1500.0, "recovered")],
)  # fmt: skip
def test_l1_reads_the_difference_against_the_behaviour_level(diff: float, behaviour: float, reading: str) -> None:
    assert tables.learning_reading(diff, behaviour) == reading


def test_a_missing_variant_is_a_clear_error(raw: pd.DataFrame, expected: Expected) -> None:
    no_cql = sel.prepare(raw[~((raw["stage"] == "recommend") & (raw["algo"] == "cql"))])
    with pytest.raises(MissingResultsError, match=r"algo=cql"):
        tables.final_policy_table(no_cql, expected)
    no_none = sel.prepare(raw[raw["validation"] != "none"])
    with pytest.raises(MissingResultsError, match=r"validation=none: no rows"):
        tables.validation_table(no_none, expected)
    no_seed = sel.prepare(raw[~((raw["algo"] == "pex") & (raw["seed"] == 3))])
    with pytest.raises(MissingResultsError, match=r"algo=pex.*seed=3"):
        tables.finetune_table(no_seed, expected)
    no_pex = sel.prepare(raw[raw["algo"] != "pex"])
    with pytest.raises(MissingResultsError, match=r"algo=pex.*no rows"):
        tables.finetune_table(no_pex, expected)


def test_an_unfinished_run_is_not_taken_as_final(raw: pd.DataFrame, expected: Expected) -> None:
    cut = raw[~((raw["stage"] == "finetune") & (raw["algo"] == "iql") & (raw["env"] == "hopper")
                & (raw["seed"] == 0) & (raw["env_step"] > 90_000))]  # fmt: skip
    with pytest.raises(MissingResultsError, match="stop before the budget"):
        tables.finetune_table(sel.prepare(cut), expected)


def test_build_tables_writes_csv_markdown_and_latex(raw: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "tidy.csv"
    tidy.write(raw, path)
    written = tables.build_tables([path], tmp_path / "tables", config())
    assert sorted(written) == ["L1", "T1", "T2", "T3"]
    for paths in written.values():
        assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
        assert all(p.stat().st_size > 100 for p in paths)
    md = (tmp_path / "tables" / "T3.md").read_text()
    assert "| Hopper" in md and "SAC continuation" in md and "nan" not in md
    tex = (tmp_path / "tables" / "T1.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex
    t1 = pd.read_csv(tmp_path / "tables" / "T1.csv")
    assert t1["recommend_mean"].notna().all()


def test_cli_reads_a_config_file(raw: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "tidy.csv"
    tidy.write(raw, path)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(config_file_overrides()))
    assert cli.main(["tables", "--results", str(path), "--out", str(tmp_path / "cli"), "--config", str(cfg_file),
                     "--tables", "T3"]) == 0  # fmt: skip
    assert (tmp_path / "cli" / "T3.md").exists()


def test_t3_shows_wsrl_only_when_configured(tmp_path) -> None:
    path = tmp_path / "tidy.csv"
    tidy.write(make_results(methods=WITH_WSRL, ft_gain={"wsrl": {"hopper": 0.1}}), path)
    plain = tables.build_tables([path], tmp_path / "plain", config(), tables=["T3"])["T3"]
    assert "WSRL" not in plain[1].read_text()  # not in finetune.methods: not shown, though the results hold it
    cfg = config(finetune={"methods": list(WITH_WSRL)})
    t3 = tables.finetune_table(sel.load_results([path]), Expected.from_config(cfg))
    assert list(t3[t3["env"] == "hopper"]["method"]) == ["sac", "iql", "pex", "calql", "wsrl"]
    wsrl = t3[(t3["env"] == "hopper") & (t3["method"] == "wsrl")].iloc[0]
    assert wsrl["diff_vs_sac_mean"] > 0
    md = tables.build_tables([path], tmp_path / "wsrl", cfg, tables=["T3"])["T3"][1].read_text()
    assert "| WSRL " in md and "Δ WSRL" in md and "offline data kept" not in md
    kept = config(finetune={"methods": list(WITH_WSRL), "wsrl": {"keep_offline_data": True}})
    md = tables.build_tables([path], tmp_path / "kept", kept, tables=["T3"])["T3"][1].read_text()
    assert "Δ WSRL (offline data kept)" in md


def test_t3_states_the_calql_mix_and_pex_temperature_of_the_run(raw: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "tidy.csv"
    tidy.write(raw, path)
    csv, md, _ = tables.build_tables([path], tmp_path / "half", config(), tables=["T3"])["T3"]
    t3 = pd.read_csv(csv, keep_default_na=False).set_index("method")
    assert t3.loc["calql", "settings"].unique().tolist() == ["calql_mixing=0.5"]
    assert t3.loc["pex", "settings"].unique().tolist() == ["pex_beta=10"]
    assert "Settings: PEX: pex_beta=10; Cal-QL FT: calql_mixing=0.5." in md.read_text()
    cfg = config(finetune={"calql_mixing": "proportional", "pex_beta": 3.0})
    md = tables.build_tables([path], tmp_path / "prop", cfg, tables=["T3"])["T3"][1].read_text()
    assert "Cal-QL FT: calql_mixing=proportional" in md and "PEX: pex_beta=3" in md


def test_t1_shows_c1s_control_with_its_budget_matched_online_sac(raw: pd.DataFrame, prepared, expected) -> None:
    t1 = tables.final_policy_table(prepared, expected)
    control = t1[t1["selection"] == "online"]
    assert set(control["algo"]) == {"sac"} and len(control) == len(expected.envs) * len(set(control["pause"]))
    row = control[(control["env"] == "sawyer-push") & (control["pause"] == control["pause"].min())].iloc[0]
    pause = int(row["pause"])
    snap = _rows(raw, env="sawyer-push", stage="recommend", selection="online", pause=pause).set_index("seed")["value"]
    best_of = _rows(raw, env="sawyer-push", stage="recommend", selection="best-of", algo="iql", dataset="buffer",
                    pause=pause)  # fmt: skip
    assert row["recommend_mean"] == pytest.approx(snap.mean())
    assert row["env_step_mean"] == best_of["env_step"].mean()  # the best-of recommendation's ledger step
    online = _rows(raw, env="sawyer-push", stage="online", variant_options="")
    steps = _rows(raw, env="sawyer-push", stage="recommend", selection="online", pause=pause)
    matched = [  # online SAC's last evaluation at or before the control's step
        online[(online["seed"] == s) & (online["env_step"] <= step)].sort_values("env_step")["value"].iloc[-1]
        for s, step in steps[["seed", "env_step"]].itertuples(index=False)
    ]
    assert row["online_matched_mean"] == pytest.approx(np.mean(matched))
    missing = raw[~((raw["selection"] == "online") & (raw["env"] == "hopper"))]
    with pytest.raises(MissingResultsError, match="control.*env=hopper"):
        tables.final_policy_table(sel.prepare(missing), expected)


def test_l1_with_one_seed_states_it_rather_than_a_spread() -> None:
    envs = ["hopper"]
    expected = Expected.from_config(config(envs=envs, seeds=[0]))
    table = tables.learning_table(sel.prepare(make_results(envs=envs, seeds=[0])), expected)
    ((title, shown),) = tables.display_tables("L1", table)
    assert "values of 1 seed (no ± std" in title and "the reading is of one run" in title and "±" not in title[:80]
    deltas = shown[[c for c in shown.columns if c.startswith("Δ")]].to_numpy().ravel()
    assert all("1 seed)" in d and "±" not in d for d in deltas)
    two = Expected.from_config(config(envs=envs, seeds=[0, 1]))
    ((title, shown),) = tables.display_tables(
        "L1", tables.learning_table(sel.prepare(make_results(envs=envs, seeds=[0, 1])), two)
    )
    assert "mean ± std over 2 seeds" in title and "1 seed" not in title


def test_every_table_title_with_one_seed_says_values_of_one_seed() -> None:
    """T1, T1's control, T2, T3 and L1 of a one-seed run: no "mean ± std over 1 seeds" in any title."""
    envs = ["hopper"]
    expected = Expected.from_config(config(envs=envs, seeds=[0]))
    df = sel.prepare(make_results(envs=envs, seeds=[0]))
    built = {
        "T1": tables.final_policy_table(df, expected),
        "T2": tables.validation_table(df, expected),
        "T3": tables.finetune_table(df, expected),
        "L1": tables.learning_table(df, expected),
    }
    titles = [title for name, table in built.items() for title, _ in tables.display_tables(name, table)]
    assert len(titles) >= 4
    for title in titles:
        assert "values of 1 seed" in title and "over 1 seeds" not in title and "mean ± std" not in title, title
