"""The study plan: the resolved config turned, once, into every job with its command line and paths.

The Snakefile builds one :class:`Plan` and its rules read from it: the per-variant rules the
command line of their job, the batch rules (``batch_jobs``) the command lines of their cell's
variants, so both run the same ``replication <subcommand> ...`` arguments. The pauses, the offline
datasets and the variants come from the same object (``replication.plan.vocabulary`` holds the
names of the learners and the pause arithmetic).
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from replication.plan import claims, vocabulary, workflow
from replication.plan.layout import Layout, Paths
from replication.plan.variants import OfflineDataset, offline_datasets

JobKey = tuple[str, str, int, str]  # rule, cell, seed, variant (dataset key or method; "" for online)


@dataclasses.dataclass(frozen=True)
class PlannedJob:
    """One job of the plan: what it is, the command it runs and where it writes."""

    job: workflow.Job
    argv: tuple[str, ...]  # the arguments of `replication`, subcommand first
    outputs: Paths = dataclasses.field(hash=False)
    log: str  # of the job that runs it: its cell's batch job when batched
    benchmark: str  # likewise
    batched: bool = False  # runs in its cell's batch job of its stage (batch_jobs)
    in_cell: bool = False  # runs in its cell's one job (batch_jobs: cell)

    @property
    def key(self) -> JobKey:
        return self.job.rule, self.job.env, self.job.seed, self.job.variant

    def command_line(self) -> str:
        """The arguments as one shell-quoted string (what follows ``replication``)."""
        return shlex.join(self.argv)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a run does, derived once from its resolved config."""

    layout: Layout
    pauses: tuple[int, ...]  # of the recommendation variants
    online_pauses: tuple[int, ...]  # every pause the online run keeps state at
    finetune_pause: int
    newdata_pause: int
    datasets: tuple[OfflineDataset, ...]
    finetune_dataset: OfflineDataset
    batches: Mapping[str, tuple[str, ...]] = dataclasses.field(hash=False)  # batch_jobs: variants per main cell
    batch_envs: tuple[str, ...]  # the cells whose variants run in batch jobs
    jobs: tuple[PlannedJob, ...]
    controls: tuple[PlannedJob, ...] = ()  # C1's control of each online run: a light job, not counted in jobs
    whole_cells: bool = False  # batch_jobs: cell: a cell of batch_envs is one job (online, control, batches)
    cell_control: bool = False  # ... which runs C1's control (when every such cell has one)
    claims: tuple[str, ...] | None = None  # config key claims: the plan is cut to what their tests read
    omitted: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)  # products a cut lacks: why
    tables: tuple[str, ...] = ()  # the tables the run makes (vocabulary.tables, less those a cut omits)
    figures: tuple[str, ...] = ()  # likewise the figures

    @classmethod
    def build(cls, cfg: dict[str, Any]) -> Plan:
        layout = Layout(str(workflow.results_dir(cfg)))
        datasets = tuple(offline_datasets(cfg))
        grid = workflow.jobs(cfg)
        controls = [workflow.Job("control", job.env, job.seed) for job in grid if job.rule == "online"]
        batches = workflow.cell_batches(cfg) if cfg["batch_jobs"] else {}
        omitted: dict[str, str] = {}
        if (chosen := claims.selected(cfg)) is not None:  # only what the chosen claims' tests read
            wanted = claims.wanted_reads(cfg, chosen)
            whole = [*grid, *controls]
            grid = claims.cut(cfg, grid, chosen)
            controls = [c for c in controls if claims.reads_any(cfg, c, wanted)]
            batches = claims.cut_batches(batches, grid, cfg["envs"])
            omitted = claims.left_out(cfg, whole, [*grid, *controls], chosen)
        plan = cls(
            layout=layout,
            pauses=tuple(vocabulary.pause_steps(cfg)),
            online_pauses=tuple(vocabulary.online_pauses(cfg)),
            finetune_pause=vocabulary.finetune_pause_step(cfg),
            newdata_pause=vocabulary.newdata_pause_step(cfg),
            datasets=datasets,
            finetune_dataset=workflow.finetune_dataset(cfg),
            batches={rule: tuple(variants) for rule, variants in batches.items()},
            batch_envs=tuple(cfg["envs"]) if cfg["batch_jobs"] else (),
            whole_cells=cfg["batch_jobs"] == "cell",
            cell_control=cfg["batch_jobs"] == "cell" and _every_main_cell_has_control(cfg, grid, controls),
            jobs=(),
            claims=tuple(chosen) if chosen is not None else None,
            omitted=omitted,
            tables=tuple(t for t in vocabulary.tables(cfg) if t not in omitted),
            figures=tuple(f for f in vocabulary.figures(cfg) if f not in omitted),
        )
        jobs = tuple(plan._planned(cfg, job) for job in grid)
        return dataclasses.replace(plan, jobs=jobs, controls=tuple(plan._planned(cfg, c) for c in controls))

    # --- datasets

    @property
    def finetune_key(self) -> str:
        """The key of the dataset fine-tuning starts from."""
        return workflow.dataset_key(self.finetune_dataset)

    def dataset(self, key: str) -> OfflineDataset:
        """The offline dataset of key ``key`` (``buffer-p<pause>`` or ``<label>-<collector>``)."""
        for dataset in self.datasets:
            if workflow.dataset_key(dataset) == key:
                return dataset
        if key == self.finetune_key:
            return self.finetune_dataset
        keys = ", ".join(workflow.dataset_key(d) for d in self.datasets)
        raise ValueError(f"unknown dataset {key!r}; this config has: {keys}")

    def dataset_file(self, env: str, seed: int | str, dataset: OfflineDataset) -> str:
        if dataset.is_newdata:
            return self.layout.newdata_file(env, seed, workflow.dataset_key(dataset))
        return self.layout.buffer_file(env, seed, dataset.pause)

    # --- jobs

    @functools.cached_property
    def _index(self) -> dict[JobKey, PlannedJob]:
        return {job.key: job for job in (*self.jobs, *self.controls)}

    def job_for(self, rule: str, env: str, seed: int | str, variant: str = "") -> PlannedJob:
        """The job of ``rule`` for a cell, seed and variant (dataset key or method)."""
        try:
            return self._index[rule, env, int(seed), variant]
        except KeyError:
            raise ValueError(f"no {rule} job for {env} seed {seed} {variant}".rstrip()) from None

    def cell_jobs(self, rule: str, env: str, seed: int | str) -> list[PlannedJob]:
        """The jobs one batch job of a cell runs, in order (``batch_jobs``)."""
        return [self.job_for(rule, env, seed, variant) for variant in self.batches.get(rule, ())]

    def batch_jobs(self, rule: str, env: str, seed: int | str) -> list[PlannedJob]:
        """The jobs a batch job runs (``replication batch --cell``): a cell's variants of ``rule``, or
        (``cell``) its whole cell."""
        return self.whole_cell_jobs(env, seed) if rule == workflow.CELL_RULE else self.cell_jobs(rule, env, seed)

    def whole_cell_jobs(self, env: str, seed: int | str) -> list[PlannedJob]:
        """The jobs a cell's one job runs, in order (``batch_jobs: cell``): online, C1's control, then
        each batched stage's variants; each later command reads what an earlier one wrote."""
        head = [self.job_for("online", env, seed)]
        if self.cell_control:
            head.append(self.job_for("control", env, seed))
        return [*head, *(job for rule in workflow.BATCHED_RULES for job in self.cell_jobs(rule, env, seed))]

    def whole_cell_outputs(self, env: str = "{env}", seed: int | str = "{seed}") -> Paths:
        """The named outputs of a cell's one job (default: as wildcards), every output of the jobs it runs."""
        parts = {"online": self.layout.outputs("online", env, seed, pauses=self.online_pauses)}
        if self.cell_control:
            parts["control"] = self.layout.outputs("control", env, seed)
        for rule in workflow.BATCHED_RULES:
            parts[rule] = self.layout.batch_outputs(rule, env, seed, self.batches.get(rule, ()))
        return {f"{rule}_{name}": paths for rule, named in parts.items() for name, paths in named.items()}

    def counts(self) -> dict[str, int]:
        return _counts(job.job for job in self.jobs)

    def stage_counts(self) -> dict[str, tuple[int, int]]:
        """Per stage: (Snakemake jobs, variants) of the planned cell jobs.

        A job is one process (its benchmark file; ``batch_jobs: true`` runs a cell's variants of a stage
        in one, ``cell`` a cell's stages in one: the stage ``cell``), as ``replication estimate`` counts
        them; a variant is one planned unit of work.
        """
        processes: dict[str, set[str]] = {}
        variants: dict[str, int] = {}
        for job in self.jobs:
            rule = job.job.rule
            processes.setdefault(workflow.CELL_RULE if job.in_cell else rule, set()).add(job.benchmark)
            variants[rule] = variants.get(rule, 0) + 1
        out = {rule: (len(processes.get(rule, ())), n) for rule, n in variants.items()}
        if workflow.CELL_RULE in processes:  # batch_jobs: cell; its variants are counted in their stages
            out[workflow.CELL_RULE] = (len(processes[workflow.CELL_RULE]), 0)
        return out

    def grid(self) -> list[workflow.Job]:
        """The planned cell jobs (without C1's controls), as :func:`replication.plan.workflow.jobs` lists them."""
        return [job.job for job in self.jobs]

    def every_job(self) -> list[workflow.Job]:
        """The planned cell jobs, then C1's controls."""
        return [*self.grid(), *(c.job for c in self.controls)]

    def tidy_inputs(self) -> list[str]:
        """Every tidy CSV the aggregation reads: each planned job's (an online run's curve, then its control's)."""
        controls = {c.key[1:]: c for c in self.controls}
        out: list[str] = []
        for job in self.jobs:
            if job.job.rule in ("online", "offline", "finetune"):
                out.append(str(next(iter(job.outputs.values()))))
            if job.job.rule == "online" and (control := controls.get(job.key[1:])):
                out.append(str(next(iter(control.outputs.values()))))
        return out

    def _planned(self, cfg: dict[str, Any], job: workflow.Job) -> PlannedJob:
        batched = bool(self.batches.get(job.rule)) and job.env in self.batch_envs
        whole = (
            self.whole_cells
            and job.env in self.batch_envs
            and (batched or job.rule == "online" or (job.rule == "control" and self.cell_control))
        )
        # the job that runs it: its cell's one job, its cell's batch job of the stage, or its own
        rule, runner = (workflow.CELL_RULE, "") if whole else (job.rule, "cell" if batched else job.variant)
        pauses = self.online_pauses if job.rule == "online" else ()
        return PlannedJob(
            job=job,
            argv=self._argv(cfg, job),
            outputs=self.layout.outputs(job.rule, job.env, job.seed, job.variant, pauses),
            log=self.layout.log(rule, job.env, job.seed, runner),
            benchmark=self.layout.benchmark(rule, job.env, job.seed, runner),
            batched=batched and not whole,
            in_cell=whole,
        )

    def _argv(self, cfg: dict[str, Any], job: workflow.Job) -> tuple[str, ...]:
        """The `replication` command line of ``job`` (flags as ``replication/cli.py`` defines them)."""
        env, seed, lay = job.env, job.seed, self.layout
        head = [job.rule, "--config", lay.config_file, "--env", env, "--seed", str(seed)]
        online = lay.online_dir(env, seed)
        if job.rule == "online":
            tail = ["--out", online, "--no-progress"]
        elif job.rule == "control":
            tail = ["--online", online]
        elif job.rule == "newdata":
            tail = ["--online", online, "--dataset", job.dataset, "--out", lay.newdata_file(env, seed, job.dataset)]
        elif job.rule == "offline":
            data = self.dataset_file(env, seed, self.dataset(job.dataset))
            out = lay.job_dir("offline", env, seed, job.dataset)
            tail = ["--algo", job.algo, "--dataset", job.dataset, "--data", data, "--online", online, "--out", out]
        elif job.rule == "finetune":
            source = (
                f"{lay.job_dir('offline', env, seed, self.finetune_key)}/{vocabulary.finetune_source(cfg, job.algo)}"
            )
            tail = [
                *("--method", job.algo, "--offline", source),
                *("--data", self.dataset_file(env, seed, self.finetune_dataset)),
                *("--extended-steps", str(workflow.extended_steps(cfg, job))),
                *("--out", lay.job_dir("finetune", env, seed, job.algo)),
            ]
        else:
            raise ValueError(f"unknown rule {job.rule!r}")
        return (*head, *tail)


def _counts(jobs: Iterable[workflow.Job]) -> dict[str, int]:
    """Jobs per rule."""
    out: dict[str, int] = {}
    for job in jobs:
        out[job.rule] = out.get(job.rule, 0) + 1
    return out


def _every_main_cell_has_control(
    cfg: dict[str, Any], grid: Iterable[workflow.Job], controls: Iterable[workflow.Job]
) -> bool:
    """Whether C1's control is planned for every online run of a cell of ``envs`` (a cell's one job runs it)."""
    main = set(cfg["envs"])
    runs = {(job.env, job.seed) for job in grid if job.rule == "online" and job.env in main}
    return bool(runs) and runs <= {(c.env, c.seed) for c in controls}
