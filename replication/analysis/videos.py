"""Rollout videos: one episode of a run's final policies per environment, rendered headless.

For each environment of a run (its first seed), :func:`build_videos` renders one episode, from the
first reporting-evaluation seed, of

* the **final recommended policy**: at the last pause point (``1.0 x T``), the offline learner whose
  recommendation scored highest in the reporting evaluation (its exported ``policy_*.pt``), and
* the **best fine-tuned policy**: the fine-tuning method with the highest score at the end of the
  budget (its learner at the end of the budget, ``learnable_final.d3``; PEX acts greedily through
  its policy set over the frozen offline learner),

and writes ``<env>-<role>.gif`` (and ``.mp4`` where imageio-ffmpeg is installed), a self-contained
``<env>.html`` page with both clips (the Snakemake HTML report shows it) and ``videos.json``: per
environment the clips, what they show, the frames and render time, or why there is no clip.

Rendering. MuJoCo's GL back-end is chosen once per process (``MUJOCO_GL``, read when mujoco is
imported): the job tries EGL, then OSMesa, each in a throw-away process first, and uses the first
that renders. Without one the job still succeeds and ``videos.json`` says why. Shadows, reflections
and multisampling are off (10-30x cheaper on a CPU renderer, Mesa llvmpipe). Environments are
rendered one at a time and each is closed before the next is built: two MuJoCo GL contexts in one
process corrupt each other's frames. Every env renders from its default camera (Meta-World's
``corner*`` cameras would render upside down; they are not used).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from replication.analysis import labels

BACKENDS = ("egl", "osmesa")
PROBE = "import mujoco; c = mujoco.GLContext(16, 16); c.make_current(); c.free(); print('ok')"
Policy = Callable[[np.ndarray], np.ndarray]


# ---- GL back-end ---------------------------------------------------------------------------------


def probe_backend(backend: str, timeout: float = 60) -> str | None:
    """None when MuJoCo can make a ``backend`` GL context in a fresh process, else the error's last line."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no GL context within {timeout:.0f} s"
    if out.returncode == 0 and out.stdout.strip().endswith("ok"):
        return None
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {out.returncode}"


def choose_backend(backends: Sequence[str] = BACKENDS) -> tuple[str | None, dict[str, str]]:
    """The first back-end that works (or the one ``MUJOCO_GL`` names), and why the others failed."""
    wanted = os.environ.get("MUJOCO_GL")
    order = [wanted, *[b for b in backends if b != wanted]] if wanted else list(backends)
    failures = {}
    for backend in order:
        error = probe_backend(backend)
        if error is None:
            return backend, failures
        failures[backend] = error
    return None, failures


# ---- which policies ----------------------------------------------------------------------------


@dataclasses.dataclass
class Choice:
    """One clip to render: its role, what it shows, and how to load its policy."""

    role: str  # "recommended" or "finetuned"
    label: str
    load: Callable[[], Policy]


def _main_rows(tidy: Any, env: str, seed: int, stage: str) -> Any:
    rows = tidy[(tidy.env == env) & (tidy.seed == seed) & (tidy.stage == stage) & (tidy.metric == "score")]
    return rows[rows.variant_options.astype(str) == ""]


def recommended_choice(tidy: Any, cell: Path, env: str, seed: int) -> Choice | None:
    """The best-scoring offline recommendation of the buffer dataset at the last pause point."""
    from replication.agents.learners import offline_policy

    rows = _main_rows(tidy, env, seed, "recommend")
    rows = rows[(rows.dataset == "buffer") & (rows.selection == "offline")]
    if rows.empty:
        return None
    rows = rows[rows.pause == rows.pause.max()]
    best = rows.loc[rows.value.astype(float).idxmax()]
    which = "best" if best.validation == "full" else "last"
    path = cell / "offline" / f"buffer-p{int(best.pause)}" / str(best.algo) / f"policy_{which}.pt"
    label = (
        f"final recommended policy: offline {labels.ALGO_NAMES.get(str(best.algo), str(best.algo))} on the replay "
        f"buffer at env step {int(best.pause)} ({which} checkpoint), reporting score {float(best.value):.3g}"
    )
    return Choice("recommended", label, lambda: offline_policy(path))


def finetuned_choice(tidy: Any, cell: Path, env: str, seed: int, pex_beta: float) -> Choice | None:
    """The fine-tuning method with the highest score at the end of the budget."""
    rows = _main_rows(tidy, env, seed, "finetune")
    if rows.empty:
        return None
    last = rows[rows.env_step == rows.groupby("algo").env_step.transform("max")]
    best = last.loc[last.value.astype(float).idxmax()]
    method = str(best.algo)
    folder = cell / "finetune" / method
    label = (
        f"best fine-tuned policy: {labels.finetune_name(method)} at the end of the budget "
        f"(env step {int(best.env_step)}), reporting score {float(best.value):.3g}"
    )
    return Choice("finetuned", label, lambda: finetuned_policy(folder, method, pex_beta))


def finetuned_policy(folder: Path, method: str, pex_beta: float) -> Policy:
    """The greedy policy of a fine-tuning run's final learner (PEX: its policy set)."""
    from replication.imports import import_d3rlpy
    from replication.io import read_json

    d3rlpy = import_d3rlpy()
    learner = d3rlpy.load_learnable(str(folder / "learnable_final.d3"), device="cpu:0")
    if method != "pex":
        return lambda obs: learner.predict(np.asarray(obs, dtype=np.float32)[None])[0]
    from replication.agents.finetune.pex import PolicyExpansion
    from replication.agents.learners import load_learner

    summary = read_json(folder / "finetune.json")
    offline = load_learner(summary["offline_dir"], summary["offline_checkpoint"], device="cpu:0")
    return PolicyExpansion(offline, learner, pex_beta, np.random.default_rng(0), device="cpu:0").greedy


# ---- rendering -----------------------------------------------------------------------------------


def fast_renderer(env: Any) -> Any:
    """The env's MuJoCo renderer with multisampling off (before its GL context exists)."""
    base = env.unwrapped
    renderer = getattr(base, "mujoco_renderer", None) or base.robot_env.mujoco_renderer  # Kitchen: its robot env
    renderer.model.vis.quality.offsamples = 0
    return renderer


def _shadows_off(renderer: Any) -> None:
    import mujoco

    scene = renderer._get_viewer("rgb_array").scn
    scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def render_episode(env: Any, policy: Policy, seed: int, max_steps: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Frames of one episode from ``reset(seed=seed)``, at most ``max_steps`` steps, and what happened."""
    renderer = fast_renderer(env)
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    _shadows_off(renderer)  # the scene exists after the first frame
    frames = [env.render()]
    total, steps, end = 0.0, 0, "cut at max_steps"
    while steps < max_steps:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        total += float(info.get("undelayed_reward", reward))
        steps += 1
        frames.append(env.render())
        if terminated or truncated:
            end = "terminated" if terminated else "truncated (time limit)"
            break
    return frames, {"steps": steps, "return": round(total, 4), "end": end, "episode_seed": seed}


def write_clip(frames: Sequence[np.ndarray], stem: Path, fps: int) -> list[Path]:
    """``stem.gif`` and, where imageio-ffmpeg is installed, ``stem.mp4``."""
    import imageio.v2 as imageio

    paths = [stem.with_suffix(".gif")]
    imageio.mimsave(paths[0], list(frames), duration=1000 / fps, loop=0)
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return paths
    paths.append(stem.with_suffix(".mp4"))
    imageio.mimsave(paths[1], list(frames), fps=fps, codec="libx264", quality=7, macro_block_size=16)
    return paths


def write_page(env_name: str, clips: list[dict[str, Any]], reason: str | None, out: Path) -> None:
    """A self-contained HTML page of one environment's clips (data URIs), for the Snakemake report."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(env_name)}</title></head><body>"]
    parts.append(f"<h3>{html.escape(env_name)}</h3>")
    if reason:
        parts.append(f"<p>No clip: {html.escape(reason)}</p>")
    for clip in clips:
        gif = base64.b64encode((out.parent / clip["gif"]).read_bytes()).decode()
        parts.append(f"<figure><img src='data:image/gif;base64,{gif}' alt='{html.escape(clip['role'])}'>")
        parts.append(f"<figcaption>{html.escape(clip['label'])}; {html.escape(describe(clip))}</figcaption></figure>")
    parts.append("</body></html>")
    out.write_text("\n".join(parts))


def describe(clip: dict[str, Any]) -> str:
    return f"{clip['steps']} steps, return {clip['return']:g}, {clip['end']}, episode seed {clip['episode_seed']}"


# ---- the job -------------------------------------------------------------------------------------


def env_clips(cfg: dict[str, Any], results: Path, tidy: Any, env_name: str, out_dir: Path) -> dict[str, Any]:
    """Render one environment's clips into ``out_dir``; returns its ``videos.json`` entry."""
    from replication.agents.envs import make_env
    from replication.agents.evaluation import episode_seeds
    from replication.plan import config

    seed = int(cfg["seeds"][0])
    cell = results / "cells" / env_name / f"seed{seed}"
    video = cfg["videos"]
    choices = [
        c
        for c in (
            recommended_choice(tidy, cell, env_name, seed),
            finetuned_choice(tidy, cell, env_name, seed, float(cfg["finetune"]["pex_beta"])),
        )
        if c is not None
    ]
    entry: dict[str, Any] = {"seed": seed, "clips": [], "reason": None}
    if not choices:
        entry["reason"] = "the run has no recommended or fine-tuned policy of this environment"
        return entry
    options = config.env_options(cfg, env_name)
    width, height = video["size"]
    render = {"render_mode": "rgb_array", "width": int(width), "height": int(height)}
    options["kwargs"] = {**options.get("kwargs", {}), **render}
    episode_seed = episode_seeds(seed, 1)[0]
    env = make_env(env_name, seed, **options)  # one env, and one GL context, at a time
    try:
        for choice in choices:
            policy = choice.load()
            start = time.perf_counter()
            frames, facts = render_episode(env, policy, episode_seed, int(video["max_steps"]))
            seconds = time.perf_counter() - start
            paths = write_clip(frames, out_dir / f"{env_name}-{choice.role}", int(video["fps"]))
            entry["clips"].append(
                {
                    "role": choice.role,
                    "label": choice.label,
                    **facts,
                    "frames": len(frames),
                    "render_seconds": round(seconds, 2),
                    "gif": paths[0].name,
                    "mp4": paths[1].name if len(paths) > 1 else None,
                }
            )
    finally:
        env.close()
    return entry


def build_videos(
    cfg: dict[str, Any], tidy_path: Path | str, out_dir: Path | str, backends: Sequence[str] = BACKENDS
) -> dict[str, Any]:
    """Every environment's clips under ``out_dir`` and ``videos.json``; never fails for want of a GL back-end."""
    import pandas as pd

    from replication.io import write_json
    from replication.plan.workflow import results_dir

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    backend, failures = choose_backend(backends)
    status: dict[str, Any] = {"backend": backend, "backend_failures": failures, "envs": {}, "reason": None}
    if backend is None:
        tried = "; ".join(f"{name}: {error}" for name, error in failures.items())
        status["reason"] = f"no MuJoCo GL back-end works on this machine ({tried})"
    else:
        os.environ["MUJOCO_GL"] = backend  # before mujoco is first imported (make_env)
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
        tidy = pd.read_csv(tidy_path, keep_default_na=False)
        results = Path(results_dir(cfg))
        for env_name in cfg["envs"]:
            try:
                status["envs"][env_name] = env_clips(cfg, results, tidy, env_name, out_dir)
            except Exception as error:  # one env's failure must not cost the others their clips
                status["envs"][env_name] = {"clips": [], "reason": f"{type(error).__name__}: {error}"}
    for env_name in cfg["envs"]:
        entry = status["envs"].get(env_name, {"clips": [], "reason": status["reason"]})
        write_page(env_name, entry["clips"], entry.get("reason"), out_dir / f"{env_name}.html")
    status["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_dir / "videos.json", status)
    return status


def markdown(videos_dir: Path | str, base: Path | str, made_by: str = "") -> str:
    """The report's section on the clips of ``videos_dir``; links relative to ``base``."""
    from replication.io import read_json

    videos_dir = Path(videos_dir)
    status = read_json(videos_dir / "videos.json")
    rel = Path(os.path.relpath(videos_dir.resolve(), Path(base).resolve())).as_posix()
    if status.get("reason"):
        return f"No clips: {status['reason']}.\n"
    lines = [f"One episode each, from the first evaluation seed, rendered with MuJoCo ({status['backend']})."]
    for env_name, entry in status["envs"].items():
        lines += ["", f"### {env_name}", ""]
        if not entry["clips"]:
            lines.append(f"No clip: {entry.get('reason')}.")
        for clip in entry["clips"]:
            mp4 = f" ([MP4]({rel}/{clip['mp4']}))" if clip.get("mp4") else ""
            lines += [f"![{env_name} {clip['role']}]({rel}/{clip['gif']})", ""]
            lines += [f"*{clip['label']}; {describe(clip)}.{made_by}*{mp4}", ""]
    return "\n".join(lines).rstrip() + "\n"


def render(config_file: Path | str, tidy: Path | str, out: Path | str) -> dict[str, Any]:
    """:func:`build_videos` for the run configured in ``config_file``; returns its status."""
    import logging

    from replication.plan import config

    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # "No OpenGL_accelerate module loaded"
    for path in (config_file, tidy):
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file")
    return build_videos(config.resolve(config.read_yaml(config_file)), tidy, out)


def summary(status: dict[str, Any]) -> list[str]:
    """What :func:`render` made: clips, environments, seconds, and why an environment has none."""
    clips = sum(len(e["clips"]) for e in status["envs"].values())
    lines = [
        f"videos: {clips} clips of {len(status['envs'])} environments in {status['seconds']} s"
        + (f"; {status['reason']}" if status["reason"] else "")
    ]
    lines += [f"  {env}: no clip: {entry['reason']}" for env, entry in status["envs"].items() if entry.get("reason")]
    return lines
