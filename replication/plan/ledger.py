"""The budget ledger: every environment step a variant spends, by what it was spent on.

A cell's total budget ``T`` pays for online training, validation episodes, fresh data
collection and fine-tuning. Each variant owns a ledger; its entries say where each step went, so
results are placed at the env steps the variant really used (its "ledger-true" step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from replication.io import read_json, write_json

CATEGORIES = ("online_training", "online_validation", "newdata", "offline_validation", "finetune")


class BudgetError(ValueError):
    """A variant would spend more env steps than the total budget."""


@dataclasses.dataclass(frozen=True)
class Entry:
    category: str
    steps: int
    note: str = ""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown ledger category {self.category!r}; valid: {', '.join(CATEGORIES)}")
        if int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"ledger entry {self.category}: steps must be a non-negative integer, got {self.steps}")
        object.__setattr__(self, "steps", int(self.steps))


@dataclasses.dataclass
class Ledger:
    """Env steps charged against a total budget."""

    total: int
    entries: list[Entry] = dataclasses.field(default_factory=list)

    def charge(self, category: str, steps: int, note: str = "") -> Ledger:
        """Record ``steps`` env steps spent on ``category``; refuses to overdraw the budget."""
        entry = Entry(category, steps, note)
        if self.spent + entry.steps > self.total:
            raise BudgetError(
                f"charging {entry.steps} env steps to {category} would spend {self.spent + entry.steps} "
                f"of a total budget of {self.total}; already charged: {self.describe()}"
            )
        self.entries.append(entry)
        return self

    def extend(self, entries: Iterable[Entry]) -> Ledger:
        for e in entries:
            self.charge(e.category, e.steps, e.note)
        return self

    def copy(self) -> Ledger:
        return Ledger(self.total, list(self.entries))

    @property
    def spent(self) -> int:
        return sum(e.steps for e in self.entries)

    @property
    def remaining(self) -> int:
        return self.total - self.spent

    def by_category(self) -> dict[str, int]:
        out = dict.fromkeys(CATEGORIES, 0)
        for e in self.entries:
            out[e.category] += e.steps
        return out

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.by_category().items() if v]
        return ", ".join(parts) or "nothing"

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "spent": self.spent,
            "remaining": self.remaining,
            "by_category": self.by_category(),
            "entries": [dataclasses.asdict(e) for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ledger:
        return cls(int(data["total"])).extend(Entry(**e) for e in data["entries"])

    def save(self, path: Path | str) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path | str) -> Ledger:
        return cls.from_dict(read_json(path))
