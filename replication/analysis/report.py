"""The replication report: one Markdown file with the scorecard, figures, tables and provenance.

:func:`write_report` writes ``results/<name>/report.md`` (or any path): the claims scorecard S1,
every figure (PNG embedded, PDF linked), every table (Markdown embedded, CSV and LaTeX linked), the
aggregate numbers of F5, every value this project chose where the study is silent (the keys whose
comment in ``config/defaults.yaml`` says ``(choice)``, with their value in this run), the
environment substitutions and reference returns, the versions of the key packages, and the
measured cost of each stage from Snakemake ``benchmark:`` files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from replication.analysis.labels import markdown_table
from replication.io import write_text
from replication.plan import provenance as prov
from replication.plan.config import DEFAULTS_FILE, read_yaml
from replication.runinfo import KEY_PACKAGES

PACKAGES = (*KEY_PACKAGES, "rliable", "seaborn")
FIGURE_TITLES = {
    "F1": "Final-policy recommendation curve",
    "F2": "Fine-tuning curves",
    "F3": "Analysis C4: extended IQL fine-tuning",
    "F4": "Analysis C5: Cal-QL in Kitchen, binary vs accumulated reward",
    "F5": "Aggregate IQM and probability of improvement",
    "F6": "Reward granularity",
}
FIGURE_CAPTIONS = {
    "F1": "Recommendation curve: online SAC (line: mean over seeds, band: +- 1 std) and the validated "
    "recommendation of each offline algorithm at every pause point (filled: offline policy; open: best of the "
    "online and offline policies; black crosses: C1's control, online SAC's validated best snapshot without an "
    "offline learner), at the env step each recommendation really spent.",
    "F2": "Fine-tuning curves: {methods} against SAC continuation after the pause "
    "(dashed line); curves start at the env step the offline phase left them.",
    "F3": "Analysis C4: IQL fine-tuning with the extended budget; dotted: the level at the switch, dashed: the end "
    "of the regular budget T.",
    "F4": "Analysis C5: Cal-QL fine-tuning in Kitchen with binary vs accumulated reward, with SAC continuation.",
    "F5": "Aggregates across environments of normalised scores: interquartile mean (left) and probability of "
    "improvement over the group's baseline (right), with 95% stratified-bootstrap intervals (rliable).",
    "F6": "Reward granularity: score at one pause point against the reward delay K (mean +- std over seeds).",
}
# The fine-tuning methods a caption names when the configuration does not say (the study's three and WSRL).
DEFAULT_FINETUNE_METHODS = ("iql", "pex", "calql", "wsrl")
_KEY = re.compile(r"^(\s*)(?:-\s+)?([A-Za-z0-9_\-]+)\s*:(.*)$")
_ID = re.compile(r"^\s*-\s+id:\s*(\S+)")


# --------------------------------------------------------------------------------------------
# Choices


def _split_comment(text: str) -> tuple[str, str]:
    """(value, comment) of the rest of a YAML line: the comment starts at the first unquoted ``#``."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i + 1 :].strip()
    return text.strip(), ""


def marked_choices(path: Path | str) -> list[dict[str, str]]:
    """Every key of a YAML file whose line comment says ``(choice)``.

    Returns ``key`` (dotted path of mapping keys), ``literal`` (the value as written), ``note`` (the
    comment, with its continuation lines) and ``item`` (the ``id`` of the list item it sits in, if any).
    """
    out: list[dict[str, str]] = []
    stack: list[tuple[int, str]] = []
    item, last = "", None
    for line in Path(path).read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            last = None
            continue
        if stripped.startswith("#"):
            if last is not None and len(line) - len(line.lstrip()) > last["_indent"]:
                last["note"] += " " + stripped.lstrip("# ").strip()
            else:
                last = None
            continue
        if m := _ID.match(line):
            item = m.group(1)
        m = _KEY.match(line)
        if not m:
            last = None
            continue
        indent = len(m.group(1)) + (line[len(m.group(1)) :].startswith("-") * 2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        literal, comment = _split_comment(m.group(3))
        if "(choice)" in comment:
            last = {
                "key": ".".join(k for _, k in stack),
                "literal": literal,
                "note": comment,
                "item": item,
                "_indent": indent,
            }
            out.append(last)
        else:
            last = None
    for entry in out:
        entry.pop("_indent")
        entry["note"] = entry["note"].replace("(choice)", "").strip(" ;:")
    return out


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _show(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def config_choices(cfg: Mapping[str, Any], defaults_path: Path | str = DEFAULTS_FILE) -> pd.DataFrame:
    """The ``(choice)`` keys of ``defaults_path`` with their value in ``cfg`` and their default."""
    defaults = read_yaml(defaults_path)
    rows = []
    for c in marked_choices(defaults_path):
        try:
            value = _show(_lookup(cfg, c["key"]))
        except KeyError:
            value = "(not in the configuration)"
        try:
            default = _show(_lookup(defaults, c["key"]))
        except KeyError:
            default = c["literal"]
        rows.append({"Key": c["key"], "Value": value, "Default": default, "Why / note": c["note"]})
    return pd.DataFrame(rows, columns=["Key", "Value", "Default", "Why / note"])


def other_choices(cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Choices outside the run configuration: environment substitutions, reference returns, claim tests."""
    from replication.analysis import normalize, scorecard
    from replication.envspecs import ENVS_FILE, specs

    rows = []
    table = specs()
    for env in cfg.get("envs", []):
        spec = table.get(env)
        for text in (spec.substitute, spec.note) if spec else ():
            if text and "(choice)" in text:
                rows.append({"Where": f"{Path(ENVS_FILE).name}: {env}", "Choice": text.replace("(choice)", "").strip()})
    refs = normalize.load_references()
    for env in cfg.get("envs", []):
        if env in refs:
            r = refs[env]
            rows.append(
                {
                    "Where": f"{normalize.REFERENCE_FILE.name}: {env}",
                    "Choice": f"random {r.random:g}, expert {r.expert:g} ({r.source.replace('(choice)', '').strip()})",
                }
            )
    for c in marked_choices(scorecard.CLAIMS_FILE):
        key = f"{c['item']} {c['key'].split('.')[-1]}" if c["item"] else c["key"]
        where = f"{scorecard.CLAIMS_FILE.name}: {key}"
        rows.append({"Where": where, "Choice": f"{c['literal']} ({c['note']})" if c["note"] else c["literal"]})
    return pd.DataFrame(rows, columns=["Where", "Choice"])


# --------------------------------------------------------------------------------------------
# Versions and cost


def package_versions(packages: Sequence[str] = PACKAGES) -> pd.DataFrame:
    """Installed versions of ``packages`` (``not installed`` where absent)."""
    from replication.plan.provenance import versions

    return pd.DataFrame([{"Package": name, "Version": v} for name, v in versions(packages).items()])


def stage_of(path: Path | str) -> str:
    """The stage a benchmark file belongs to: the folder under ``benchmarks/``, else the file name's first word."""
    parts = Path(path).parts
    if "benchmarks" in parts:
        i = len(parts) - 1 - parts[::-1].index("benchmarks")
        if i + 2 < len(parts):
            return parts[i + 1]
    return re.split(r"[_.\-]", Path(path).name, maxsplit=1)[0]


def benchmark_costs(benchmarks: Sequence[Path | str] | Mapping[str, Sequence[Path | str]]) -> pd.DataFrame:
    """Measured cost per stage from Snakemake benchmark TSV files.

    ``benchmarks`` is a list of files (stage: see :func:`stage_of`; a ``rule_name`` column wins) or
    a mapping of stage to files. A file with several rows (``benchmark: repeat(...)``) counts as one
    job with its mean. Returns per stage: jobs, total / mean / max wall-clock hours and peak max_rss
    (MB).
    """
    items = (
        [(stage, p) for stage, paths in benchmarks.items() for p in paths]
        if isinstance(benchmarks, Mapping)
        else [(None, p) for p in benchmarks]
    )
    jobs = []
    for stage, path in items:
        try:
            bench = pd.read_csv(path, sep="\t")
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise ValueError(f"cannot read Snakemake benchmark file {path}: {err}") from err
        if "s" not in bench.columns or bench.empty:
            raise ValueError(f"{path} is not a Snakemake benchmark file (no 's' column or no rows)")
        if stage is None:
            stage = str(bench["rule_name"].iloc[0]) if "rule_name" in bench.columns else stage_of(path)
        num = bench.apply(pd.to_numeric, errors="coerce")
        jobs.append(
            {
                "stage": stage,
                "s": float(num["s"].mean()),
                "max_rss": float(num["max_rss"].max()) if "max_rss" in num else float("nan"),
            }
        )
    # no CPU time: Snakemake's benchmark ``cpu_time`` stops growing after about 15 s of a job (a
    # 30 s busy loop reads 15.8 s), so only wall-clock time and memory are reported
    columns = ["Stage", "Jobs", "Total hours", "Mean minutes per job", "Max minutes", "Peak RSS (MB)"]
    if not jobs:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(jobs)
    out = frame.groupby("stage", sort=True).agg(
        jobs=("s", "size"),
        total=("s", "sum"),
        mean=("s", "mean"),
        max=("s", "max"),
        rss=("max_rss", "max"),
    )
    total = pd.DataFrame(
        {
            "jobs": [out["jobs"].sum()],
            "total": [out["total"].sum()],
            "mean": [frame["s"].mean()],
            "max": [out["max"].max()],
            "rss": [out["rss"].max()],
        },
        index=["all stages"],
    )
    out = pd.concat([out, total])
    return pd.DataFrame(
        {
            "Stage": out.index,
            "Jobs": out["jobs"].astype(int).to_numpy(),
            "Total hours": (out["total"] / 3600).round(3).to_numpy(),
            "Mean minutes per job": (out["mean"] / 60).round(2).to_numpy(),
            "Max minutes": (out["max"] / 60).round(2).to_numpy(),
            "Peak RSS (MB)": out["rss"].round(0).to_numpy(),
        }
    )


def provenance_section(record: Mapping[str, Any] | None) -> list[str]:
    """The report's provenance section (lines), from a run's ``provenance.json`` record."""
    if record is None:
        return []
    return ["## Provenance", "", "From `provenance.json` of this run.", "", prov.markdown(record), ""]


def videos_section(videos: Path | str | None, base: Path, made_by: str = "", enabled: bool = False) -> list[str]:
    """The report's rollout-video section (lines), from the folder of :mod:`replication.analysis.videos`."""
    if videos is None:
        off = "No clips: rollout videos are off in this run's configuration (`videos.enabled: false`)."
        return [] if enabled else ["## Rollout videos", "", off, ""]
    from replication.analysis import videos as clips

    return ["## Rollout videos", "", clips.markdown(videos, base, made_by), ""]


# --------------------------------------------------------------------------------------------
# The report


def _by_stem(paths: Sequence[Path | str]) -> dict[str, dict[str, Path]]:
    out: dict[str, dict[str, Path]] = {}
    for p in map(Path, paths):
        out.setdefault(p.stem, {})[p.suffix.lstrip(".")] = p
    return dict(sorted(out.items()))


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def _md(frame: pd.DataFrame) -> str:
    return markdown_table(frame) if len(frame) else "(none)"


def _demote(markdown: str) -> str:
    """Embedded Markdown with its bold titles kept and any headings pushed below ours."""
    return re.sub(r"^(#+)", r"###\1", markdown.strip(), flags=re.M)


def evidence_warning(cfg: Mapping[str, Any], claims_path: Path | str | None = None) -> str:
    """One sentence for the top of the report when the run has fewer seeds than the scorecard needs."""
    from replication.analysis import scorecard

    claims = scorecard.load_claims(claims_path or scorecard.CLAIMS_FILE)
    need, have = int(claims.get("min_seeds", 2)), len(cfg.get("seeds", []))
    if have >= need:
        return ""
    return (
        f"**This run has {have} seed{'s' if have != 1 else ''}, fewer than the {need} the claims scorecard needs: "
        "its verdicts are not evidence for or against the study's claims (every test is inconclusive).**"
    )


MIXING_COLUMNS = ("cell", "seed", "rule", "first batch", "last batch", "all batches")


def batch_mixing(summaries: Sequence[Path | str]) -> pd.DataFrame:
    """The offline share of Cal-QL's fine-tuning batches, per job, from its ``finetune.json``.

    ``first batch`` and ``last batch``: the share the mixing rule gave the first and the last batch of
    fine-tuning (``proportional``: ``|D| / (|D| + n_online)``; 1 while the online buffer is empty);
    ``all batches``: the share of offline samples drawn over the whole run. Paths that do not exist
    (an unmatched glob) are skipped.
    """
    rows = []
    for path in map(Path, summaries):
        if not path.exists():
            continue
        summary = json.loads(path.read_text())
        mixing = summary.get("mixing")
        if summary.get("method") != "calql" or not mixing:
            continue
        first, last = mixing.get("first_batch") or {}, mixing.get("last_batch") or {}
        rows.append(
            {
                "cell": path.parts[-5] if len(path.parts) >= 5 else summary["env"],  # cells/<cell>/seed<k>/finetune/..
                "seed": summary["seed"],
                "rule": str(mixing["rule"]),
                "first batch": first.get("expected_offline_fraction"),
                "last batch": last.get("expected_offline_fraction"),
                "all batches": mixing["offline_fraction"],
            }
        )
    return pd.DataFrame(rows, columns=list(MIXING_COLUMNS)).sort_values(["cell", "seed"], ignore_index=True)


def mixing_section(summaries: Sequence[Path | str], cfg: Mapping[str, Any]) -> list[str]:
    """Report lines: how offline Cal-QL's fine-tuning batches were at the start and at the end."""
    table = batch_mixing(summaries)
    rule = cfg.get("finetune", {}).get("calql_mixing", "?")
    lines = [
        "## Cal-QL fine-tuning batches: offline share",
        "",
        f"finetune.calql_mixing = {rule} (0.5: the Cal-QL paper's and launch scripts' 50/50; proportional: the "
        "Cal-QL code's default, a sensitivity setting). Share of each batch taken from "
        "the offline dataset at the first and the last update of fine-tuning, and over all batches.",
        "",
    ]
    return lines + [_md(table.round(4)) if len(table) else "(no Cal-QL fine-tuning in this run)", ""]


def report_path(cfg: Mapping[str, Any], results_dir: Path | str = "results") -> Path:
    """Where a run's report goes: ``results/<name>/report.md``."""
    return Path(results_dir) / str(cfg.get("name", "run")) / "report.md"


def _header(cfg: Mapping[str, Any], scorecard: Path | str | None) -> list[str]:
    """Title, evidence warning, the run's grid and the claims scorecard."""
    budget = cfg.get("budget", {})
    warning = evidence_warning(cfg)
    return [
        f"# Replication report: {cfg.get('name', 'run')}",
        "",
        *([warning, ""] if warning else []),
        "Replication of *An Empirical Study on the Effectiveness of Incorporating Offline RL As Online RL "
        "Subroutines* (arXiv 2512.00383). Every number below comes from the workflow's tidy results.",
        "",
        f"- environments: {', '.join(cfg.get('envs', []))}",
        f"- seeds: {', '.join(map(str, cfg.get('seeds', [])))}",
        f"- total budget T: {budget.get('total_steps', '?')} env steps per environment; pause points "
        f"{budget.get('pause_fractions', '?')} x T; fine-tuning from {budget.get('finetune_pause', '?')} x T",
        _methods_line(cfg),
        "",
        "## Claims scorecard (S1)",
        "",
        _demote(Path(scorecard).read_text()) if scorecard else "(not built)",
        "",
        *planned_section(cfg),
    ]


def planned_section(cfg: Mapping[str, Any]) -> list[str]:
    """With config key ``claims``: what the run planned, and each table, figure or statistic it left out, with why."""
    if not cfg.get("claims"):
        return []
    from replication.plan.plan import Plan

    omitted = Plan.build(dict(cfg)).omitted
    return [
        "## What this run planned",
        "",
        f"Only the jobs that the tests of claims {', '.join(cfg['claims'])} read (config key `claims`); S1 marks "
        "the tests of the other claims `not planned`.",
        "",
        *[f"- {why}" for why in omitted.values()],
        "",
    ]


def finetune_methods_text(cfg: Mapping[str, Any]) -> str:
    """The run's fine-tuning methods in words: ``IQL, PEX, Cal-QL and WSRL fine-tuning``."""
    from replication.analysis.labels import finetune_name

    ft = cfg.get("finetune", {})
    methods = ft.get("methods", DEFAULT_FINETUNE_METHODS) or DEFAULT_FINETUNE_METHODS
    keep = bool((ft.get("wsrl") or {}).get("keep_offline_data", False))
    names = [finetune_name(m, keep).removesuffix(" FT") for m in methods]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} fine-tuning"


def _methods_line(cfg: Mapping[str, Any]) -> str:
    """The report header's line on the run's fine-tuning methods."""
    methods = cfg.get("finetune", {}).get("methods") or []
    if not methods:
        return "- fine-tuning: none (finetune.methods is empty)"
    beyond = " (WSRL is beyond the study: its claim C6 is not one of the paper's)" if "wsrl" in methods else ""
    return f"- fine-tuning: {finetune_methods_text(cfg)}, against SAC continuation{beyond}"


ONE_SEED_CAPTION = " 1 seed: no intervals (bands, error bars and intervals need at least two seeds)."


def figure_captions(cfg: Mapping[str, Any]) -> dict[str, str]:
    """:data:`FIGURE_CAPTIONS` with the run's fine-tuning methods named; a one-seed run's say it draws no
    intervals (:data:`ONE_SEED_CAPTION`)."""
    note = ONE_SEED_CAPTION if len(cfg.get("seeds", ())) == 1 else ""
    return {k: v.format(methods=finetune_methods_text(cfg)) + note for k, v in FIGURE_CAPTIONS.items()}


def figures_section(
    figures: Sequence[Path | str], base: Path, made_by: str = "", captions: Mapping[str, str] | None = None
) -> list[str]:
    """Each figure's PNG with its caption (stamped with ``made_by``) and links to its other formats."""
    captions = captions if captions is not None else figure_captions({})
    lines = ["## Figures", ""]
    for stem, files in _by_stem(figures).items():
        caption = captions.get(stem, "")
        lines.append(f"### {stem}. {FIGURE_TITLES[stem]}" if stem in FIGURE_TITLES else f"### {stem}")
        lines.append("")
        if "png" in files:
            lines.append(f"![{stem}]({_rel(files['png'], base)})")
            lines.append("")
        links = " · ".join(f"[{ext.upper()}]({_rel(p, base)})" for ext, p in sorted(files.items()) if ext != "png")
        lines.append(f"*{stem}. {caption}{made_by}*" + (f" ({links})" if links else ""))
        lines.append("")
    return lines + (["(not built)", ""] if not figures else [])


def tables_section(tables: Sequence[Path | str], base: Path) -> list[str]:
    """Each table's Markdown embedded, with links to its CSV and LaTeX files."""
    lines = ["## Tables", ""]
    for stem, files in _by_stem(tables).items():
        if "md" in files:
            lines += [_demote(files["md"].read_text()), ""]
        links = " · ".join(f"[{ext.upper()}]({_rel(p, base)})" for ext, p in sorted(files.items()) if ext != "md")
        if links:
            lines += [f"{stem} as {links}", ""]
    return lines + (["(not built)", ""] if not tables else [])


def choices_section(cfg: Mapping[str, Any], defaults_path: Path | str) -> list[str]:
    """The values this project chose where the study is silent."""
    return [
        "## Choices",
        "",
        "Values that the study does not fix and this project chose. They are settings: change them in the "
        "run's configuration file (keys below) or in the named file.",
        "",
        "### Configuration (keys marked (choice) in config/defaults.yaml)",
        "",
        _md(config_choices(cfg, defaults_path)),
        "",
        "### Environments, normalisation and claim tests",
        "",
        _md(other_choices(cfg)),
        "",
    ]


def costs_section(
    record: Mapping[str, Any] | None, benchmarks: Sequence[Path | str] | Mapping[str, Sequence[Path | str]]
) -> list[str]:
    """Package versions, the run's provenance and the measured cost per stage."""
    return [
        "## Software",
        "",
        _md(package_versions()),
        "",
        *provenance_section(record),
        "## Measured cost per stage",
        "",
        "From the Snakemake benchmark files of this run (wall-clock time, peak resident memory).",
        "",
        _md(benchmark_costs(benchmarks)),
        "",
    ]


def write_report(
    report_path: Path | str,
    cfg: Mapping[str, Any],
    *,
    tables: Sequence[Path | str] = (),
    figures: Sequence[Path | str] = (),
    statistics: Path | str | None = None,
    scorecard: Path | str | None = None,
    benchmarks: Sequence[Path | str] | Mapping[str, Sequence[Path | str]] = (),
    defaults_path: Path | str = DEFAULTS_FILE,
    finetune_summaries: Sequence[Path | str] = (),
    provenance: Path | str | None = None,
    videos: Path | str | None = None,
) -> Path:
    """Write the Markdown replication report to ``report_path``; links are relative to its folder.

    ``tables``: the files of :func:`replication.analysis.tables.build_tables` (each ``.md`` is embedded,
    ``.csv`` and ``.tex`` linked); ``figures``: the PNG/PDF files of
    :func:`replication.analysis.plotting.build_figures`; ``statistics``: ``aggregate.md`` of
    :func:`replication.analysis.statistics.build_statistics`; ``scorecard``: ``S1.md`` of
    :func:`replication.analysis.scorecard.build_scorecard`; ``benchmarks``: Snakemake benchmark TSV files
    (see :func:`benchmark_costs`); ``finetune_summaries``: fine-tuning jobs' ``finetune.json`` (see
    :func:`batch_mixing`); ``provenance``: the run's ``provenance.json`` (a section, and the
    commit and config hash in every figure caption); ``videos``: the folder of
    :func:`replication.analysis.videos.build_videos` (a section of rollout clips). Every named file must exist.
    """
    report_path = Path(report_path)
    base = report_path.parent
    named = [
        *map(Path, tables),
        *map(Path, figures),
        *(Path(p) for p in (statistics, scorecard, provenance, videos) if p),
    ]
    missing = [str(p) for p in named if not p.exists()]
    if missing:
        raise FileNotFoundError(f"the report needs files that do not exist: {', '.join(missing)}")
    record = prov.load(provenance) if provenance else None
    made_by = f" {prov.stamp(record)}" if record else ""
    lines = [
        *_header(cfg, scorecard),
        *figures_section(figures, base, made_by, figure_captions(cfg)),
        *videos_section(videos, base, made_by, enabled=bool(cfg.get("videos", {}).get("enabled"))),
        *tables_section(tables, base),
        "## Aggregate numbers (F5)",
        "",
        _demote(Path(statistics).read_text()) if statistics else "(not built)",
        "",
        *mixing_section(finetune_summaries, cfg),
        "",
        *choices_section(cfg, defaults_path),
        *costs_section(record, benchmarks),
    ]
    write_text(report_path, "\n".join(lines))
    return report_path
