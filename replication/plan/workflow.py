"""The grid of a run: every job the workflow runs, and where its outputs go.

The grid has one definition that the workflow (through :class:`replication.plan.plan.Plan`),
the cost estimate and the tests share. Layout under ``results/<name>/``
(:class:`replication.plan.layout.Layout`)::

    cells/<cell>/seed<k>/online/                  online SAC (shared by every variant of the cell)
    cells/<cell>/seed<k>/newdata/<label>-<collector>.h5
    cells/<cell>/seed<k>/offline/<dataset>/<algo>/ offline learners + recommendations (one job per dataset)
    cells/<cell>/seed<k>/finetune/<method>/        fine-tuning from the offline agent
    tidy.csv, tables/, figures/, report.md         aggregation

A cell is a study environment, or for the analyses an environment with options
(``kitchen+reward=accumulated`` for C5, ``hopper+delay=10`` for the reward-granularity study);
its results carry the options in the tidy ``variant_options`` column.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from replication.plan import config
from replication.plan.layout import Layout
from replication.plan.variants import OfflineDataset, finetune_dataset, finetune_ledger, offline_datasets
from replication.plan.vocabulary import FINETUNE_METHODS, OFFLINE_ALGOS, c5_env, finetune_source

RESULTS_ROOT = Path("results")
FINETUNE_SOURCES = FINETUNE_METHODS  # offline agent each method starts from


CELL_OPTIONS = {"reward": "reward", "delay": "reward_delay"}  # cell option -> make_env option


@dataclasses.dataclass(frozen=True)
class Cell:
    """A study environment, possibly with analysis options (reward mode, reward delay)."""

    env: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return self.env + ("+" + ",".join(f"{k}={v}" for k, v in self.options) if self.options else "")

    @property
    def variant_options(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.options)


def parse_cell(key: str) -> Cell:
    env, _, rest = key.partition("+")
    options = []
    for item in filter(None, rest.split(",")):
        name, _, value = item.partition("=")
        if name not in CELL_OPTIONS or not value:
            raise ValueError(f"bad cell option {item!r} in {key!r}; valid options: {', '.join(CELL_OPTIONS)}")
        options.append((name, value))
    return Cell(env, tuple(options))


def cell_config(cfg: dict[str, Any], key: str) -> tuple[str, dict[str, Any], str]:
    """``(env, config, variant_options)`` of cell ``key``: its options become env options."""
    cell = parse_cell(key)
    if not cell.options:
        return cell.env, cfg, ""
    out = config.deep_merge(cfg, {})
    options = out["env_options"].setdefault(cell.env, {})
    for name, value in cell.options:
        options[CELL_OPTIONS[name]] = int(value) if name == "delay" else value
    return cell.env, out, cell.variant_options


def results_dir(cfg: dict[str, Any]) -> Path:
    return RESULTS_ROOT / cfg["name"]


def layout(cfg: dict[str, Any]) -> Layout:
    return Layout(str(results_dir(cfg)))


def cell_dir(cfg: dict[str, Any], env: str, seed: int) -> Path:
    return Path(layout(cfg).cell(env, seed))


def dataset_key(dataset: OfflineDataset) -> str:
    """Path segment naming an offline dataset: ``buffer-p<pause>`` or ``<label>-<collector>``."""
    return f"buffer-p{dataset.pause}" if not dataset.is_newdata else f"{dataset.label}-{dataset.collector}"


def parse_dataset_key(cfg: dict[str, Any], key: str) -> OfflineDataset:
    for dataset in offline_datasets(cfg):
        if dataset_key(dataset) == key:
            return dataset
    raise ValueError(f"unknown dataset {key!r}; this config has: {', '.join(map(dataset_key, offline_datasets(cfg)))}")


def dataset_file(cfg: dict[str, Any], env: str, seed: int, dataset: OfflineDataset) -> Path:
    paths = layout(cfg)
    if dataset.is_newdata:
        return Path(paths.newdata_file(env, seed, dataset_key(dataset)))
    return Path(paths.buffer_file(env, seed, dataset.pause))


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of the grid: its rule, the cell, and its variant wildcards.

    An offline job trains every learner its dataset needs (``algo`` lists them, comma-separated)
    one after the other, so a dataset is loaded once and a job's start-up is paid once.
    """

    rule: str
    env: str
    seed: int
    algo: str = ""
    dataset: str = ""

    @property
    def algos(self) -> list[str]:
        return self.algo.split(",") if self.algo else []

    @property
    def variant(self) -> str:
        """What tells the job from the cell's other jobs of its rule: method or dataset key."""
        return self.algo if self.rule == "finetune" else self.dataset

    def output(self, cfg: dict[str, Any]) -> Path:
        """The job's first output (a tidy CSV, or the newdata dataset)."""
        if self.rule not in ("online", "control", "newdata", "offline", "finetune"):
            raise ValueError(f"unknown rule {self.rule!r}")
        return Path(next(iter(layout(cfg).outputs(self.rule, self.env, self.seed, self.variant).values())))


def jobs(cfg: dict[str, Any]) -> list[Job]:
    """Every cell job of the grid (one online run per cell, shared by all its variants)."""
    units = _units(cfg)
    learners: dict[tuple[str, int, str], list[str]] = {}
    for job in units:
        if job.rule == "offline":
            learners.setdefault((job.env, job.seed, job.dataset), []).append(job.algo)
    out, grouped = [], set()
    for job in units:
        if job.rule != "offline":
            out.append(job)
        elif (key := (job.env, job.seed, job.dataset)) not in grouped:
            grouped.add(key)
            algos = sorted(set(learners[key]), key=OFFLINE_ALGOS.index)
            out.append(Job("offline", job.env, job.seed, ",".join(algos), job.dataset))
    return out


def _units(cfg: dict[str, Any]) -> list[Job]:
    """The grid with one offline unit per learner and dataset."""
    out: list[Job] = []
    datasets = offline_datasets(cfg)
    methods = cfg["finetune"]["methods"]
    ft_key = dataset_key(finetune_dataset(cfg))
    needed_algos = set(cfg["offline"]["algos"]) | {finetune_source(cfg, m) for m in methods}
    analysis = cfg["analysis"]
    for seed in cfg["seeds"]:
        for env in cfg["envs"]:
            out.append(Job("online", env, seed))
            out += [Job("newdata", env, seed, dataset=dataset_key(d)) for d in datasets if d.is_newdata]
            for algo in sorted(needed_algos):
                if algo in cfg["offline"]["algos"]:
                    out += [Job("offline", env, seed, algo, dataset_key(d)) for d in datasets]
                else:  # trained only as the starting point of fine-tuning
                    out.append(Job("offline", env, seed, algo, ft_key))
            out += [Job("finetune", env, seed, m) for m in methods]
        if c5 := c5_env(cfg):  # Cal-QL, offline and fine-tuned, per Kitchen reward mode
            for mode in analysis["c5"]["rewards"]:
                key = Cell(c5, (("reward", mode),)).key
                out += [Job("online", key, seed), Job("offline", key, seed, "calql", ft_key)]
                out += [Job("finetune", key, seed, "calql")]
        if analysis["reward_granularity"]["enabled"]:  # offline algorithms and Cal-QL fine-tuning per delay
            for env in analysis["reward_granularity"]["envs"]:
                for delay in analysis["reward_granularity"]["delays"]:
                    if delay == 1 and env in cfg["envs"]:
                        continue  # the plain cell is already in the grid
                    key = Cell(env, (("delay", str(delay)),)).key if delay != 1 else env
                    out.append(Job("online", key, seed))
                    buffers = [d for d in datasets if not d.is_newdata]
                    out += [
                        Job("offline", key, seed, a, dataset_key(d)) for a in cfg["offline"]["algos"] for d in buffers
                    ]
                    if ft_key not in {dataset_key(d) for d in buffers} or "calql" not in cfg["offline"]["algos"]:
                        out.append(Job("offline", key, seed, "calql", ft_key))
                    out.append(Job("finetune", key, seed, "calql"))
    return list(dict.fromkeys(out))


# Settings that change no job's result: how often it checkpoints and which other fine-tuning methods the
# run has (per config section; no job's Snakemake params hold them, so editing them reruns nothing), and
# how its jobs are grouped into processes and whether the disk is checked (top level). Shards that differ
# only in these assemble into one study.
NO_RESULT = {
    "online": ("checkpoint_interval",),
    "offline": ("checkpoint_interval",),
    "finetune": ("checkpoint_interval", "methods"),
}
NO_RESULT_TOP = ("batch_jobs", "check_disk")


def without_no_result(section: str, value: Any) -> Any:
    """A config section without its settings that change no result (:data:`NO_RESULT`)."""
    keys = NO_RESULT.get(section, ())
    return {k: v for k, v in value.items() if k not in keys} if isinstance(value, dict) else value


def result_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The resolved config without the settings that change no result: what two runs' results depend on."""
    return {k: without_no_result(k, v) for k, v in cfg.items() if k not in NO_RESULT_TOP}


BATCHED_RULES = ("newdata", "offline", "finetune")
# batch_jobs: cell: one job per cell of envs runs its online run, C1's control and its batched stages,
# in this order, in one process (the start-up of five jobs paid once; replication.plan.plan.Plan)
CELL_RULE = "cell"  # the rule of that one job


def cell_batches(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """With ``batch_jobs``: the variants one job of each batched rule runs for a cell of ``envs``.

    Per rule, the dataset keys (``newdata``, ``offline``) or methods (``finetune``) of a main-grid
    cell, the same for every one of them. Analysis cells (C5, reward granularity) keep one job
    per variant.
    """
    per_cell: dict[tuple[str, int], dict[str, list[str]]] = {}
    main = set(cfg["envs"])
    for job in jobs(cfg):
        if job.env in main and job.rule in BATCHED_RULES:
            batch = per_cell.setdefault((job.env, job.seed), {rule: [] for rule in BATCHED_RULES})
            batch[job.rule].append(job.algo if job.rule == "finetune" else job.dataset)
    batches = list(per_cell.values())
    if any(b != batches[0] for b in batches):
        raise ValueError("batch_jobs: the cells of envs do not share one set of variants")
    return batches[0] if batches else {rule: [] for rule in BATCHED_RULES}


def extended_steps(cfg: dict[str, Any], job: Job) -> int:
    """Env steps of IQL fine-tuning beyond the budget (analysis C4), for this job.

    ``analysis.c4.finetune_steps`` is the *total* of fine-tuning env steps (protocol: "extended to
    1,000,000 fine-tuning steps"): the budget left after the pause, then the extension up to it.
    """
    c4 = cfg["analysis"]["c4"]
    if not (job.rule == "finetune" and job.algo == "iql" and c4["enabled"] and job.env in c4["envs"]):
        return 0
    budget = finetune_ledger(cfg, job.env).remaining
    if c4["finetune_steps"] < budget:
        raise ValueError(
            f"config key analysis.c4.finetune_steps: {c4['finetune_steps']} total fine-tuning steps is less than "
            f"the fine-tuning budget of {job.env} ({budget} env steps); "
            f"raise analysis.c4.finetune_steps to at least {budget}"
        )
    return int(c4["finetune_steps"]) - budget


def tidy_inputs(cfg: dict[str, Any]) -> list[Path]:
    """Every tidy CSV the aggregation reads (an online run's curve and C1's control rows)."""
    out: list[Path] = []
    for j in jobs(cfg):
        if j.rule in ("online", "offline", "finetune"):
            out.append(j.output(cfg))
        if j.rule == "online":
            out.append(Job("control", j.env, j.seed).output(cfg))
    return out


def counts(cfg: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for job in jobs(cfg):
        out[job.rule] = out.get(job.rule, 0) + 1
    return out
