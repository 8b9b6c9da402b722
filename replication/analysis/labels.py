"""Display names of environments, algorithms and metrics, step counts, and Markdown tables."""

from __future__ import annotations

import pandas as pd

from replication.analysis.normalize import NORMALIZED

ENV_NAMES = {
    "hopper": "Hopper",
    "halfcheetah": "HalfCheetah",
    "walker2d": "Walker2d",
    "ant": "Ant",
    "humanoid": "Humanoid",
    "kitchen": "Kitchen",
    "kitchen-sparse": "Kitchen Sparse",
    "sawyer-push": "Sawyer Push",
    "sawyer-coffee": "Sawyer Coffee",
    "sawyer-basketball": "Sawyer Basketball",
    "sawyer-lift": "Sawyer Lift",
    "sawyer-drape": "Sawyer Drape",
}
ALGO_NAMES = {"sac": "Online SAC", "iql": "IQL", "cql": "CQL", "calql": "Cal-QL", "pex": "PEX", "wsrl": "WSRL"}
FINETUNE_NAMES = {"sac": "SAC continuation", "iql": "IQL FT", "pex": "PEX", "calql": "Cal-QL FT", "wsrl": "WSRL"}
WSRL_KEPT_NAME = "WSRL (offline data kept)"  # finetune.wsrl.keep_offline_data: the RLPD-style ablation
METRIC_NAMES = {"return": "return", "subtasks": "subtasks", "success": "success", NORMALIZED: "normalized"}


def env_name(env: str) -> str:
    return ENV_NAMES.get(env, env.replace("-", " ").title())


def finetune_name(method: str, keep_offline_data: bool = False) -> str:
    """Display name of a fine-tuning method; WSRL with ``keep_offline_data`` is the ablation that keeps them."""
    if method == "wsrl" and keep_offline_data:
        return WSRL_KEPT_NAME
    return FINETUNE_NAMES.get(method, method)


def format_steps(steps: float) -> str:
    """``200000`` -> ``200K``, ``1000000`` -> ``1M``."""
    steps = float(steps)
    if abs(steps) >= 1e6:
        return f"{steps / 1e6:.3g}M"
    if abs(steps) >= 1e3:
        return f"{steps / 1e3:.3g}K"
    return f"{steps:.0f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``frame``, with ``|`` inside cells escaped."""
    frame = frame.map(lambda v: str(v).replace("|", "\\|")).rename(columns=lambda c: str(c).replace("|", "\\|"))
    return frame.to_markdown(index=False, disable_numparse=True)


def markdown(title: str, frame: pd.DataFrame) -> str:
    return f"**{title}**\n\n" + markdown_table(frame) + "\n"
