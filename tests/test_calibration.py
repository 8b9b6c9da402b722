"""``replication calibrate``: the real scorecard on simulated studies with and without the claimed effects."""

from __future__ import annotations

import json

import pytest

from replication import cli
from replication.analysis import calibration

ENVS = ["hopper", "walker2d", "kitchen", "kitchen-sparse", "sawyer-push", "halfcheetah"]
DECISIVE = ("C1.1", "C1.2", "C2.1", "C3.1", "C3.2", "C3.3", "C4.1", "C4.2", "C4.3", "C5.1", "C6.1", "C6.2")


def test_planted_effects_are_found() -> None:
    result = calibration.calibrate("effect", sims=2, seeds=5, envs=ENVS, sigma=0.02, reps=200)
    for test in DECISIVE:
        assert result["tests"][test]["reproduced"] == 1.0, (test, result["tests"][test])


def test_no_effect_is_not_reproduced() -> None:
    result = calibration.calibrate("null", sims=2, seeds=5, envs=ENVS, sigma=0.02, reps=200)
    for test in DECISIVE:  # C4.3's and C6's nulls: a margin below the level they must reach
        assert result["tests"][test]["reproduced"] == 0.0, (test, result["tests"][test])
    assert result["roles"]["C6.1"] == result["roles"]["C6.2"] == "decisive"


def test_few_seeds_are_inconclusive_and_results_repeat() -> None:
    a = calibration.calibrate("effect", sims=1, seeds=3, envs=ENVS[:3], sigma=0.1, reps=100)
    assert all(t["inconclusive"] + t.get("not_evaluated", 0) == 1.0 for t in a["tests"].values())
    assert a["min_seeds"] == 5
    b = calibration.calibrate("null", sims=2, seeds=3, envs=ENVS[:3], sigma=0.1, reps=100, min_seeds=2, seed=7)
    assert b == calibration.calibrate("null", sims=2, seeds=3, envs=ENVS[:3], sigma=0.1, reps=100, min_seeds=2, seed=7)
    assert set(b["tests"]["C1.1"]) == {"reproduced", "not_reproduced", "inconclusive"}
    assert sum(b["tests"]["C2.1"].values()) == pytest.approx(1.0)


def test_command_line_prints_json_and_markdown(capsys) -> None:
    args = ["calibrate", "--scenario", "null", "--sims", "1", "--seeds", "2", "--envs", "hopper", "kitchen",
            "--reps", "50", "--format", "json"]  # fmt: skip
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["scenario"], out["sims"], out["seeds"], out["envs"]) == ("null", 1, 2, ["hopper", "kitchen"])
    assert set(out["tests"]["C1.1"]) == {"reproduced", "not_reproduced", "inconclusive"}
    assert cli.main([*args[:-1], "markdown"]) == 0
    assert "| C1.1 | decisive |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown environments"):
        calibration.calibrate("null", sims=1, seeds=2, envs=["nope"])


def test_wsrl_is_in_the_calibrated_grid_and_sits_on_c6s_boundary() -> None:
    import numpy as np

    cfg = calibration.calibration_config(ENVS[:2], seeds=3)
    assert cfg["finetune"]["methods"][-1] == "wsrl"
    df, expected = calibration.synthetic_results(cfg, "null", sigma=1e-9, rng=np.random.default_rng(0), margin=0.05)
    assert "wsrl" in expected.finetune_methods
    wsrl = df[(df["stage"] == "finetune") & (df["algo"] == "wsrl")]
    sac = df[(df["stage"] == "online") & (df["env_step"] == expected.total_steps)]
    assert wsrl["value"].mean() == pytest.approx(calibration.LEVEL - 0.05)  # a drop of the margin, to the end
    assert sac["value"].mean() == pytest.approx(calibration.LEVEL)
