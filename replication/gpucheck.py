"""The GPU path in one command (``scripts/gpu-check.sh``): speed and agreement of every learner.

With the paper's networks and batch sizes (``config/defaults.yaml``) on a real dataset (random
actions on Hopper, collected by :func:`replication.agents.datasets.collect_transitions`), each learner of
the study (SB3 SAC; d3rlpy IQL, CQL and Cal-QL with ``compile_graph`` as configured; the PEX online
learner's fine-tuning updates) is timed on ``--device`` and on one CPU thread (as the workflow's jobs
run): gradient steps per second after a warm-up (which holds CUDA-graph capture), and the speed-up.

Agreement, on a fixed seed. Both devices start from the very same weights (built once on the CPU,
copied) and draw the same batches:

* ``forward``: the largest difference of the deterministic actions on 256 dataset observations, at
  the start (tolerance :data:`FORWARD_TOLERANCE`);
* ``trained``: the same after ``--check-steps`` updates. IQL's and PEX's updates draw no random
  numbers, so their results must agree (tolerance :data:`TRAINED_TOLERANCE`); SAC, CQL and Cal-QL
  sample actions from the device's own random-number generator, so theirs are reported, not judged.

TF32 is off on CUDA, so both devices compute in full float32.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORWARD_TOLERANCE = 1e-4  # action units (Hopper's actions are in [-1, 1])
TRAINED_TOLERANCE = 1e-3
DETERMINISTIC = ("iql", "pex")
LEARNERS = ("sac", "iql", "cql", "calql", "pex")
SEED = 0


class Runner:
    """One learner on one device: ``update()`` is one gradient step, ``act(obs)`` its deterministic actions."""

    def __init__(self, update: Callable[[], None], act: Callable[[np.ndarray], np.ndarray], sync: Callable[[], None]):
        self.update, self.act, self.sync = update, act, sync


def _sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def dataset(cfg: dict[str, Any], env: str, size: int):
    from replication.agents.datasets import collect_transitions
    from replication.agents.envs import env_spaces

    space = env_spaces(env)[1]
    rng = np.random.default_rng(SEED)
    return collect_transitions(env, SEED, lambda obs: rng.uniform(space.low, space.high), size)


# ---- d3rlpy learners (IQL, CQL, Cal-QL, PEX) ----------------------------------------------------


def d3rlpy_start(cfg: dict[str, Any], env: str, algo: str, transitions, folder: Path) -> tuple[Path, Any]:
    """The learner's starting weights, built once on the CPU and saved; and its replay buffer."""
    import d3rlpy

    from replication.agents import learners
    from replication.plan.settings import learner_settings

    d3rlpy.seed(SEED)
    source = "iql" if algo == "pex" else algo
    settings = learner_settings(cfg, env, source)
    learner = learners.build_learner(settings, "cpu:0")
    buffer = learners.offline_buffer(settings, transitions)
    learners.prepare(learner, buffer)
    if algo == "pex":
        from replication.agents.finetune.pex import expand_policy

        learner = expand_policy(learner, "cpu:0")  # the online learner PEX fine-tunes
    path = folder / f"{algo}.d3"
    learner.save(str(path))
    return path, buffer


def d3rlpy_runner(start: Path, buffer, device: str) -> Runner:
    import d3rlpy

    learner = d3rlpy.load_learnable(str(start), device=device if device.startswith("cuda") else "cpu:0")
    size = learner.config.batch_size
    return Runner(
        lambda: learner.update(buffer.sample_transition_batch(size)), lambda obs: learner.predict(obs), _sync(device)
    )


# ---- SB3 SAC --------------------------------------------------------------------------------------


def sac_model(cfg: dict[str, Any], env: str, transitions, device: str):
    """SB3 SAC with the dataset in its replay buffer (actions scaled to [-1, 1], as SAC stores them)."""
    from replication.agents.online import build_sac
    from replication.plan.settings import online_settings

    cfg = copy.deepcopy(cfg)
    cfg["budget"]["total_steps"] = len(transitions) + 1  # the replay capacity
    model = build_sac(online_settings(cfg, env), SEED, device)
    buffer = model.replay_buffer
    for a, b in transitions.episode_bounds():
        for t in range(a, b):
            terminal = bool(transitions.terminals[t])
            if t == b - 1 and not terminal:
                break  # a cut episode's last step has no next observation
            next_obs = np.zeros_like(transitions.observations[t]) if terminal else transitions.observations[t + 1]
            action = model.policy.scale_action(transitions.actions[t][None])
            buffer.add(
                transitions.observations[t][None],
                next_obs[None],
                action,
                transitions.rewards[t : t + 1],
                np.array([terminal]),
                [{}],
            )
    return model


def sac_runner(model, start_state: dict, device: str) -> Runner:
    """A fresh SAC model (fresh optimisers) from the shared starting weights."""
    from stable_baselines3.common.logger import Logger

    model.policy.load_state_dict(start_state)  # copies the CPU tensors onto the model's device
    model.set_logger(Logger(folder=None, output_formats=[]))
    size = model.batch_size

    def update() -> None:
        model.train(gradient_steps=1, batch_size=size)

    return Runner(update, lambda obs: model.predict(obs, deterministic=True)[0], _sync(device))


# ---- measuring -------------------------------------------------------------------------------------


def steps_per_second(runner: Runner, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        runner.update()
    runner.sync()
    start = time.perf_counter()
    for _ in range(steps):
        runner.update()
    runner.sync()
    return steps / (time.perf_counter() - start)


def agrees(learner: str, forward: float, trained: float) -> bool:
    """Whether the devices agree: the start always; after updates only where updates draw no random numbers."""
    return forward <= FORWARD_TOLERANCE and (trained <= TRAINED_TOLERANCE or learner not in DETERMINISTIC)


def seeded(make: Callable[[], Runner]) -> Runner:
    """A runner built after seeding every generator the same way (same batches on every device)."""
    import d3rlpy

    d3rlpy.seed(SEED)
    return make()


def check(
    cfg: dict[str, Any],
    env: str,
    device: str,
    steps: int,
    cpu_steps: int,
    warmup: int,
    check_steps: int,
    size: int,
    learners: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per learner: gradient steps/s on ``device`` and on one CPU thread, speed-up, agreement."""
    import torch

    torch.set_num_threads(1)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    transitions = dataset(cfg, env, size)
    probe = transitions.observations[:: max(1, len(transitions) // 256)][:256]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in learners:
            if name == "sac":
                state = copy.deepcopy(sac_model(cfg, env, transitions, "cpu").policy.state_dict())

                def make(d: str, state=state) -> Runner:
                    return sac_runner(sac_model(cfg, env, transitions, d), state, d)

            else:
                start, buffer = d3rlpy_start(cfg, env, name, transitions, Path(folder))

                def make(d: str, start=start, buffer=buffer) -> Runner:
                    return d3rlpy_runner(start, buffer, d)

            # agreement first, from the shared start
            ref, dev = seeded(lambda make=make: make("cpu")), seeded(lambda make=make: make(device))
            forward = float(np.abs(ref.act(probe) - dev.act(probe)).max())
            ref, dev = seeded(lambda make=make: make("cpu")), None
            for _ in range(check_steps):
                ref.update()
            dev = seeded(lambda make=make: make(device))
            for _ in range(check_steps):
                dev.update()
            trained = float(np.abs(ref.act(probe) - dev.act(probe)).max())
            judged = name in DETERMINISTIC
            agree = agrees(name, forward, trained)
            # speed, each device from the shared start
            rate = steps_per_second(seeded(lambda make=make: make(device)), steps, warmup)
            cpu_rate = (
                rate
                if device == "cpu"
                else steps_per_second(seeded(lambda make=make: make("cpu")), cpu_steps, min(warmup, 5))
            )
            rows.append(
                {
                    "learner": name,
                    "device": device,
                    "steps_per_second": round(rate, 1),
                    "cpu_steps_per_second": round(cpu_rate, 1),
                    "speedup": round(rate / cpu_rate, 2),
                    "forward_max_abs_diff": forward,
                    "trained_max_abs_diff": trained,
                    "trained_judged": judged,
                    "agree": agree,
                }
            )
    return rows


def table(rows: Sequence[dict[str, Any]], check_steps: int) -> str:
    header = (
        "learner",
        "device",
        "steps/s",
        "CPU steps/s",
        "speed-up",
        "forward |da|",
        f"after {check_steps}",
        "agree",
    )
    lines = [header]
    for r in rows:
        trained = f"{r['trained_max_abs_diff']:.1e}" + ("" if r["trained_judged"] else " (not judged)")
        lines.append(
            (
                r["learner"],
                r["device"],
                f"{r['steps_per_second']:.1f}",
                f"{r['cpu_steps_per_second']:.1f}",
                f"{r['speedup']:.2f}",
                f"{r['forward_max_abs_diff']:.1e}",
                trained,
                "yes" if r["agree"] else "NO",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    notes = (
        f"forward: largest action difference at the shared start (tolerance {FORWARD_TOLERANCE:g}); after "
        f"{check_steps}: after that many updates on the same batches (tolerance {TRAINED_TOLERANCE:g} for IQL and PEX, "
        "whose updates draw no random numbers; SAC, CQL and Cal-QL draw from the device's own generator: not judged)."
    )
    return "\n".join([*text, "", notes])


def run(
    *,
    device: str,
    env: str,
    steps: int,
    cpu_steps: int,
    warmup: int,
    check_steps: int,
    dataset_size: int,
    learners: str,
    out: str,
) -> bool:
    """Check the comma-separated ``learners`` on ``device``, print the table and write it to ``out``
    (JSON, with the arguments); ``True`` when every learner agrees with the CPU."""
    arguments = dict(locals())
    names = [n for n in learners.split(",") if n]
    if unknown := sorted(set(names) - set(LEARNERS)):
        raise ValueError(f"--learners: unknown {unknown}; valid: {', '.join(LEARNERS)}")
    from replication.imports import import_d3rlpy
    from replication.plan import config
    from replication.plan.provenance import gpu_state
    from replication.runinfo import resolve_device

    import_d3rlpy()
    from replication.agents.learners import quiet_d3rlpy

    quiet_d3rlpy()
    try:
        device = resolve_device(device)
    except RuntimeError as error:
        raise ValueError(str(error)) from error
    cfg = config.resolve({"name": "gpu-check", "device": device})
    start = time.perf_counter()
    rows = check(cfg, env, device, steps, cpu_steps, warmup, check_steps, dataset_size, names)
    print(table(rows, check_steps))
    record = {"rows": rows, "gpu": gpu_state(device), "arguments": arguments, "seconds": time.perf_counter() - start}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{len(rows)} learners in {record['seconds']:.0f} s; written to {out}")
    return all(r["agree"] for r in rows)
