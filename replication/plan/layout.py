"""Where every job of a run writes: outputs, log and benchmark, under ``results/<name>/``.

One set of functions gives both the concrete paths of a job and the Snakemake patterns of its
rule: called with ``"{env}"``, ``"{seed}"`` and ``"{dataset}"`` they return the rule's wildcards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

Paths = dict[str, str | list[str]]


@dataclasses.dataclass(frozen=True)
class Layout:
    """The paths of one results directory (``results/<name>``)."""

    results: str

    @property
    def config_file(self) -> str:
        """The resolved config every job reads."""
        return f"{self.results}/config.yaml"

    def cell(self, env: str, seed: int | str) -> str:
        return f"{self.results}/cells/{env}/seed{seed}"

    def online_dir(self, env: str, seed: int | str) -> str:
        return f"{self.cell(env, seed)}/online"

    def pause_dir(self, env: str, seed: int | str, pause: int) -> str:
        return f"{self.online_dir(env, seed)}/pause_{pause}"

    def control_file(self, env: str, seed: int | str) -> str:
        """C1's control of a cell: tidy rows written beside its online run (``replication control``)."""
        return f"{self.online_dir(env, seed)}/control.csv"

    def control_summary(self, env: str, seed: int | str) -> str:
        """The control job's summary (its provenance; not a declared output)."""
        return f"{self.online_dir(env, seed)}/control.json"

    def newdata_file(self, env: str, seed: int | str, key: str) -> str:
        return f"{self.cell(env, seed)}/newdata/{key}.h5"

    def buffer_file(self, env: str, seed: int | str, pause: int) -> str:
        return f"{self.pause_dir(env, seed, pause)}/dataset_buffer.h5"

    def job_dir(self, rule: str, env: str, seed: int | str, variant: str = "") -> str:
        """The directory a job writes into (``--out``); a newdata job writes one file instead."""
        if rule == "online":
            return self.online_dir(env, seed)
        if rule in ("offline", "finetune"):
            return f"{self.cell(env, seed)}/{rule}/{variant}"
        raise ValueError(f"rule {rule!r} has no output directory")

    def outputs(self, rule: str, env: str, seed: int | str, variant: str = "", pauses: Sequence[int] = ()) -> Paths:
        """The named outputs of a job (``pauses``: the online run's pauses)."""
        if rule == "online":
            out = self.online_dir(env, seed)
            return {
                "curve": f"{out}/curve.csv",
                "summary": f"{out}/online.json",
                "datasets": [self.buffer_file(env, seed, p) for p in pauses],
                "validation": [f"{self.pause_dir(env, seed, p)}/validation.json" for p in pauses],
            }
        if rule == "control":
            return {"control": self.control_file(env, seed)}
        if rule == "newdata":
            data = self.newdata_file(env, seed, variant)
            return {"data": data, "meta": f"{data}.json"}
        out = self.job_dir(rule, env, seed, variant)
        if rule == "offline":
            return {"recommend": f"{out}/recommend.csv", "summary": f"{out}/offline.json"}
        return {"curve": f"{out}/curve.csv", "summary": f"{out}/finetune.json"}

    def batch_outputs(self, rule: str, env: str, seed: int | str, variants: Sequence[str]) -> Paths:
        """The named outputs of a cell's batch job: each output of each of its variants."""
        per_variant = [self.outputs(rule, env, seed, v) for v in variants]
        return {name: [str(p[name]) for p in per_variant] for name in per_variant[0]} if per_variant else {}

    @staticmethod
    def _stem(rule: str, variant: str) -> str:
        return rule if rule == "online" or not variant else f"{rule}-{variant}"

    def log(self, rule: str, env: str, seed: int | str, variant: str = "") -> str:
        """The job's log; ``variant="cell"`` for a cell's batch job."""
        return f"{self.cell(env, seed)}/logs/{self._stem(rule, variant)}.log"

    def benchmark(self, rule: str, env: str, seed: int | str, variant: str = "") -> str:
        """The job's Snakemake benchmark file; ``variant="cell"`` for a cell's batch job."""
        return f"{self.cell(env, seed)}/benchmarks/{self._stem(rule, variant)}.tsv"
