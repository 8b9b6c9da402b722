"""Where a finished run's time went: per stage, training vs evaluation vs start-up, and evaluation per episode.

Reads what the run's jobs left (Snakemake's benchmark files for each job's wall time, the job
summaries' own timings, the evaluation records) and prints, per stage: jobs, wall seconds, the
shares of training, evaluation (reporting + validation), in-process setup, and the rest (process
start-up, imports, environment construction, file I/O), and evaluation's cost per episode.

    .venv/bin/python benchmarks/bench_stages.py results/default
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path


def wall(bench: Path) -> float:
    with bench.open() as f:
        return float(next(csv.DictReader(f, delimiter="\t"))["s"])


def curve_episodes(curve: Path) -> int:
    """Evaluation episodes behind a learning curve (one row per metric per evaluation point)."""
    seen: dict[str, int] = {}
    with curve.open() as f:
        for row in csv.DictReader(f):
            seen.setdefault(row["env_step"], int(float(row["episodes"] or 0)))
    return sum(seen.values())


def episode_records(obj: object) -> set[tuple]:
    """Distinct episode records (dicts with ``seed`` and ``length``) anywhere inside a JSON document.

    A policy evaluated once and reported under several variants counts once.
    """
    if isinstance(obj, dict):
        if "seed" in obj and "length" in obj:
            return {(obj["seed"], obj["length"], obj.get("episode_return"))}
        return set().union(*(episode_records(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(episode_records(v) for v in obj)) if obj else set()
    return set()


def count_records(path: Path) -> int:
    return len(episode_records(json.loads(path.read_text())))


def stage_rows(run: Path) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for cell in sorted(run.glob("cells/*/seed*")):
        bench = cell / "benchmarks"
        online = cell / "online"
        if (bench / "online.tsv").exists() and (online / "online.json").exists():
            t = json.loads((online / "online.json").read_text())["timings"]
            r = rows["online"]
            r["jobs"] += 1
            r["wall"] += wall(bench / "online.tsv")
            r["train"] += t["train_seconds"]
            r["eval"] += t["eval_seconds"] + t["validation_seconds"]
            r["setup"] += t.get("dataset_seconds", 0.0)
            r["episodes"] += curve_episodes(online / "curve.csv") + sum(
                count_records(p) for p in online.glob("pause_*/*.json") if p.name != "done.json"
            )
        for b in bench.glob("newdata-*.tsv"):
            rows["newdata"]["jobs"] += 1
            rows["newdata"]["wall"] += wall(b)
        for b in bench.glob("offline-*.tsv"):
            r = rows["offline"]
            r["jobs"] += 1
            r["wall"] += wall(b)
            variant = "*" if b.stem == "offline-cell" else b.stem.removeprefix("offline-")  # batch: every dataset
            for summary in (cell / "offline").glob(f"{variant}/*/offline.json"):
                t = json.loads(summary.read_text())["timings"]
                r["train"] += t["train_seconds"]
                r["eval"] += t["evaluation_seconds"] + t["validation_seconds"]
                r["setup"] += t["setup_seconds"]
                r["episodes"] += sum(count_records(summary.parent / n) for n in ("records.json", "validation.json"))
        for b in bench.glob("finetune-*.tsv"):
            r = rows["finetune"]
            r["jobs"] += 1
            r["wall"] += wall(b)
            variant = "*" if b.stem == "finetune-cell" else b.stem.removeprefix("finetune-")  # batch: every method
            for summary in (cell / "finetune").glob(f"{variant}/finetune.json"):
                t = json.loads(summary.read_text())["timings"]
                t = t.get("with_extension") or t
                r["train"] += t["loop_seconds"] - t["eval_seconds"]
                r["eval"] += t["eval_seconds"]
                r["setup"] += t["setup_seconds"]
                r["episodes"] += curve_episodes(summary.parent / "curve.csv")
    for b in sorted(run.glob("benchmarks/*.tsv")):
        rows["aggregation"]["jobs"] += 1
        rows["aggregation"]["wall"] += wall(b)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run's directory, e.g. results/default")
    args = parser.parse_args()
    rows = stage_rows(args.run)
    head = (
        f"{'stage':<12}{'jobs':>6}{'wall s':>9}{'train':>8}{'eval':>8}{'setup':>8}{'rest':>8}{'eval ep':>9}{'s/ep':>7}"
    )
    print(head)
    total = 0.0
    for stage, r in rows.items():
        w = r["wall"]
        total += w
        rest = w - r["train"] - r["eval"] - r["setup"]
        per_ep = r["eval"] / r["episodes"] if r["episodes"] else float("nan")
        shares = "".join(f"{100 * x / w:>7.0f}%" for x in (r["train"], r["eval"], r["setup"], rest))
        print(f"{stage:<12}{int(r['jobs']):>6}{w:>9.0f}{shares}{int(r['episodes']):>9}{per_ep:>7.3f}")
    print(f"sum of job wall times: {total:.0f} s ({total / 60:.1f} min; divide by the cores for the ideal wall time)")


if __name__ == "__main__":
    main()
