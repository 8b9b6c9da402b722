"""The budget ledger: charges by category, what remains, refusals, and persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from replication.plan.ledger import CATEGORIES, BudgetError, Entry, Ledger


def test_charges_add_up_by_category() -> None:
    ledger = Ledger(1000)
    ledger.charge("online_training", 600, "SAC up to the pause").charge("online_validation", 30)
    ledger.charge("online_training", 100).charge("newdata", 200, "epsilon 0")
    assert ledger.spent == 930
    assert ledger.remaining == 70
    assert ledger.by_category() == {
        "online_training": 700,
        "online_validation": 30,
        "newdata": 200,
        "offline_validation": 0,
        "finetune": 0,
    }
    assert list(ledger.by_category()) == list(CATEGORIES)
    assert ledger.describe() == "online_training=700, online_validation=30, newdata=200"
    assert Ledger(5).describe() == "nothing"


def test_the_whole_budget_can_be_spent_but_not_more() -> None:
    ledger = Ledger(100).charge("online_training", 60).charge("offline_validation", 10)
    ledger.charge("finetune", 30)
    assert ledger.remaining == 0
    with pytest.raises(BudgetError) as info:
        ledger.charge("finetune", 1)
    message = str(info.value)
    assert "101 of a total budget of 100" in message
    for part in ("online_training=60", "offline_validation=10", "finetune=30"):
        assert part in message
    assert "newdata" not in message  # categories never charged are not listed
    assert ledger.spent == 100  # the refused charge left no trace


def test_overdraw_is_refused_in_one_charge() -> None:
    ledger = Ledger(50).charge("online_training", 20)
    with pytest.raises(BudgetError, match="charging 31 env steps to newdata would spend 51"):
        ledger.charge("newdata", 31)
    assert ledger.by_category()["newdata"] == 0


def test_bad_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown ledger category 'training'"):
        Ledger(10).charge("training", 1)
    with pytest.raises(ValueError, match="non-negative integer"):
        Ledger(10).charge("finetune", -1)
    with pytest.raises(ValueError, match="non-negative integer"):
        Entry("finetune", 2.5)
    assert Entry("finetune", 0).steps == 0


def test_copy_is_independent() -> None:
    ledger = Ledger(100).charge("online_training", 40)
    branch = ledger.copy().charge("finetune", 50)
    assert ledger.spent == 40 and branch.spent == 90
    assert ledger.entries == [Entry("online_training", 40)]


def test_round_trip(tmp_path: Path) -> None:
    ledger = Ledger(1_000_000)
    ledger.charge("online_training", 800_000, "to the pause").charge("online_validation", 18_000)
    ledger.charge("offline_validation", 9_000).charge("finetune", 173_000, "iql")
    data = ledger.to_dict()
    assert data["total"] == 1_000_000 and data["spent"] == 1_000_000 and data["remaining"] == 0
    assert data["entries"][0] == {"category": "online_training", "steps": 800_000, "note": "to the pause"}
    again = Ledger.from_dict(data)
    assert again == ledger
    assert again.to_dict() == data
    path = tmp_path / "ledger.json"
    ledger.save(path)
    assert Ledger.load(path) == ledger


def test_from_dict_refuses_an_overdrawn_record() -> None:
    data = Ledger(10).charge("online_training", 10).to_dict()
    data["total"] = 9
    with pytest.raises(BudgetError):
        Ledger.from_dict(data)
