"""What a run will cost, before it runs: jobs, env steps, gradient steps and hours per stage.

Work is counted from the config and the grid (``replication.plan.workflow``). Hours come from
throughput figures: measured ones where a finished run of the same config left its job
summaries (``online.json``, ``offline.json``, ``finetune.json``), else the built-in figures below,
measured on one core of a 2-core CPU machine with 256x256 networks and batch 256 and scaled to
the config's network and batch size.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from replication.plan import claims, config
from replication.plan.plan import Plan
from replication.plan.schema import episode_steps, validation_checkpoints, validation_costs
from replication.plan.settings import settings_of
from replication.plan.variants import finetune_ledger
from replication.plan.vocabulary import finetune_source
from replication.plan.workflow import CELL_RULE, Job, cell_dir, extended_steps, parse_cell

# Built-in throughput at 256x256, batch 256, one CPU thread (docs/protocol.md section 3).
GRADIENT_STEPS_PER_SECOND = {"sac": 103.0, "iql": 69.4, "cql": 13.7, "calql": 14.3, "pex": 55.0}
# WSRL counts critic updates (each env step: finetune.wsrl.updates_per_step of them and one actor update);
# assumed at SAC's rate until a finished run's jobs measure it
GRADIENT_STEPS_PER_SECOND["wsrl"] = GRADIENT_STEPS_PER_SECOND["sac"]
ENV_STEPS_PER_SECOND = {  # with a policy in the loop, per environment
    "hopper": 4000.0,
    "halfcheetah": 5000.0,
    "walker2d": 3500.0,
    "ant": 2500.0,
    "humanoid": 2000.0,
    "kitchen": 400.0,
    "kitchen-sparse": 400.0,
    "sawyer-push": 1200.0,
    "sawyer-coffee": 1200.0,
    "sawyer-basketball": 2500.0,
    "sawyer-lift": 1200.0,
    "sawyer-drape": 1000.0,
}
# An environment added to config/envs.yaml without a measured figure: a guess (the slowest
# Meta-World task's), labelled as such in the estimate; add its measured rate above.
GUESSED_ENV_STEPS_PER_SECOND = 1000.0


def env_steps_per_second(env: str) -> float:
    return ENV_STEPS_PER_SECOND.get(env, GUESSED_ENV_STEPS_PER_SECOND)


# Assumed, not measured here (no GPU was available to this project's measurements): gradient
# steps/s of one job on one datacenter GPU (A100/H100 class) at 256x256 and batch 256, eager
# PyTorch. Small networks leave such a GPU mostly idle: an update is bound by Python and kernel
# launches, a few times faster than one CPU core, not hundreds. Replace them with measured ones:
# `replication estimate` on a config whose jobs ran on GPUs reads their own summaries.
GPU_GRADIENT_STEPS_PER_SECOND = {"sac": 300.0, "iql": 500.0, "cql": 200.0, "calql": 200.0, "pex": 400.0, "wsrl": 300.0}
# Fitted from the default run on a 2-core CPU machine (benchmarks/bench_estimate.py: mean of measured
# job wall time minus the model's work), once with one job per variant and once with batch_jobs;
# machines of the same kind have differed by 2x. Per job: interpreter, imports (torch and its
# compiler stack), environments; per variant inside a job: its own learner, buffer and env.
JOB_OVERHEAD_SECONDS = {"online": 5.3, "newdata": 1.6, "offline": 4.1, "finetune": 4.1}
VARIANT_SETUP_SECONDS = {"online": 0.0, "newdata": 0.7, "offline": 0.0, "finetune": 1.1}
REFERENCE_WORK = 256 * (256 * 256)  # batch x hidden^2 of the built-in figures


@dataclasses.dataclass
class StageCost:
    jobs: int = 0
    env_steps: float = 0.0
    gradient_steps: float = 0.0
    seconds: float = 0.0  # one CPU core per job
    gpu_seconds: float = 0.0  # one GPU per job (assumed GPU figures)

    def add(self, cost: JobCost) -> None:
        self.jobs += cost.starts_job
        self.env_steps += cost.env_steps
        self.gradient_steps += cost.gradient_steps
        self.seconds += cost.cpu_seconds
        self.gpu_seconds += cost.gpu_seconds


def network_scale(batch: int, hidden: list[int]) -> float:
    """Cost of a gradient step relative to the built-in figures (never below a fixed floor)."""
    width = max(hidden)
    return max(0.15, batch * width * width / REFERENCE_WORK)


def sac_gradient_steps(cfg: dict[str, Any], env: str, steps: int) -> float:
    """SAC gradient steps of an online run of ``env`` to ``steps`` env steps."""
    p = config.online_params(cfg, env)
    return max(0, steps - p["learning_starts"]) * p["gradient_steps"] / p["train_freq"]


def measured_rates(cfg: dict[str, Any]) -> dict[tuple[str, str], float]:
    """Gradient steps/s measured by this config's finished jobs, keyed by (rule, algorithm); mean over jobs.

    Online SAC: ``online.json``; offline learners: their own ``offline.json``; fine-tuning: the
    updates/s of ``finetune.json`` with batch sampling included (as it runs in the loop).
    """
    rates: dict[tuple[str, str], list[float]] = {}

    def add(key: tuple[str, str], value: float | None) -> None:
        if value:
            rates.setdefault(key, []).append(float(value))

    root = cell_dir(cfg, "x", 0).parent.parent
    for path in root.glob("*/seed*/online/online.json"):  # the training loop per gradient step, env steps included
        data = json.loads(path.read_text())
        grads = sac_gradient_steps(cfg, parse_cell(data["env"]).env, cfg["budget"]["total_steps"])
        add(("online", "sac"), grads / data["timings"]["train_seconds"] if grads else None)
    for path in root.glob("*/seed*/offline/*/*/offline.json"):  # one per learner
        data = json.loads(path.read_text())
        add(("offline", data["algo"]), data["timings"].get("gradient_steps_per_second"))
    for path in root.glob("*/seed*/finetune/*/finetune.json"):
        data = json.loads(path.read_text())
        add(("finetune", data["method"]), data["timings"].get("updates_per_second_with_sampling"))
    return {k: sum(v) / len(v) for k, v in rates.items()}


@dataclasses.dataclass(frozen=True)
class JobCost:
    """What one job of the grid costs: its work, and its seconds on one CPU core or one GPU."""

    job: Job
    process: str  # the benchmark file of the Snakemake job that runs it (the plan's)
    in_cell: bool  # that job is its cell's one job (batch_jobs: cell)
    starts_job: bool  # the first (or only) variant of a Snakemake job: pays its start-up
    env_steps: float
    gradient_steps: float
    cpu_seconds: float
    gpu_seconds: float


def job_costs(cfg: dict[str, Any], plan: Plan | None = None) -> tuple[list[JobCost], str]:
    """The cost of every cell job of ``plan`` (default: the plan of ``cfg``, cut to its claims where it
    names some), and where the CPU throughput figures came from. Which Snakemake job runs each (its own,
    its cell's batch job, its cell's one job) is the plan's: start-ups and job counts follow it."""
    measured = measured_rates(cfg)
    total = cfg["budget"]["total_steps"]
    ev = cfg["evaluation"]

    def rate(rule: str, algo: str, batch: int, hidden: list[int]) -> float:
        if (rule, algo) in measured:
            return measured[(rule, algo)]
        return GRADIENT_STEPS_PER_SECOND[algo] / network_scale(batch, hidden)

    out = []
    started: set[str] = set()  # processes already started: a batch job pays its start-up once
    for planned in (Plan.build(cfg) if plan is None else plan).jobs:
        job = planned.job
        env = parse_cell(job.env).env
        ep = episode_steps(cfg, env)
        report_steps = ev["episodes"] * ep
        updates: list[tuple[str, float, int, list[int]]] = []  # (algo, gradient steps, batch, hidden)
        timed_steps = None  # env steps timed at the env's own rate (default: all of them)
        if job.rule == "online":
            p = config.online_params(cfg, env)
            grads = sac_gradient_steps(cfg, env, total)
            other = (total // ev["interval"]) * report_steps + sum(validation_costs(cfg, env))
            env_steps = total + other
            timed_steps = other  # SAC's figures are of its training loop: its env steps are in them
            updates.append(("sac", grads, p["batch_size"], p["net_arch"]))
        elif job.rule == "newdata":
            env_steps = cfg["newdata"]["size"]
        elif job.rule == "offline":
            v = cfg["validation"]
            k = validation_checkpoints(v["offline_fraction"], total, v["episodes"], ep)
            env_steps = 0
            for algo in job.algos:
                p = config.offline_params(cfg, env, algo)
                env_steps += k * v["episodes"] * ep + 3 * report_steps
                updates.append((algo, p["gradient_steps"], p["batch_size"], p["hidden_units"]))
        elif job.rule == "finetune":
            steps = finetune_ledger(cfg, env).remaining + extended_steps(cfg, job)
            p = config.offline_params(cfg, env, finetune_source(cfg, job.algo))
            env_steps = steps + (steps // ev["interval"] + 1) * report_steps
            updates.append((job.algo, finetune_updates(cfg, job.algo, steps), p["batch_size"], p["hidden_units"]))
        else:
            continue
        fixed = (env_steps if timed_steps is None else timed_steps) / env_steps_per_second(env)
        fixed += VARIANT_SETUP_SECONDS[job.rule]
        starts = planned.benchmark not in started
        if starts:
            started.add(planned.benchmark)
            fixed += JOB_OVERHEAD_SECONDS[job.rule]
        out.append(
            JobCost(
                job,
                planned.benchmark,
                planned.in_cell,
                starts,
                env_steps,
                sum(g for _, g, _, _ in updates),
                fixed + sum(g / rate(job.rule, a, b, h) for a, g, b, h in updates),
                fixed + sum(g / GPU_GRADIENT_STEPS_PER_SECOND[a] for a, g, _, _ in updates),
            )
        )
    names = sorted({f"{rule} {algo}" for rule, algo in measured})
    source = "measured by this config's finished jobs: " + ", ".join(names) if measured else "built-in"
    return out, source


def cell_seconds(cfg: dict[str, Any], plan: Plan | None = None) -> dict[tuple[str, int], float]:
    """Estimated CPU seconds of each cell (environment, seed) of ``plan`` (default: the plan of ``cfg``):
    all its jobs'. The workflow starts the jobs of the longest cells first."""
    out: dict[tuple[str, int], float] = {}
    for cost in job_costs(cfg, plan)[0]:
        key = (cost.job.env, cost.job.seed)
        out[key] = out.get(key, 0.0) + cost.cpu_seconds
    return out


def finetune_updates(cfg: dict[str, Any], method: str, steps: int) -> int:
    """Gradient updates of ``steps`` fine-tuning env steps of ``method``, as its settings count them
    (:meth:`replication.plan.settings.MethodSettings.updates`; WSRL: none in its warm-up)."""
    return settings_of(cfg, method).updates(steps, cfg["finetune"]["updates_per_step"])


def estimate(cfg: dict[str, Any], plan: Plan | None = None) -> tuple[dict[str, StageCost], str]:
    """Per-stage cost of ``plan`` (default: the plan of ``cfg``), and where the throughput figures came from."""
    costs, source = job_costs(cfg, plan)
    stages: dict[str, StageCost] = {}
    for c in costs:
        stages.setdefault(c.job.rule, StageCost()).add(c)
        if c.starts_job and c.in_cell:  # batch_jobs: cell: the job is counted as a cell's
            stages[c.job.rule].jobs -= 1
            stages.setdefault(CELL_RULE, StageCost()).jobs += 1
    return stages, source


def _total(stages: dict[str, StageCost]) -> StageCost:
    total = StageCost()
    for c in stages.values():
        for f in dataclasses.fields(StageCost):
            setattr(total, f.name, getattr(total, f.name) + getattr(c, f.name))
    return total


def grid_size(cfg: dict[str, Any]) -> str:
    """``"12 environments x 5 seeds"`` (singular where one)."""
    envs, seeds = len(cfg["envs"]), len(cfg["seeds"])
    return f"{envs} environment{'s' * (envs != 1)} x {seeds} seed{'s' * (seeds != 1)}"


def format_estimate(cfg: dict[str, Any], cores: int = 1) -> str:
    plan = Plan.build(cfg)
    stages, source = estimate(cfg, plan)
    chosen = claims.selected(cfg)
    lines = [
        f"config {cfg['name']}: {grid_size(cfg)}, "
        f"T = {cfg['budget']['total_steps']:,} env steps per cell"
        + (f"; claims {', '.join(chosen)}: only the jobs their tests read" if chosen else ""),
        f"{'stage':<10}{'jobs':>8}{'env steps':>16}{'gradient steps':>18}{'CPU hours':>12}{'GPU hours':>12}",
    ]
    total = _total(stages)
    for name, c in [*stages.items(), ("total", total)]:
        lines.append(
            f"{name:<10}{c.jobs:>8}{c.env_steps:>16,.0f}{c.gradient_steps:>18,.0f}"
            f"{c.seconds / 3600:>12.2f}{c.gpu_seconds / 3600:>12.2f}"
        )
    lines.append(f"wall time on {cores} core(s), perfectly parallel: {total.seconds / cores / 3600:.2f} h")
    lines.append(f"CPU throughput: {source}")
    if guessed := sorted(set(cfg["envs"]) - set(ENV_STEPS_PER_SECOND)):
        lines.append(
            f"environment steps/s of {', '.join(guessed)}: a guess ({GUESSED_ENV_STEPS_PER_SECOND:g}/s, not measured); "
            "add the measured rate to ENV_STEPS_PER_SECOND in replication/plan/estimate.py"
        )
    lines.append(
        "GPU hours: one job per GPU at the assumed GPU figures of replication.plan.estimate "
        "(not measured here); environment steps and start-up as on the CPU"
    )
    lines += ["", format_disk(cfg, cores, plan.grid())]
    whole = Price.of(claims.uncut(cfg))  # the full grid's price, beside the claims' and each claim's
    if chosen:
        lines += ["", format_beside_grid(cfg, plan, whole), "", format_seeds(cfg, chosen)]
    return "\n".join(lines + ["", format_claims(cfg, whole)])


@dataclasses.dataclass(frozen=True)
class Price:
    """What a set of jobs costs, in the units ``replication estimate`` prints."""

    jobs: int
    env_steps: float
    gradient_steps: float
    cpu_hours: float
    gpu_hours: float
    disk: float  # bytes the finished run leaves

    @classmethod
    def of(cls, cfg: dict[str, Any], plan: Plan | None = None) -> Price:
        """The price of ``plan`` (default: the plan of ``cfg``)."""
        from replication.plan.disk import needs

        plan = Plan.build(cfg) if plan is None else plan
        total = _total(estimate(cfg, plan)[0])
        return cls(
            total.jobs,
            total.env_steps,
            total.gradient_steps,
            total.seconds / 3600,
            total.gpu_seconds / 3600,
            needs(cfg, 1, plan.grid())[0],
        )


def format_beside_grid(cfg: dict[str, Any], plan: Plan, whole: Price) -> str:
    """The planned claims' cost (``plan``, cut to them) beside the whole grid's (``whole``), with their
    share of it."""
    from replication.plan.disk import human

    chosen = claims.selected(cfg) or []
    mine = Price.of(cfg, plan)
    lines = [
        f"claims {', '.join(chosen)} beside the full grid",
        f"{'':<16}{'jobs':>8}{'env steps':>18}{'gradient steps':>18}{'CPU hours':>12}{'GPU hours':>12}{'disk':>10}",
    ]
    for name, p in (("claims " + ",".join(chosen), mine), ("full grid", whole)):
        lines.append(
            f"{name:<16}{p.jobs:>8}{p.env_steps:>18,.0f}{p.gradient_steps:>18,.0f}"
            f"{p.cpu_hours:>12.2f}{p.gpu_hours:>12.2f}{human(p.disk):>10}"
        )
    share = mine.gpu_hours / whole.gpu_hours if whole.gpu_hours else 0.0
    lines.append(
        f"share of the full grid: {share:.0%} of its GPU hours, {mine.cpu_hours / whole.cpu_hours:.0%} of its CPU hours"
    )
    return "\n".join(lines)


def claim_seeds(claim: dict[str, Any], min_seeds: int) -> tuple[int, int]:
    """(seeds for 0.8 power, seeds the claim needs): the largest ``power_seeds`` of its decisive tests
    (paper/claims.yaml), and that or the scorecard's ``min_seeds``, whichever is more."""
    power = max((int(t["power_seeds"]) for t in claim["tests"] if t["role"] == "decisive"), default=0)
    return power, max(power, min_seeds)


def format_seeds(cfg: dict[str, Any], chosen: Sequence[str]) -> str:
    """Per planned claim: the seeds it needs for 0.8 power (README's calibration) and the cost at that number."""
    read = claims.load()
    min_seeds = int(yaml.safe_load(claims.CLAIMS_FILE.read_text()).get("min_seeds", 2))
    lines = [
        f'seeds where they matter (0.8 power, README "How the scorecard decides"; the scorecard needs at least '
        f"{min_seeds}); this config has {len(cfg['seeds'])}",
        f"{'claim':<8}{'power':>7}{'needs':>7}{'jobs':>8}{'CPU hours':>12}{'GPU hours':>12}",
    ]
    for cid in chosen:
        power, need = claim_seeds(read[cid], min_seeds)
        at = {**cfg, "seeds": list(range(need)), "claims": [cid]}
        p = Price.of(at)
        lines.append(f"{cid:<8}{power:>7}{need:>7}{p.jobs:>8}{p.cpu_hours:>12.2f}{p.gpu_hours:>12.2f}")
    return "\n".join(lines)


def format_claims(cfg: dict[str, Any], whole: Price) -> str:
    """Every claim alone at this config's seeds: what its cut plan costs, and its share of the full grid
    (``whole``)."""
    from replication.plan.disk import human

    lines = [
        f"every claim alone ({len(cfg['seeds'])} seeds; --config claims='[C3]' plans one)",
        f"{'claim':<8}{'jobs':>8}{'env steps':>18}{'gradient steps':>18}{'CPU hours':>12}{'GPU hours':>12}"
        f"{'disk':>10}{'GPU share':>11}",
    ]
    for cid in claims.claim_ids():
        alone = {**cfg, "claims": [cid]}
        p = Price.of(alone)
        share = p.gpu_hours / whole.gpu_hours if whole.gpu_hours else 0.0
        lines.append(
            f"{cid:<8}{p.jobs:>8}{p.env_steps:>18,.0f}{p.gradient_steps:>18,.0f}{p.cpu_hours:>12.2f}"
            f"{p.gpu_hours:>12.2f}{human(p.disk):>10}{share:>11.0%}"
        )
    return "\n".join(lines)


def format_disk(cfg: dict[str, Any], cores: int = 1, grid: Sequence[Job] | None = None) -> str:
    """Disk per stage: what the finished run leaves, and the peak while it runs (resume checkpoints)."""
    from replication.plan.disk import disk_estimate, human, needs

    lines = [
        f"disk under results/{cfg['name']}/ ({cores} job(s) at once)",
        f"{'stage':<10}{'final':>12}{'peak':>12}",
    ]
    for name, stage in disk_estimate(cfg, grid).items():
        lines.append(f"{name:<10}{human(stage.final):>12}{human(stage.peak(cores)):>12}")
    final, peak = needs(cfg, cores, grid)
    lines.append(f"{'total':<10}{human(final):>12}{human(peak):>12}")
    lines.append("a run is refused when its results filesystem has less free space than the peak (check_disk)")
    return "\n".join(lines)


def load_and_format(
    path: Path | str | Sequence[Path | str], cores: int, overrides: dict[str, Any] | None = None
) -> str:
    """The estimate of the config file(s) at ``path`` with ``overrides`` (``--config key=value``) on top."""
    return format_estimate(config.load(path, overrides), cores)
