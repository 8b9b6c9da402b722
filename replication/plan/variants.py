"""The variants that branch from one online run, and what each is charged.

Every variant pays for exactly what it uses:

* online training up to its pause point;
* online validation, when it picks the data collector (newdata) or the policy (best-of);
* the newdata collection, when its dataset is newdata;
* offline validation, when it picks the offline checkpoint.

"Without validation" (``validation="none"``): last online policy as the collector, last offline
checkpoint as the output, nothing charged for validation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from replication.plan import config
from replication.plan.ledger import Entry, Ledger
from replication.plan.schema import validation_costs
from replication.plan.vocabulary import NEWDATA_COLLECTORS, dataset_name, newdata_pause_step

VALIDATIONS = ("full", "none")
SELECTIONS = ("offline", "best-of")
CONTROL_SELECTION = "online"  # C1's control: the validated best online snapshot, no offline learner


@dataclasses.dataclass(frozen=True)
class OfflineDataset:
    """One dataset an offline learner trains on: ``buffer`` at a pause, or newdata."""

    label: str  # buffer | newdata | newdata-eps0.1 ...
    pause: int
    collector: str | None = None  # newdata only: best | last
    epsilon: float = 0.0  # newdata only: the collector's exploration noise

    @property
    def is_newdata(self) -> bool:
        return self.label != "buffer"

    @property
    def validations(self) -> tuple[str, ...]:
        """The validation settings this dataset serves.

        A buffer dataset serves both (validation only picks checkpoints and policies); a
        newdata dataset was collected by either the validated (``best``) or the last online
        policy, so it belongs to one setting.
        """
        if not self.is_newdata:
            return VALIDATIONS
        return ("full",) if self.collector == "best" else ("none",)


def offline_datasets(cfg: dict[str, Any]) -> list[OfflineDataset]:
    """Every dataset the offline learners train on, for one cell."""
    out = []
    if "buffer" in cfg["offline"]["datasets"]:
        out += [OfflineDataset("buffer", p) for p in config.pause_steps(cfg)]
    if "newdata" in cfg["offline"]["datasets"]:
        pause = newdata_pause_step(cfg)
        for eps in cfg["newdata"]["epsilon"]:
            out += [OfflineDataset(dataset_name(eps), pause, c, float(eps)) for c in NEWDATA_COLLECTORS]
    return out


def recommendation_entries(
    cfg: dict[str, Any], env: str, dataset: OfflineDataset, validation: str, selection: str
) -> list[Entry]:
    """What a final-policy recommendation variant spends, in the order it spends it."""
    if validation not in VALIDATIONS or selection not in SELECTIONS:
        raise ValueError(f"unknown variant validation={validation!r} selection={selection!r}")
    if selection == "best-of" and validation != "full":
        raise ValueError("best-of selection needs validation scores: it exists only with validation='full'")
    online_val, offline_val = validation_costs(cfg, env)
    entries = [Entry("online_training", dataset.pause)]
    if validation == "full" and (dataset.is_newdata or selection == "best-of"):
        entries.append(Entry("online_validation", online_val))
    if dataset.is_newdata:
        entries.append(Entry("newdata", cfg["newdata"]["size"]))
    if validation == "full":
        entries.append(Entry("offline_validation", offline_val))
    return entries


def recommendation_ledger(
    cfg: dict[str, Any], env: str, dataset: OfflineDataset, validation: str, selection: str
) -> Ledger:
    """Env steps spent by a final-policy recommendation variant (:func:`recommendation_entries`)."""
    return Ledger(cfg["budget"]["total_steps"]).extend(recommendation_entries(cfg, env, dataset, validation, selection))


def control_ledger(cfg: dict[str, Any], env: str, pause: int) -> Ledger:
    """Env steps charged to C1's control at ``pause``: online SAC's validated best snapshot.

    It is charged the ledger of the best-of recommendation it controls for (the buffer at
    ``pause``): online training, the online validation it uses, and the offline validation, which
    it leaves unspent (it has no offline learner). Both therefore sit at the same env step and meet
    the same budget-matched online SAC; a pause whose best-of would overdraw the budget has none.
    """
    ledger = recommendation_ledger(cfg, env, OfflineDataset("buffer", pause), "full", "best-of")
    entries = [
        dataclasses.replace(e, note="matched to best-of; unspent (no offline learner)")
        if e.category == "offline_validation"
        else e
        for e in ledger.entries
    ]
    return Ledger(ledger.total).extend(entries)


def finetune_dataset(cfg: dict[str, Any]) -> OfflineDataset:
    """The dataset of the offline agent fine-tuning starts from."""
    ft = cfg["finetune"]
    if ft["dataset"] == "buffer":
        return OfflineDataset("buffer", config.finetune_pause_step(cfg))
    return OfflineDataset(dataset_name(0.0), newdata_pause_step(cfg), "best" if ft["validation"] else "last", 0.0)


def finetune_entries(cfg: dict[str, Any], env: str) -> list[Entry]:
    """What is spent before fine-tuning starts: the offline agent it starts from."""
    validation = "full" if cfg["finetune"]["validation"] else "none"
    return recommendation_entries(cfg, env, finetune_dataset(cfg), validation, "offline")


def finetune_ledger(cfg: dict[str, Any], env: str) -> Ledger:
    """Env steps spent before fine-tuning starts (:func:`finetune_entries`)."""
    return Ledger(cfg["budget"]["total_steps"]).extend(finetune_entries(cfg, env))
