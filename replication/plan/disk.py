"""The disk a run needs, before it runs: final and peak bytes per stage, and the free-space check.

Sizes come from what each job writes (:mod:`replication.plan.workflow`'s grid): datasets (d3rlpy HDF5:
float32 observations, actions and rewards, plus a header per episode), policies (TorchScript),
learners (d3rlpy ``.d3``: networks, target networks and Adam states), the online SAC model and
snapshots, and the resume checkpoints that exist while a job runs (the online replay buffer, the
offline learner, the fine-tuning agent with its buffers and its simulator). Network sizes are
counted from the config's layer widths; the per-file overheads below were fitted to the files of
the default run (``config/config.yaml``). Episodes are counted at full length (early terminations
add about 1.4 KB of HDF5 header per extra episode).

Peak = everything the finished run leaves + the checkpoints of the jobs running at once (``cores``
of the largest), counted twice: a checkpoint is written next to the previous one, then swapped.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from replication.plan import config
from replication.plan.schema import episode_steps
from replication.plan.variants import finetune_ledger
from replication.plan.vocabulary import finetune_source
from replication.plan.workflow import Job, extended_steps, jobs, parse_cell

FLOAT = 4
# (observation, action) dimensions of make_env's spaces (tests/test_estimate.py checks them)
DIMS = {
    "hopper": (11, 3),
    "halfcheetah": (17, 6),
    "walker2d": (17, 6),
    "ant": (105, 8),
    "humanoid": (348, 17),
    "kitchen": (81, 9),
    "kitchen-sparse": (81, 9),
    "sawyer-push": (39, 4),
    "sawyer-coffee": (39, 4),
    "sawyer-basketball": (39, 4),
    "sawyer-lift": (39, 4),
    "sawyer-drape": (39, 4),
}
# A simulator pickled whole (replication.agents.checkpoint.dumps, MjModel included), by suite: measured.
SIMULATOR_BYTES = {"locomotion": 1.3e6, "kitchen": 129.4e6, "metaworld": 42.4e6}
# Fixed bytes per file, fitted to the default run's files.
H5_FILE, H5_EPISODE = 5_900, 1_430  # d3rlpy HDF5 dataset: per file, per episode (4 datasets each)
TORCHSCRIPT_SAC, TORCHSCRIPT_D3RLPY = 11_500, 6_000  # exported policies
LEARNABLE = 31_000  # d3rlpy .d3 (config, torch.save of every module and optimiser)
SAC_ZIP = 45_000  # SB3 model.zip
SMALL_FILES = {"online": 8_000, "newdata": 700, "offline": 6_000, "finetune": 4_500}  # JSON, CSV, logs per job/learner
AGGREGATE_PER_JOB = 40_000  # tidy.csv, tables, statistics, figures and report, per cell job of the grid


def mlp(sizes: list[int]) -> int:
    """Parameters of a fully connected network with layer sizes ``sizes`` (weights and biases)."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def dataset_bytes(steps: float, obs: int, act: int, episode: int) -> float:
    """A d3rlpy HDF5 dataset of ``steps`` env steps (observations, actions, rewards)."""
    return H5_FILE + FLOAT * steps * (obs + act + 1) + H5_EPISODE * max(1.0, steps / episode)


def sac_sizes(cfg: dict[str, Any], env: str) -> dict[str, float]:
    obs, act = DIMS[env]
    net = list(config.online_params(cfg, env)["net_arch"])
    actor = mlp([obs, *net]) + 2 * (net[-1] * act + act)  # mean and log-std heads
    critic = 2 * mlp([obs + act, *net, 1])
    floats = 3 * actor + 4 * critic  # actor + Adam, critic + target + Adam
    return {"policy": TORCHSCRIPT_SAC + FLOAT * actor, "model": SAC_ZIP + FLOAT * floats}


def learner_sizes(cfg: dict[str, Any], env: str, algo: str) -> dict[str, float]:
    """A d3rlpy learner (``.d3``) and its exported policy, in bytes."""
    obs, act = DIMS[env]
    hidden = list(config.offline_params(cfg, env, algo)["hidden_units"])
    policy = mlp([obs, *hidden]) + 2 * (hidden[-1] * act + act)  # Gaussian policy: mean and log-std
    q = 2 * mlp([obs + act, *hidden, 1])
    floats = 3 * policy + 4 * q  # policy + Adam, Q + target + Adam
    if algo == "iql":
        floats += 3 * mlp([obs, *hidden, 1])  # V + Adam
    exported = mlp([obs, *hidden]) + hidden[-1] * act + act
    return {"learnable": LEARNABLE + FLOAT * floats, "policy": TORCHSCRIPT_D3RLPY + FLOAT * exported}


@dataclasses.dataclass
class JobDisk:
    job: Job
    final: float  # bytes the finished job leaves
    checkpoint: float  # bytes of its largest resume checkpoint (while it runs)


def _simulator(env: str) -> float:
    from replication.envspecs import get_spec

    return SIMULATOR_BYTES[get_spec(env).suite]


def job_disk(cfg: dict[str, Any], job: Job) -> JobDisk:
    env = parse_cell(job.env).env
    obs, act = DIMS[env]
    ep = episode_steps(cfg, env)
    total = cfg["budget"]["total_steps"]
    if job.rule == "online":
        from replication.plan.vocabulary import online_pauses

        p = config.online_params(cfg, env)
        sac = sac_sizes(cfg, env)
        pauses = online_pauses(cfg)
        snapshots = set(range(p["snapshot_interval"], total + 1, p["snapshot_interval"])) | set(pauses)
        final = SMALL_FILES["online"] + sac["model"] + sac["policy"] * (len(snapshots) + 2 * len(pauses))
        final += sum(dataset_bytes(k, obs, act, ep) for k in pauses)
        stored = max([s for s in range(p["checkpoint_interval"], total, p["checkpoint_interval"])], default=0)
        buffer = FLOAT * stored * (2 * obs + act + 3)  # SB3 buffer: obs, next obs, action, reward, done, timeout
        return JobDisk(job, final, (buffer + sac["model"] + _simulator(env)) if stored else 0.0)
    if job.rule == "newdata":
        return JobDisk(job, SMALL_FILES["newdata"] + dataset_bytes(cfg["newdata"]["size"], obs, act, ep), 0.0)
    if job.rule == "offline":
        final, largest = 0.0, 0.0
        for algo in job.algos:
            s = learner_sizes(cfg, env, algo)
            final += SMALL_FILES["offline"] + 2 * (s["learnable"] + s["policy"])
            steps = config.offline_params(cfg, env, algo)["gradient_steps"]
            if cfg["offline"]["checkpoint_interval"] < steps:
                largest = max(largest, 2 * s["learnable"] + s["policy"])  # learner, best learner and policy
        return JobDisk(job, final, largest)
    if job.rule == "finetune":
        s = learner_sizes(cfg, env, finetune_source(cfg, job.algo))
        extra = extended_steps(cfg, job)
        steps = finetune_ledger(cfg, env).remaining + extra
        final = SMALL_FILES["finetune"] + s["learnable"] * (2 if extra else 1)
        learners = 2 if job.algo == "pex" else 1
        dataset = config.finetune_pause_step(cfg)  # the offline dataset, referred to per transition
        ckpt = FLOAT * steps * (obs + act + 1) + 2 * s["learnable"] * learners + _simulator(env) + 16 * dataset
        return JobDisk(job, final, ckpt if cfg["finetune"]["checkpoint_interval"] < steps else 0.0)
    raise ValueError(f"no disk model for rule {job.rule!r}")


@dataclasses.dataclass
class StageDisk:
    jobs: int = 0
    final: float = 0.0
    checkpoints: list[float] = dataclasses.field(default_factory=list)

    def peak(self, cores: int) -> float:
        """Final bytes + the ``cores`` largest checkpoints, each twice (written before the old one goes)."""
        return self.final + 2 * sum(sorted(self.checkpoints, reverse=True)[: max(1, cores)])


def disk_estimate(cfg: dict[str, Any], grid: Sequence[Job] | None = None) -> dict[str, StageDisk]:
    """Per stage (online, newdata, offline, finetune, aggregate): final bytes and job checkpoints of ``grid``
    (default: the whole grid of ``cfg``)."""
    stages: dict[str, StageDisk] = {}
    grid = jobs(cfg) if grid is None else grid
    for job in grid:
        d = job_disk(cfg, job)
        stage = stages.setdefault(job.rule, StageDisk())
        stage.jobs += 1
        stage.final += d.final
        stage.checkpoints.append(d.checkpoint)
    stages["aggregate"] = StageDisk(1, AGGREGATE_PER_JOB * len(grid), [])
    return stages


def needs(cfg: dict[str, Any], cores: int = 1, grid: Sequence[Job] | None = None) -> tuple[float, float]:
    """(final, peak) bytes of the run (``grid``, default the whole grid); peak: every stage's outputs + the
    largest stage's checkpoints."""
    stages = disk_estimate(cfg, grid)
    final = sum(s.final for s in stages.values())
    return final, final + max(s.peak(cores) - s.final for s in stages.values())


def used_bytes(path: Path | str) -> int:
    """Bytes of the files under ``path`` (what a resumed run already has); a file with several hard
    links (a published pause file and its stage, a finished run's kept outputs) counts once."""
    path = Path(path)
    if not path.exists():
        return 0
    sizes = {}
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            sizes[(st.st_dev, st.st_ino)] = st.st_size
    return sum(sizes.values())


def human(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def check_free_space(
    cfg: dict[str, Any], out_dir: Path | str, cores: int = 1, grid: Sequence[Job] | None = None
) -> str | None:
    """Why the results filesystem cannot hold the run (a message with both figures), or ``None``.

    What the run still needs = its estimated peak minus what ``out_dir`` already holds.
    """
    out_dir = Path(out_dir)
    _, peak = needs(cfg, cores, grid)
    have = used_bytes(out_dir)
    needed = max(0.0, peak - have)
    probe = out_dir if out_dir.exists() else out_dir.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free >= needed:
        return None
    return (
        f"not enough free disk for results/{cfg['name']}/: the run needs about {human(needed)} more "
        f"(estimated peak {human(peak)}, {human(have)} already there) but the filesystem of {probe} has "
        f"{human(free)} free. Free space, or run anyway with --config check_disk=False."
    )
