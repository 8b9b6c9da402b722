"""The CI check of regenerated tables and figures against committed references."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from replication import cli
from replication.analysis import reference

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "results" / "reference" / "ci"


def make_run(root: Path) -> Path:
    (root / "tables").mkdir(parents=True)
    (root / "figures").mkdir()
    pd.DataFrame(
        {"env": ["hopper", "kitchen"], "mean": [0.125, 3.5], "note": ["2 of 3 help; +0.012 [+0.010, +0.020]", ""]}
    ).to_csv(root / "tables" / "T1.csv", index=False)
    pixels = np.full((40, 60, 3), 255, np.uint8)
    pixels[10:30, 20:40] = (30, 60, 200)
    Image.fromarray(pixels).save(root / "figures" / "F1.png")
    return root


def test_identical_run_passes_and_refresh_copies_every_file(tmp_path):
    run = make_run(tmp_path / "run")
    written = reference.refresh(run, tmp_path / "ref")
    assert written == ["figures/F1.png", "tables/T1.csv"]
    report = reference.check(run, tmp_path / "ref", tmp_path / "diff")
    assert report.ok and len(report.compared) == 2
    assert not (tmp_path / "diff").exists()


def test_refresh_with_documents_keeps_the_report_and_tidy_results(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "report.md").write_text("# report")
    (run / "tidy.csv").write_text("env\nhopper\n")
    (run / "tables" / "T1.md").write_text("| T1 |")
    (run / "cells").mkdir()
    (run / "cells" / "dataset.h5").write_bytes(b"0")  # datasets, checkpoints and policies stay out
    assert reference.refresh(run, tmp_path / "plain") == ["figures/F1.png", "tables/T1.csv"]
    written = reference.refresh(run, tmp_path / "ref", documents=True)
    assert written == ["figures/F1.png", "tables/T1.csv", "report.md", "tables/T1.md", "tidy.csv"]
    assert (tmp_path / "ref" / "report.md").read_text() == "# report"
    report = reference.check(run, tmp_path / "ref", tmp_path / "diff")  # compares the tables and figures only
    assert report.ok and report.compared == ["figures/F1.png", "tables/T1.csv"]


def test_refresh_keeps_what_is_committed_beside_the_references(tmp_path):
    """A study's shards and parity benchmark stay; a table the run no longer makes goes."""
    run = make_run(tmp_path / "run")
    ref = tmp_path / "ref"
    for kept in ("shards/seeds0-4/tidy.csv", "parity/parity.md"):
        (ref / kept).parent.mkdir(parents=True, exist_ok=True)
        (ref / kept).write_text("kept")
    (ref / "tables").mkdir()
    (ref / "tables" / "T9.csv").write_text("stale")
    (ref / "report.md").write_text("old report")
    reference.refresh(run, ref)
    assert (ref / "shards/seeds0-4/tidy.csv").read_text() == (ref / "parity/parity.md").read_text() == "kept"
    assert not (ref / "tables" / "T9.csv").exists() and not (ref / "report.md").exists()
    assert reference.check(run, ref, tmp_path / "diff").ok


def test_check_compares_chosen_files_of_two_runs(tmp_path, capsys):
    """Two runs' cell results, compared file by file within the tolerance (a rerun of one cell)."""
    for name, value in (("a", 0.5), ("b", 0.5 * (1 + 1e-6))):
        cell = tmp_path / name / "cells" / "hopper" / "seed0" / "online"
        cell.mkdir(parents=True)
        pd.DataFrame({"env_step": [1000], "value": [value]}).to_csv(cell / "curve.csv", index=False)
    make_run(tmp_path / "a")  # tables and figures not asked for are not compared
    pattern = "cells/hopper/seed0/**/*.csv"
    report = reference.check(tmp_path / "b", tmp_path / "a", tmp_path / "diff", (pattern,))
    assert report.ok and report.compared == ["cells/hopper/seed0/online/curve.csv"]
    args = ["reference", "check", "--run", str(tmp_path / "b"), "--reference", str(tmp_path / "a"), "--files", pattern]
    assert cli.main(args) == 0
    assert "all 1 files" in capsys.readouterr().out
    pd.DataFrame({"env_step": [1000], "value": [0.6]}).to_csv(
        tmp_path / "b" / "cells" / "hopper" / "seed0" / "online" / "curve.csv", index=False
    )
    assert cli.main(args) == 1
    with pytest.raises(FileNotFoundError, match="no files matching"):
        reference.check(tmp_path / "b", tmp_path / "a", tmp_path / "diff", ("cells/walker2d/**/*.csv",))


def test_numbers_within_tolerance_pass_and_beyond_it_fail(tmp_path):
    run = make_run(tmp_path / "run")
    reference.refresh(run, tmp_path / "ref")
    table = pd.read_csv(run / "tables" / "T1.csv", keep_default_na=False)
    table.loc[0, "mean"] = 0.125 * (1 + 1e-5)  # float32 rounding that another CPU may give
    table.to_csv(run / "tables" / "T1.csv", index=False)
    assert reference.check(run, tmp_path / "ref", tmp_path / "diff").ok
    table.loc[0, "mean"] = 0.125 * (1 + 1e-3)
    table.to_csv(run / "tables" / "T1.csv", index=False)
    assert not reference.check(run, tmp_path / "ref", tmp_path / "diff").ok
    table.loc[0, "mean"] = 0.125
    table.loc[1, "note"] = "x"
    table.to_csv(run / "tables" / "T1.csv", index=False)
    assert not reference.check(run, tmp_path / "ref", tmp_path / "diff").ok


def test_numbers_inside_text_are_compared_as_numbers():
    assert reference.same_cell("+0.012 [+0.010, +0.020]", "+0.0120 [+0.010, +0.020]")
    assert not reference.same_cell("+0.012 [+0.010, +0.020]", "+0.013 [+0.010, +0.020]")
    assert not reference.same_cell("2 of 3 help", "2 of 3 hurt")
    assert reference.same_cell("", "nan") and not reference.same_cell("", "0.0")


def test_a_changed_figure_fails_with_a_side_by_side_image(tmp_path):
    run = make_run(tmp_path / "run")
    reference.refresh(run, tmp_path / "ref")
    pixels = np.asarray(Image.open(run / "figures" / "F1.png")).copy()
    pixels[10:30, 25:45] = (30, 60, 200)  # the bar moved 5 pixels
    Image.fromarray(pixels).save(run / "figures" / "F1.png")
    report = reference.check(run, tmp_path / "ref", tmp_path / "diff")
    assert [m.path for m in report.mismatches] == ["figures/F1.png"]
    assert "RMS" in report.mismatches[0].summary
    side = tmp_path / "diff" / "figures__F1.png.side-by-side.png"
    assert Image.open(side).size[0] > 3 * 60  # reference | regenerated | difference
    assert side.name in (tmp_path / "diff" / "index.html").read_text()


def test_missing_and_unexpected_files_are_mismatches(tmp_path):
    run = make_run(tmp_path / "run")
    reference.refresh(run, tmp_path / "ref")
    (run / "figures" / "F1.png").rename(run / "figures" / "F9.png")
    report = reference.check(run, tmp_path / "ref", tmp_path / "diff")
    assert {(m.path, m.summary) for m in report.mismatches} == {
        ("figures/F1.png", "missing from the run"),
        ("figures/F9.png", "made by the run but has no reference"),
    }


def test_check_without_references_says_how_to_make_them(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="reference refresh"):
        reference.check(run, tmp_path / "none", tmp_path / "diff")


def test_perturbing_one_committed_reference_number_fails_with_a_readable_diff(tmp_path, capsys):
    """The committed CI references against themselves pass; one number changed in them fails."""
    assert reference.reference_files(COMMITTED), f"no committed references under {COMMITTED}: run `make reference`"
    ref = tmp_path / "ref"
    shutil.copytree(COMMITTED, ref)
    assert (
        cli.main(
            ["reference", "check", "--run", str(COMMITTED), "--reference", str(ref), "--diff", str(tmp_path / "d")]
        )
        == 0
    )

    table = ref / "tables" / "T1.csv"
    frame = pd.read_csv(table, keep_default_na=False, dtype=str)
    column = next(c for c in frame.columns if c.endswith("_mean"))
    old = frame.loc[0, column]
    frame.loc[0, column] = repr(float(old) + 0.5)
    frame.to_csv(table, index=False)

    status = cli.main(
        ["reference", "check", "--run", str(COMMITTED), "--reference", str(ref), "--diff", str(tmp_path / "d")]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert f"tables/T1.csv: 1 cell(s) differ; first: row 1, column {column}" in out
    page = (tmp_path / "d" / "index.html").read_text()
    assert "<del>" in page and old in page


def test_infinite_bounds_match_only_themselves():
    """An unbounded interval (zero spread at too few seeds) matches itself, never a finite bound."""
    assert reference.close(float("-inf"), float("-inf")) and reference.close(float("inf"), float("inf"))
    assert not reference.close(float("-inf"), float("inf")) and not reference.close(1e300, float("inf"))
