"""WSRL at learning scale: its fine-tuning curve beside IQL, Cal-QL and SAC continuation, and the drop.

After a finished run of ``config/wsrl-hopper.yaml`` (or any run whose ``finetune.methods`` has
``wsrl``)::

    .venv/bin/python scripts/wsrl-hopper.py results/wsrl-hopper --out results/reference/wsrl-hopper

1. runs the RLPD-style ablation, WSRL with the offline dataset kept in 50/50 minibatches
   (``finetune.wsrl.keep_offline_data: true``), from the same offline agent of every seed, with the
   same command line as the run's own WSRL job (from the plan) but that one setting flipped; it
   goes under ``<run>/ablation/`` and is skipped where already finished;
2. draws every method's score against the ledger's env steps (mean over seeds, each seed thin),
   with the online SAC run before the switch and SAC continuation after it (``wsrl-hopper.png``);
3. writes the drop right after the switch per method and seed (``drop.csv``, ``drop.md``): the
   mean score over the first ``--window`` of the fine-tuning budget minus the offline agent's score
   at the switch (C3.1's statistic; for SAC continuation, minus SAC's own score at the switch),
   the first evaluation after the switch, and the last score within the budget.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from replication import tidy
from replication.analysis import selection
from replication.analysis.labels import markdown_table
from replication.io import write_text
from replication.plan import config as rconfig
from replication.plan import workflow
from replication.plan.plan import Plan

METRIC = "score"
ABLATION = "wsrl-offline"  # the ablation's name in the figure and the tables
NAMES = {
    "sac": "SAC continuation",
    "iql": "IQL",
    "calql": "Cal-QL",
    "pex": "PEX",
    "wsrl": "WSRL",
    ABLATION: "WSRL, offline data kept (RLPD-style)",
}
COLOURS = {"sac": "black", "iql": "tab:blue", "calql": "tab:green", "pex": "tab:purple", "wsrl": "tab:red"}
COLOURS[ABLATION] = "tab:orange"


def finished(cfg: dict) -> list[Path]:
    """The run's tidy files that exist (cwd: the project); the missing ones are named in the output."""
    return [p for p in workflow.tidy_inputs(cfg) if p.exists()]


def missing(cfg: dict) -> list[Path]:
    return [p for p in workflow.tidy_inputs(cfg) if not p.exists()]


def run_ablation(run: Path, cfg: dict) -> list[Path]:
    """The RLPD-style WSRL job of every seed (skipped where finished); the tidy files it wrote."""
    ablation_cfg = copy.deepcopy(cfg)
    ablation_cfg["finetune"]["wsrl"]["keep_offline_data"] = True
    config_file = run / "ablation" / "config.yaml"
    write_text(config_file, yaml.safe_dump(ablation_cfg, sort_keys=False))
    out = []
    for job in Plan.build(cfg).jobs:
        if job.job.rule != "finetune" or job.job.algo != "wsrl" or "+" in job.job.env:
            continue
        argv = list(job.argv)
        target = run / "ablation" / job.job.env / f"seed{job.job.seed}"
        argv[argv.index("--config") + 1] = str(config_file)
        argv[argv.index("--out") + 1] = str(target)
        if not (target / "finetune.json").exists():
            print("running:", "replication", " ".join(argv), flush=True)
            with open(run / "ablation" / f"{job.job.env}-seed{job.job.seed}.log", "w") as log:
                subprocess.run([sys.executable, "-m", "replication", *argv], check=True, stdout=log, stderr=log)
        out.append(target / "curve.csv")
    return out


def curves(cfg: dict, ablation: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, selection.Expected]:
    """``(curves, switch, online, expected)``: every method's fine-tuning curve after the switch with SAC
    continuation, per (method, env, seed) the score it starts from at the switch (the offline agent's,
    :func:`selection.switch_levels`), and the online curve."""
    df = selection.load_results(finished(cfg))
    expected = selection.Expected.from_config(cfg)
    rows, switch = [], []
    for method in [*cfg["finetune"]["methods"], ABLATION]:
        if method == ABLATION:
            if not ablation:
                continue
            ft = selection.prepare(tidy.read(ablation))
            ft = ft[(ft["metric"] == METRIC) & (ft["stage"] == "finetune")][["env", "seed", "env_step", "value"]]
        else:
            ft = selection.finetune_curves(df, METRIC, expected, method)[["env", "seed", "env_step", "value"]]
        start = selection.switch_levels(df, METRIC, expected, "wsrl" if method == ABLATION else method, ft)
        rows.append(ft.assign(method=method))
        switch.append(start.rename(columns={"switch": "value"})[["env", "seed", "value"]].assign(method=method))
    online = selection.online_curve(df, METRIC, envs=expected.envs)[["env", "seed", "env_step", "value"]]
    at_pause = online[online["env_step"] == expected.finetune_pause][["env", "seed", "value"]]
    rows.append(online[online["env_step"] > expected.finetune_pause].assign(method="sac"))
    switch.append(at_pause.assign(method="sac"))
    return pd.concat(rows, ignore_index=True), pd.concat(switch, ignore_index=True), online, expected


def drops(curves: pd.DataFrame, switch: pd.DataFrame, pause: int, budget_end: int, window: float) -> pd.DataFrame:
    """Per (method, env, seed): the early change (C3.1's statistic), the first score after the switch, the last."""
    horizon = pause + window * (budget_end - pause)
    out = []
    for (method, env, seed), c in curves.groupby(["method", "env", "seed"]):
        c = c.sort_values("env_step")
        start = switch[(switch["method"] == method) & (switch["env"] == env) & (switch["seed"] == seed)]["value"]
        start_value = float(start.iloc[0]) if len(start) else np.nan
        early = c[c["env_step"] <= horizon]["value"].mean()
        within = c[c["env_step"] <= budget_end]
        after = c[c["env_step"] > c["env_step"].iloc[0]] if method != "sac" else c  # the first row: the start
        out.append(
            {
                "method": method,
                "env": env,
                "seed": int(seed),
                "switch": start_value,
                "first": float(after["value"].iloc[0]),
                "first_step": int(after["env_step"].iloc[0]),
                "early_change": float(early) - start_value,
                "last": float(within["value"].iloc[-1]),
                "last_step": int(within["env_step"].iloc[-1]),
            }
        )
    return pd.DataFrame(out)


def figure(curves: pd.DataFrame, online: pd.DataFrame, pause: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted(curves["env"].unique())
    fig, axes = plt.subplots(1, len(envs), figsize=(7 * len(envs), 4.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        before = online[(online["env"] == env) & (online["env_step"] <= pause)]
        for _, c in before.groupby("seed"):
            ax.plot(c["env_step"], c["value"], color="grey", lw=0.6, alpha=0.5)
        mean = before.groupby("env_step")["value"].mean()
        ax.plot(mean.index, mean.values, color="grey", lw=2, label="online SAC (before the switch)")
        for method in [m for m in NAMES if m in set(curves["method"])]:
            c = curves[(curves["env"] == env) & (curves["method"] == method)]
            for _, s in c.groupby("seed"):
                ax.plot(s["env_step"], s["value"], color=COLOURS[method], lw=0.6, alpha=0.4)
            mean = c.groupby("env_step")["value"].mean()
            ax.plot(mean.index, mean.values, color=COLOURS[method], lw=2, label=NAMES[method])
        ax.axvline(pause, color="k", ls=":", lw=1)
        ax.set(title=f"{env}: fine-tuning from the switch at {pause:,} env steps", xlabel="env steps (ledger)")
        ax.set_ylabel("return")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run directory, e.g. results/wsrl-hopper")
    parser.add_argument("--out", type=Path, help="where the figure and tables go (default: <run>/wsrl)")
    parser.add_argument("--window", type=float, default=0.25, help="C3.1's window: fraction of the fine-tuning budget")
    parser.add_argument("--no-ablation", action="store_true", help="skip the 50/50 offline-data ablation")
    args = parser.parse_args(argv)
    cfg = rconfig.load(args.run / "config.yaml")
    if "wsrl" not in cfg["finetune"]["methods"]:
        parser.error(f"{args.run}: its finetune.methods has no wsrl")
    ablation = [] if args.no_ablation else run_ablation(args.run, cfg)
    ft, switch, online, expected = curves(cfg, ablation)
    out = args.out or args.run / "wsrl"
    budget_end = int(cfg["budget"]["total_steps"])
    table = drops(ft, switch, expected.finetune_pause, budget_end, args.window)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "drop.csv", index=False)
    figure(ft, online, expected.finetune_pause, out / "wsrl-hopper.png")
    summary = table.groupby("method")[["switch", "first", "early_change", "last"]].mean()
    summary["seeds"] = table.groupby("method")["seed"].apply(lambda s: ", ".join(map(str, sorted(s))))
    summary = summary.reindex([m for m in NAMES if m in summary.index])
    shown = pd.DataFrame(
        {
            "method": [NAMES[m] for m in summary.index],
            "seeds": summary["seeds"],
            "return at the switch": summary["switch"].round(0),
            "first evaluation after it": summary["first"].round(0),
            f"early change (C3.1, first {args.window:g})": summary["early_change"].round(0),
            "last within the budget": summary["last"].round(0),
        }
    )
    seeds = sorted(table["seed"].unique())
    per_seed = table.assign(method=table["method"].map(NAMES)).round(0)
    text = (
        f"Return, mean over the seeds shown (of {', '.join(map(str, seeds))}); early change: mean over the "
        f"first {args.window:g} of the fine-tuning budget minus the score at the switch (the offline agent's "
        "recommendation; SAC's own score for SAC continuation); first evaluation: the first after fine-tuning "
        "began.\n\n" + markdown_table(shown) + "\n\nPer seed:\n\n" + markdown_table(per_seed)
    )
    if gone := missing(cfg):
        why = "missing: a job that has not finished, or whose outputs were removed"
        text += f"\n\nNot in this table ({why}): " + ", ".join(f"`{p}`" for p in gone)
    write_text(out / "drop.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
