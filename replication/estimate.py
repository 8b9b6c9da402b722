"""What a run will cost, before it runs: jobs, env steps, gradient steps and hours per stage.

Work is counted from the config and the grid (``replication.workflow``). Hours come from
throughput figures: measured ones where a finished run of the same config left its job
summaries (``online.json``, ``offline.json``, ``finetune.json``), else the built-in figures below,
measured on one core of a 2-core CPU machine with 256x256 networks and batch 256 and scaled to
the config's network and batch size.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from replication import config
from replication.schema import episode_steps, validation_checkpoints, validation_costs
from replication.variants import finetune_ledger
from replication.workflow import FINETUNE_SOURCES, cell_dir, jobs, parse_cell

# Built-in throughput at 256x256, batch 256, one CPU thread (stack.md; protocol.md section 3).
GRADIENT_STEPS_PER_SECOND = {"sac": 103.0, "iql": 69.4, "cql": 13.7, "calql": 14.3, "pex": 55.0}
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
JOB_OVERHEAD_SECONDS = 8.0  # interpreter, imports and environment construction per job
REFERENCE_WORK = 256 * (256 * 256)  # batch x hidden^2 of the built-in figures


@dataclasses.dataclass
class StageCost:
    jobs: int = 0
    env_steps: float = 0.0
    gradient_steps: float = 0.0
    seconds: float = 0.0

    def add(self, env_steps: float, gradient_steps: float, seconds: float) -> None:
        self.jobs += 1
        self.env_steps += env_steps
        self.gradient_steps += gradient_steps
        self.seconds += seconds


def network_scale(batch: int, hidden: list[int]) -> float:
    """Cost of a gradient step relative to the built-in figures (never below a fixed floor)."""
    width = max(hidden)
    return max(0.15, batch * width * width / REFERENCE_WORK)


def measured_rates(cfg: dict[str, Any]) -> dict[str, float]:
    """Gradient steps/s measured by finished jobs of this config, by algorithm (mean over jobs)."""
    rates: dict[str, list[float]] = {}
    root = cell_dir(cfg, "x", 0).parent.parent
    for path in root.glob("*/seed*/online/online.json"):
        value = json.loads(path.read_text()).get("timings", {}).get("train_steps_per_second")
        if value:
            rates.setdefault("sac", []).append(float(value))
    for path in root.glob("*/seed*/offline/*/*/offline.json"):  # one per learner
        data = json.loads(path.read_text())
        if data.get("gradient_steps_per_second"):
            rates.setdefault(data["algo"], []).append(float(data["gradient_steps_per_second"]))
    return {k: sum(v) / len(v) for k, v in rates.items()}


def estimate(cfg: dict[str, Any]) -> tuple[dict[str, StageCost], str]:
    """Per-stage cost of the whole grid, and where the throughput figures came from."""
    measured = measured_rates(cfg)
    stages: dict[str, StageCost] = {}
    total = cfg["budget"]["total_steps"]
    ev = cfg["evaluation"]

    def rate(algo: str, batch: int, hidden: list[int]) -> float:
        if algo in measured:
            return measured[algo]
        return GRADIENT_STEPS_PER_SECOND[algo] / network_scale(batch, hidden)

    for job in jobs(cfg):
        env = parse_cell(job.env).env
        ep = episode_steps(cfg, env)
        env_rate = ENV_STEPS_PER_SECOND[env]
        report_steps = ev["episodes"] * ep
        cost = stages.setdefault(job.rule, StageCost())
        if job.rule == "online":
            p = config.online_params(cfg, env)
            grads = max(0, total - p["learning_starts"]) * p["gradient_steps"] / p["train_freq"]
            evals = (total // ev["interval"]) * report_steps + sum(validation_costs(cfg, env))
            seconds = grads / rate("sac", p["batch_size"], p["net_arch"]) + (total + evals) / env_rate
            cost.add(total + evals, grads, seconds + JOB_OVERHEAD_SECONDS)
        elif job.rule == "newdata":
            n = cfg["newdata"]["size"]
            cost.add(n, 0, n / env_rate + JOB_OVERHEAD_SECONDS)
        elif job.rule == "offline":
            v = cfg["validation"]
            k = validation_checkpoints(v["offline_fraction"], total, v["episodes"], ep)
            env_steps = grads = seconds = 0.0
            for algo in job.algos:
                p = config.offline_params(cfg, env, algo)
                evals = k * v["episodes"] * ep + 3 * report_steps
                env_steps += evals
                grads += p["gradient_steps"]
                seconds += p["gradient_steps"] / rate(algo, p["batch_size"], p["hidden_units"]) + evals / env_rate
            cost.add(env_steps, grads, seconds + JOB_OVERHEAD_SECONDS)
        elif job.rule == "finetune":
            remaining = finetune_ledger(cfg, env).remaining
            extra = cfg["analysis"]["c4"]["extended_steps"] if cfg["analysis"]["c4"]["enabled"] else 0
            steps = remaining + (extra if job.algo == "iql" and env in cfg["analysis"]["c4"]["envs"] else 0)
            p = config.offline_params(cfg, env, FINETUNE_SOURCES[job.algo])
            grads = steps * cfg["finetune"]["updates_per_step"]
            evals = (steps // ev["interval"] + 1) * report_steps
            seconds = grads / rate(job.algo, p["batch_size"], p["hidden_units"]) + (steps + evals) / env_rate
            cost.add(steps + evals, grads, seconds + JOB_OVERHEAD_SECONDS)
    source = "measured by this config's finished jobs: " + ", ".join(sorted(measured)) if measured else "built-in"
    return stages, source


def format_estimate(cfg: dict[str, Any], cores: int = 1) -> str:
    stages, source = estimate(cfg)
    lines = [
        f"config {cfg['name']}: {len(cfg['envs'])} environments x {len(cfg['seeds'])} seeds, "
        f"T = {cfg['budget']['total_steps']:,} env steps per cell",
        f"{'stage':<10}{'jobs':>8}{'env steps':>16}{'gradient steps':>18}{'CPU hours':>12}",
    ]
    total = StageCost()
    for name, c in stages.items():
        lines.append(f"{name:<10}{c.jobs:>8}{c.env_steps:>16,.0f}{c.gradient_steps:>18,.0f}{c.seconds / 3600:>12.2f}")
        total.jobs += c.jobs
        total.env_steps += c.env_steps
        total.gradient_steps += c.gradient_steps
        total.seconds += c.seconds
    lines.append(
        f"{'total':<10}{total.jobs:>8}{total.env_steps:>16,.0f}{total.gradient_steps:>18,.0f}"
        f"{total.seconds / 3600:>12.2f}"
    )
    lines.append(f"wall time on {cores} core(s), perfectly parallel: {total.seconds / cores / 3600:.2f} h")
    lines.append(f"throughput figures: {source}")
    return "\n".join(lines)


def load_and_format(path: Path | str, cores: int) -> str:
    return format_estimate(config.load(path), cores)
