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
from collections.abc import Iterator
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


def add(r: dict[str, float], **parts: float) -> None:
    """Add ``parts`` (jobs, wall, train, eval, setup, episodes) to a stage's row."""
    for part, value in parts.items():
        r[part] += value


def stage_jobs(rows: dict[str, dict[str, float]], bench: Path, stage: str) -> Iterator[tuple[dict[str, float], str]]:
    """Each of a cell's ``stage`` jobs, counted in ``rows[stage]`` (jobs, wall) from its benchmark file:
    the row and the variants the job ran (``*``: a batch job, every one)."""
    for b in bench.glob(f"{stage}-*.tsv"):
        r = rows[stage]
        add(r, jobs=1, wall=wall(b))
        yield r, "*" if b.stem == f"{stage}-cell" else b.stem.removeprefix(f"{stage}-")


def stage_rows(run: Path) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for cell in sorted(run.glob("cells/*/seed*")):
        bench = cell / "benchmarks"
        online = cell / "online"
        if (bench / "online.tsv").exists() and (online / "online.json").exists():
            t = json.loads((online / "online.json").read_text())["timings"]
            add(
                rows["online"],
                jobs=1,
                wall=wall(bench / "online.tsv"),
                train=t["train_seconds"],
                eval=t["eval_seconds"] + t["validation_seconds"],
                setup=t.get("dataset_seconds", 0.0),
                episodes=curve_episodes(online / "curve.csv")
                + sum(count_records(p) for p in online.glob("pause_*/*.json") if p.name != "done.json"),
            )
        for _ in stage_jobs(rows, bench, "newdata"):
            pass  # wall time only
        for r, variant in stage_jobs(rows, bench, "offline"):
            for summary in (cell / "offline").glob(f"{variant}/*/offline.json"):
                t = json.loads(summary.read_text())["timings"]
                records = sum(count_records(summary.parent / n) for n in ("records.json", "validation.json"))
                add(
                    r,
                    train=t["train_seconds"],
                    eval=t["evaluation_seconds"] + t["validation_seconds"],
                    setup=t["setup_seconds"],
                    episodes=records,
                )
        for r, variant in stage_jobs(rows, bench, "finetune"):
            for summary in (cell / "finetune").glob(f"{variant}/finetune.json"):
                t = json.loads(summary.read_text())["timings"]
                t = t.get("with_extension") or t
                add(
                    r,
                    train=t["loop_seconds"] - t["eval_seconds"],
                    eval=t["eval_seconds"],
                    setup=t["setup_seconds"],
                    episodes=curve_episodes(summary.parent / "curve.csv"),
                )
    for b in sorted(run.glob("benchmarks/*.tsv")):
        add(rows["aggregation"], jobs=1, wall=wall(b))
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
