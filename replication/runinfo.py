"""What every run records next to its outputs: versions, device, threads, config name."""

from __future__ import annotations

import importlib.metadata
import platform
import time
from typing import Any

KEY_PACKAGES = (
    "torch",
    "numpy",
    "gymnasium",
    "mujoco",
    "metaworld",
    "gymnasium-robotics",
    "stable-baselines3",
    "d3rlpy",
    "snakemake",
)


def package_version() -> str:
    """The installed package's version (``pyproject.toml``), or ``unknown`` when it is not installed."""
    try:
        return importlib.metadata.version("replication")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    out = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda:0`` when a GPU is visible, else ``cpu``; an unusable request is an error."""
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but no CUDA device is visible; use device: auto or cpu")
    return "cuda:0" if requested == "cuda" else requested


def configure_torch(cfg: dict[str, Any]) -> str:
    """Apply the config's thread count; returns the device to use."""
    import torch

    torch.set_num_threads(int(cfg.get("threads", 1)))
    return resolve_device(cfg.get("device", "auto"))


def run_info(cfg: dict[str, Any], device: str) -> dict[str, Any]:
    import torch

    return {
        "config_name": cfg.get("name"),
        "device": device,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "host": platform.node(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
    }
