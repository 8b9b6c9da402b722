"""The ``replication`` command line.

Every subcommand is one :class:`Command` in :data:`COMMANDS`: a help line, a function that adds
its arguments to its parser, and a function that runs it and returns the exit status. Add one
with the :func:`command` decorator::

    def _add_train_arguments(parser):
        parser.add_argument("env")

    @command("train", "train one online agent", _add_train_arguments)
    def _train(args):
        ...
        return 0

Imports of heavy modules belong inside the run functions, so that ``replication --help`` and
``replication envs`` stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from replication.plan.vocabulary import FIGURES, FINETUNE_METHODS, TABLES

if TYPE_CHECKING:
    from replication.analysis.calibration import Simulation
    from replication.plan.plan import Plan

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: its help line, its arguments and what it runs."""

    help: str
    add_arguments: AddArguments
    run: Run


COMMANDS: dict[str, Command] = {}


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A subcommand without arguments of its own."""


def command(name: str, help: str, add_arguments: AddArguments = _no_arguments) -> Callable[[Run], Run]:
    """Register the decorated function as subcommand ``name``."""

    def register(run: Run) -> Run:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = Command(help, add_arguments, run)
        return run

    return register


# --- replication envs -------------------------------------------------------------------------

ENV_COLUMNS = ("name", "implementation", "suite", "reward", "metric", "episode steps", "substitute")


def env_rows() -> list[tuple[str, ...]]:
    """One row of :data:`ENV_COLUMNS` per study environment, in the order of ``config/envs.yaml``."""
    from replication.envspecs import specs

    return [
        (
            spec.name,
            spec.id,
            spec.suite,
            spec.reward,
            spec.metric,
            str(spec.max_episode_steps),
            f"yes: {spec.substitute}" if spec.substitute else "no",
        )
        for spec in specs().values()
    ]


def format_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table with left-aligned columns, separated by two spaces."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def format_markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(row) for row in rows)])


FORMATS = {"text": format_text, "markdown": format_markdown}


def _add_envs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=sorted(FORMATS), default="text", help="plain aligned text (default) or a Markdown table"
    )


@command("envs", "list the study's twelve environments (config/envs.yaml)", _add_envs_arguments)
def _envs(args: argparse.Namespace) -> int:
    print(FORMATS[args.format](ENV_COLUMNS, env_rows()))
    return 0


# --- pipeline stages (each a thin call into the package; the Snakefile runs these) ---------------


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:  # d3rlpy logs every fit through structlog at info level
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    except ImportError:
        pass


def _cell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="resolved config file (results/<name>/config.yaml)")
    parser.add_argument("--env", required=True, help="environment, or an analysis cell: kitchen+reward=binary")
    parser.add_argument("--seed", required=True, type=int)


def _cell(args: argparse.Namespace) -> tuple[str, dict, str]:
    """``(env, config, variant_options)`` of the job's cell."""
    from replication.plan import config
    from replication.plan.workflow import cell_config

    return cell_config(config.load(args.config), args.env)


def _add_online_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory of the online run")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")


@command("online", "train online SAC for one cell, keeping every pause point's data", _add_online_arguments)
def _online(args: argparse.Namespace) -> int:
    from replication.agents.online import run_online

    _setup_logging()
    env, cfg, options = _cell(args)
    summary = run_online(cfg, env, args.seed, args.out, progress=args.progress, options=options)
    print(f"online {args.env} seed {args.seed}: {summary['timings']['train_steps_per_second']:.0f} env steps/s")
    return 0


def _add_control_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--online", required=True, help="the cell's finished online run directory (writes into it)")


@command("control", "write C1's control (online SAC's validated best snapshots) of a finished online run",
         _add_control_arguments)  # fmt: skip
def _control(args: argparse.Namespace) -> int:
    from replication.agents.online import run_control

    env, cfg, options = _cell(args)
    summary = run_control(cfg, env, args.seed, args.online, progress=False, options=options)
    print(f"control {args.env} seed {args.seed}: {summary['rows']} rows at pauses {summary['pauses']}")
    return 0


def _add_newdata_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--online", required=True, help="the cell's online run directory")
    parser.add_argument("--dataset", required=True, help="dataset key, e.g. newdata-best or newdata-eps0.1-last")
    parser.add_argument("--out", required=True, help="dataset file to write (.h5)")


@command("newdata", "collect a newdata dataset with the cell's online policy", _add_newdata_arguments)
def _newdata(args: argparse.Namespace) -> int:
    from replication.agents.datasets import build_newdata
    from replication.plan.workflow import parse_dataset_key

    _setup_logging()
    env, cfg, _ = _cell(args)
    dataset = parse_dataset_key(cfg, args.dataset)
    if not dataset.is_newdata:
        raise ValueError(f"{args.dataset} is not a newdata dataset")
    meta = build_newdata(cfg, env, args.seed, args.online, dataset.collector, dataset.epsilon, args.out)
    print(f"newdata {args.env} seed {args.seed}: {meta['transitions']} transitions, {meta['episodes']} episodes")
    return 0


def _add_offline_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--algo", required=True, help="offline learners, comma-separated: iql,cql,calql")
    parser.add_argument("--dataset", required=True, help="dataset key, e.g. buffer-p200000 or newdata-best")
    parser.add_argument("--data", required=True, help="the dataset file")
    parser.add_argument("--online", required=True, help="the cell's online run directory")
    parser.add_argument("--out", required=True, help="output directory (one subdirectory per learner)")


@command("offline", "train offline learners on one dataset, validate, recommend", _add_offline_arguments)
def _offline(args: argparse.Namespace) -> int:
    from replication.agents.offline import run_offline_job

    _setup_logging()
    env, cfg, options = _cell(args)
    algos = [a for a in args.algo.split(",") if a]
    run_offline_job(cfg, env, args.seed, algos, args.dataset, args.data, args.online, args.out, options)
    return 0


def _add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--method", required=True, choices=tuple(FINETUNE_METHODS))
    parser.add_argument("--offline", required=True, help="offline run directory of the method's source algorithm")
    parser.add_argument("--data", required=True, help="the dataset file that offline agent was trained on")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--extended-steps", type=int, default=0, help="analysis C4: env steps beyond the budget (outside the ledger)"
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")


@command("finetune", "fine-tune the offline agent online for the cell's remaining budget", _add_finetune_arguments)
def _finetune(args: argparse.Namespace) -> int:
    from replication.agents.finetune import run_finetune

    _setup_logging()
    env, cfg, options = _cell(args)
    job = (cfg, env, args.seed, args.method, args.offline, args.data, args.out, args.extended_steps)
    summary = run_finetune(*job, progress=args.progress, options=options)
    timings = summary["timings"]
    print(
        f"finetune {args.method} {args.env} seed {args.seed}: {summary['env_steps']} env steps"
        f" (+{args.extended_steps} beyond the budget), {timings['env_steps_per_second']:.0f} env steps/s,"
        f" {timings['updates_per_second']:.0f} updates/s"
    )
    return 0


def _add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    parser.add_argument("inputs", nargs="+", help="tidy CSV files of the cells")


@command("collect", "concatenate the cells' tidy results into one table", _add_collect_arguments)
def _collect(args: argparse.Namespace) -> int:
    from replication import tidy

    df = tidy.read(args.inputs)
    tidy.write(df, args.out)
    print(f"collect: {len(df)} rows from {len(args.inputs)} files")
    return 0


def _add_keep_shard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a finished run's directory, e.g. results/mini (a part of the seeds)")
    parser.add_argument("--out", required=True, help="where the shard's kept files go (a few MB)")


@command(
    "keep-shard",
    "keep what a finished run over a part of the seeds needs for assembly: config, tidy results, job summaries",
    _add_keep_shard_arguments,
)
def _keep_shard(args: argparse.Namespace) -> int:
    from replication.analysis.assemble import keep

    files = keep(args.run, args.out)
    print(f"keep-shard: {len(files)} files of {args.run} kept in {args.out}")
    return 0


def _add_assemble_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", help="kept shards (replication keep-shard) of one config, disjoint seeds")
    parser.add_argument("--results", default="results", help="results root; the study goes to <results>/<name>/")
    parser.add_argument(
        "--configfile",
        help="the study's config: shards may then differ from it in name, envs, seeds and claims (cells of "
        "another run of the same settings); its cells and its jobs' rows are kept",
    )


@command(
    "assemble",
    "one study from shards over disjoint cells: their cells under results/<name>/, tables to report rebuilt",
    _add_assemble_arguments,
)
def _assemble(args: argparse.Namespace) -> int:
    from replication.analysis.assemble import assemble
    from replication.plan import config

    _setup_logging()
    out = assemble(args.shards, args.results, study=config.load(args.configfile) if args.configfile else None)
    print(f"assemble: {len(args.shards)} shards assembled in {out}")
    return 0


# --- analysis and run records (each a call into one module; the Snakefile runs these) -----------

LEARNERS = ("sac", "iql", "cql", "calql", "pex")  # replication.gpucheck.LEARNERS


def _add_results_arguments(parser: argparse.ArgumentParser) -> None:
    """The tidy results in, the output directory and the run's configuration."""
    parser.add_argument("--results", nargs="+", required=True, help="tidy results CSV files")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--config", help="run configuration file (default: the paper profile)")


def _add_tables_arguments(parser: argparse.ArgumentParser) -> None:
    _add_results_arguments(parser)
    parser.add_argument("--metric", default="score", help="score (default) or normalized_score")
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))


@command("tables", "tables T1-T3 and L1 (CSV, Markdown, LaTeX) from tidy results", _add_tables_arguments)
def _tables(args: argparse.Namespace) -> int:
    from replication.analysis.tables import build_tables
    from replication.plan import config

    _setup_logging()
    build_tables(args.results, args.out, config.load(args.config), metric=args.metric, tables=args.tables)
    return 0


def _add_statistics_arguments(parser: argparse.ArgumentParser) -> None:
    _add_results_arguments(parser)
    parser.add_argument("--pause", type=int, help="pause point (env steps) of the recommendation group")
    parser.add_argument("--reps", type=int, help="bootstrap replications (default: config statistics.bootstrap_reps)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


@command(
    "statistics",
    "IQM with stratified-bootstrap CIs and probability of improvement",
    _add_statistics_arguments,
)
def _statistics(args: argparse.Namespace) -> int:
    from replication.analysis.statistics import build_statistics
    from replication.plan import config

    _setup_logging()
    cfg = config.load(args.config)
    build_statistics(args.results, args.out, cfg, pause=args.pause, reps=args.reps, seed=args.seed)
    return 0


def _add_figures_arguments(parser: argparse.ArgumentParser) -> None:
    _add_results_arguments(parser)
    parser.add_argument("--figures", nargs="+", choices=FIGURES, help="default: every figure the config makes")
    parser.add_argument("--statistics", help="aggregate.csv of replication.analysis.statistics (for F5)")
    parser.add_argument("--reps", type=int, help="bootstrap replications for F5 (default: from the config)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (F5)")


@command("figures", "figures F1-F6 (PNG, PDF) from tidy results", _add_figures_arguments)
def _figures(args: argparse.Namespace) -> int:
    from replication.analysis.plotting import build_figures
    from replication.plan import config

    _setup_logging()
    cfg = config.load(args.config)
    build_figures(
        args.results,
        args.out,
        cfg,
        figures=args.figures,
        statistics_csv=args.statistics,
        reps=args.reps,
        seed=args.seed,
    )
    return 0


def _add_scorecard_arguments(parser: argparse.ArgumentParser) -> None:
    _add_results_arguments(parser)
    parser.add_argument("--claims", help="claims file (default: paper/claims.yaml)")
    parser.add_argument("--reps", type=int, help="bootstrap replications (default: config statistics.bootstrap_reps)")
    parser.add_argument("--seed", type=int, help="bootstrap seed (default: from the claims file)")


@command("scorecard", "the claims scorecard S1 from tidy results and paper/claims.yaml", _add_scorecard_arguments)
def _scorecard(args: argparse.Namespace) -> int:
    from replication.analysis.scorecard import CLAIMS_FILE, build_scorecard
    from replication.plan import config

    _setup_logging()
    cfg = config.load(args.config)
    claims = args.claims or CLAIMS_FILE
    build_scorecard(args.results, args.out, cfg, claims_path=claims, reps=args.reps, seed=args.seed)
    return 0


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="report path, e.g. results/NAME/report.md")
    parser.add_argument("--config", help="run configuration file (default: the paper profile)")
    parser.add_argument("--tables", nargs="*", default=[], help="table files (md, csv, tex)")
    parser.add_argument("--figures", nargs="*", default=[], help="figure files (png, pdf)")
    parser.add_argument("--statistics", help="aggregate.md of replication.analysis.statistics")
    parser.add_argument("--scorecard", help="S1.md of replication.analysis.scorecard")
    parser.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark TSV files")
    parser.add_argument("--finetune-summaries", nargs="*", default=[], help="fine-tuning jobs' finetune.json")
    parser.add_argument("--provenance", help="the run's provenance.json")
    parser.add_argument(
        "--videos", nargs="*", default=[], help="the run's videos folder (replication videos); none: no section"
    )


@command("report", "the Markdown replication report", _add_report_arguments)
def _report(args: argparse.Namespace) -> int:
    from replication.analysis.report import write_report
    from replication.plan import config

    _setup_logging()
    if len(args.videos) > 1:
        raise ValueError(f"--videos takes one folder, got {len(args.videos)}")
    write_report(
        args.out,
        config.load(args.config),
        tables=args.tables,
        figures=args.figures,
        statistics=args.statistics,
        scorecard=args.scorecard,
        benchmarks=args.benchmarks,
        finetune_summaries=args.finetune_summaries,
        provenance=args.provenance,
        videos=args.videos[0] if args.videos else None,
    )
    return 0


def _add_provenance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the run's resolved config (results/<name>/config.yaml)")
    parser.add_argument("--out", required=True, help="provenance.json to write")
    parser.add_argument(
        "--caption",
        nargs=2,
        action="append",
        default=[],
        metavar=("SOURCE", "OUT"),
        help="also write caption OUT: the reStructuredText SOURCE with the run's commit and config appended",
    )


@command(
    "provenance",
    "write a run's provenance.json: commit, config hash, versions, machine, times",
    _add_provenance_arguments,
)
def _provenance(args: argparse.Namespace) -> int:
    from replication.plan import provenance

    _setup_logging()
    record = provenance.write(args.config, args.out, args.caption)
    print(f"provenance: {args.out}: {provenance.stamp(record)}")
    return 0


def _add_export_minari_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a dataset file of a run (e.g. .../online/pause_320/dataset_buffer.h5)")
    parser.add_argument("--out", required=True, help="Minari datasets root to write into (MINARI_DATASETS_PATH)")
    parser.add_argument("--dataset-id", help="Minari dataset id (default: replication/<env>-seed<k>-<file>-v0)")


@command(
    "export-minari",
    "write a dataset of a run in Minari's format (D4RL's successor)",
    _add_export_minari_arguments,
)
def _export_minari(args: argparse.Namespace) -> int:
    from pathlib import Path

    from replication.agents.minari_export import export_minari

    _setup_logging()
    data = export_minari(args.dataset, args.out, args.dataset_id)
    dataset_id = data.parent.relative_to(Path(args.out)).as_posix()
    print(f"export-minari: {data}")
    print(
        f"  load with: MINARI_DATASETS_PATH={args.out} python -c \"import minari; minari.load_dataset('{dataset_id}')\""
    )
    return 0


def _add_videos_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the run's resolved config (results/<name>/config.yaml)")
    parser.add_argument("--tidy", required=True, help="the run's tidy.csv (picks the policies)")
    parser.add_argument("--out", required=True, help="output folder (results/<name>/videos)")


@command("videos", "render the run's rollout clips (GIF, MP4) of every environment", _add_videos_arguments)
def _videos(args: argparse.Namespace) -> int:
    from replication.analysis import videos

    _setup_logging()
    status = videos.render(args.config, args.tidy, args.out)
    print("\n".join(videos.summary(status)))
    return 0


def _add_reference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check", "refresh"])
    parser.add_argument("--config", help="the run's config: results/<name>/ against results/reference/<name>/")
    parser.add_argument("--run", help="the run's results directory (default: from --config)")
    parser.add_argument("--reference", help="the reference directory (default: results/reference/<name>)")
    parser.add_argument("--diff", help="where a mismatch report goes (default: <run>/reference-diff)")
    parser.add_argument(
        "--files",
        nargs="+",
        help="check: compare these files (glob patterns under both directories) instead of the tables and "
        "figures, e.g. 'cells/hopper/seed0/**/*.csv' for one cell's tidy results",
    )
    parser.add_argument(
        "--documents",
        action="store_true",
        help="refresh: also the report, tidy.csv and the tables' and figures' other formats (a study's "
        "committed results; check compares the tables and figures only)",
    )


@command(
    "reference",
    "check a run's tables and figures against results/reference/, or refresh them",
    _add_reference_arguments,
)
def _reference(args: argparse.Namespace) -> int:
    from pathlib import Path

    from replication.analysis import reference

    _setup_logging()
    run_dir, reference_dir = reference.directories(args.config, args.run, args.reference)
    if args.action == "refresh":
        files = reference.refresh(run_dir, reference_dir, documents=args.documents)
        print(f"reference: {len(files)} files from {run_dir} written to {reference_dir}")
        return 0
    diff_dir = Path(args.diff) if args.diff else run_dir / "reference-diff"
    report = reference.check(run_dir, reference_dir, diff_dir, tuple(args.files or reference.PATTERNS))
    if report.ok:
        print(f"reference: all {len(report.compared)} files of {run_dir} match {reference_dir}")
        return 0
    print(f"reference: {len(report.mismatches)} of {len(report.compared)} files differ from {reference_dir}:")
    for m in report.mismatches:
        print(f"  {m.path}: {m.summary}")
    print(f"open {diff_dir / 'index.html'} for the side-by-side diff")
    return 1


def _add_gpu_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (a smoke test of the check)")
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--steps", type=int, default=1000, help="timed gradient steps per learner on --device")
    parser.add_argument("--cpu-steps", type=int, default=100, help="timed gradient steps per learner on the CPU")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first (CUDA-graph capture)")
    parser.add_argument("--check-steps", type=int, default=20, help="updates before the trained agreement check")
    parser.add_argument("--dataset-size", type=int, default=5000, help="transitions of the random Hopper dataset")
    parser.add_argument("--learners", default=",".join(LEARNERS), help=f"comma-separated subset of {LEARNERS}")
    parser.add_argument("--out", default="results/gpu-check/gpu-check.json", help="JSON of the table")


@command(
    "gpu-check",
    "speed and CPU agreement of every learner on a GPU (scripts/gpu-check.sh); exit 1 when one disagrees",
    _add_gpu_check_arguments,
)
def _gpu_check(args: argparse.Namespace) -> int:
    from replication import gpucheck

    agree = gpucheck.run(
        device=args.device,
        env=args.env,
        steps=args.steps,
        cpu_steps=args.cpu_steps,
        warmup=args.warmup,
        check_steps=args.check_steps,
        dataset_size=args.dataset_size,
        learners=args.learners,
        out=args.out,
    )
    return 0 if agree else 1


def _add_configfile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configfile",
        nargs="+",
        default=["config/config.yaml"],
        help="run config (default: config/config.yaml); several files merge in order, as Snakemake's",
    )


def _add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides on top of the config file, as Snakemake's --config: claims='[C3]' "
        "videos='{\"enabled\": true}' (values are YAML; here a dotted key nests too: videos.enabled=true)",
    )


def _add_check_config_arguments(parser: argparse.ArgumentParser) -> None:
    _add_configfile_arguments(parser)
    _add_overrides_argument(parser)


@command("check-config", "validate a run config and print its grid", _add_check_config_arguments)
def _check_config(args: argparse.Namespace) -> int:
    from replication.plan import config, workflow
    from replication.plan.plan import Plan

    cfg = config.load(args.configfile, config.parse_overrides(args.config))
    plan = Plan.build(cfg)  # the checks of planning every job (analysis C4's extension), as the workflow does
    print(f"{' '.join(args.configfile)}: valid; results under {workflow.results_dir(cfg)}/")
    print(format_grid(cfg, plan))
    return 0


def format_grid(cfg: dict, plan: Plan | None = None) -> str:
    """The grid a config runs (its ``plan``, built here if not given): its cells, and per stage its jobs
    (as ``replication estimate``) and variants."""
    from replication.plan import claims
    from replication.plan.estimate import grid_size
    from replication.plan.plan import Plan

    plan = Plan.build(cfg) if plan is None else plan
    planned = plan.grid()
    cells = list(dict.fromkeys((job.env, job.seed) for job in planned if job.rule == "online"))
    extra = sorted({env for env, _ in cells} - set(cfg["envs"]))
    lines = [
        f"cells: {len(cells)} ({grid_size(cfg)}"
        + (f", and the analysis cells {', '.join(extra)}" if extra else "")
        + ")",
        f"  environments: {', '.join(cfg['envs'])}",
        f"  seeds: {', '.join(str(s) for s in cfg['seeds'])}",
    ]
    if (selected := claims.selected(cfg)) is not None:
        lines.append(f"  claims: {', '.join(selected)} (only the jobs their tests read)")
    counts = plan.stage_counts()
    rows = [(rule, str(j), str(v)) for rule, (j, v) in counts.items()]
    rows.append(("total", str(sum(j for j, _ in counts.values())), str(sum(v for _, v in counts.values()))))
    lines += format_text(("stage", "jobs", "variants"), rows).splitlines()
    lines.append("jobs: processes Snakemake runs (as `replication estimate` counts them); variants: units of work")
    return "\n".join(lines)


def _add_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_configfile_arguments(parser)
    parser.add_argument("--cores", type=int, default=1, help="cores (or GPUs) running jobs in parallel")
    _add_overrides_argument(parser)


@command("estimate", "print what a config will cost: jobs, env steps, gradient steps, hours", _add_estimate_arguments)
def _estimate(args: argparse.Namespace) -> int:
    from replication.plan import config
    from replication.plan.estimate import load_and_format

    print(load_and_format(args.configfile, args.cores, config.parse_overrides(args.config)))
    return 0


# --- replication calibrate --------------------------------------------------------------------


def _add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--design",
        choices=("fixed", "sequential"),
        default="fixed",
        help="fixed (default): the verdicts at --seeds; sequential: the design of --initial, "
        "--step, --max against the fixed design at its looks (every scenario by default)",
    )
    parser.add_argument("--initial", type=int, default=3, help="sequential: seeds of the first look (default 3)")
    parser.add_argument("--step", type=int, default=2, help="sequential: seeds added per stage (default 2)")
    parser.add_argument("--max", type=int, default=9, help="sequential: seeds of the last look (default 9)")
    parser.add_argument("--weights", type=float, nargs="+",
                        help="sequential: each look's share of the error, in proportion (default: equal)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1,
                        help="sequential: each scenario's simulations split into this many chunks (chunk i "
                             "seeded seed + 1000 i), run by as many processes at a time (default 1)")  # fmt: skip
    parser.add_argument("--scenario", choices=("null", "effect", "contrary"), nargs="+",
                        help="null: no claimed effect anywhere; effect: every claim's effect planted; contrary: "
                             "each count claim false the other way (effects everywhere, not in a few)")  # fmt: skip
    parser.add_argument("--noise", choices=("gaussian", "rl"), default="gaussian",
                        help="gaussian (default): normal noise; rl: per-env scales, heavy tails, collapsing "
                             "seeds, zero-inflated success rates, autocorrelated curves, drawdowns")  # fmt: skip
    parser.add_argument(
        "--drawdown",
        type=float,
        help="online SAC's fall below its best snapshot on the sparse tasks (default: 0; rl: 0.3)",
    )
    parser.add_argument("--sims", type=int, default=200, help="simulated studies (default 200)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per environment (default 5)")
    parser.add_argument("--envs", nargs="+", help="environments (default: the paper profile's twelve)")
    parser.add_argument("--sigma", type=float, default=0.1, help="noise sd, normalised units (default 0.1)")
    parser.add_argument("--reps", type=int, default=1000, help="bootstrap replications of C2.1 (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulations (default 0)")
    parser.add_argument("--min-seeds", type=int,
                        help="override the claims file's min_seeds (default: keep it); sequential: the design's "
                             "min_seeds, the minimum at its looks")  # fmt: skip
    parser.add_argument("--format", choices=("json", "markdown"), default="markdown")


@command(
    "calibrate",
    "share of each scorecard verdict on simulated results without (null) or with (effect) the claimed effects",
    _add_calibrate_arguments,
)
def _calibrate(args: argparse.Namespace) -> int:
    from replication.analysis import calibration

    if args.design == "sequential":
        return _calibrate_sequential(args)
    if not args.scenario or len(args.scenario) != 1:
        raise SystemExit("replication calibrate: the fixed design takes one --scenario")
    result = calibration.calibrate(args.scenario[0], args.sims, args.seeds, _simulation(args, args.min_seeds))
    text = calibration.to_json(result) if args.format == "json" else calibration.to_markdown(result)
    print(text.rstrip("\n"))
    return 0


def _simulation(args: argparse.Namespace, min_seeds: int | None) -> Simulation:
    """The simulated studies' settings (``calibration.Simulation``) from the command line."""
    from replication.analysis import calibration

    envs = tuple(args.envs) if args.envs else None
    return calibration.Simulation(envs, args.sigma, args.noise, args.drawdown, args.reps, min_seeds, args.seed)


def _sequential_chunk(scenario: str, sims: int, seed: int, design: Any, sim: Simulation) -> dict:
    from replication.analysis import calibration

    return calibration.calibrate_sequential(scenario, sims, design, dataclasses.replace(sim, seed=seed))


def _calibrate_sequential(args: argparse.Namespace) -> int:
    import functools
    import json
    from concurrent.futures import ProcessPoolExecutor

    from replication.analysis import calibration
    from replication.plan import claims, sequential

    weights = tuple(args.weights) if args.weights else None
    design = sequential.Design(args.initial, args.step, args.max, args.min_seeds, weights)
    if problem := sequential.check(design.as_dict(), claims.min_seeds()):
        raise SystemExit(f"replication calibrate: {problem}")
    # the design's min_seeds (else the claims file's) decides; chunks differ in their seed
    run = functools.partial(_sequential_chunk, design=design, sim=_simulation(args, None))
    scenarios = args.scenario or list(calibration.SCENARIOS)
    jobs = max(1, min(args.jobs, args.sims))
    sizes = [args.sims // jobs + (i < args.sims % jobs) for i in range(jobs)]
    tasks = [(s, n, args.seed + 1000 * i) for s in scenarios for i, n in enumerate(sizes)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:  # at most --jobs processes at a time
        parts = list(pool.map(run, *zip(*tasks, strict=True)))
    results = [calibration.merge_sequential(parts[i * jobs : (i + 1) * jobs]) for i in range(len(scenarios))]
    if args.format == "json" or len(scenarios) < len(calibration.SCENARIOS):
        print(json.dumps(results, indent=2))
    else:
        print(calibration.sequential_markdown(results).rstrip("\n"))
    return 0


def _add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decide", action="store_true", help="only record the finished stage's decisions and plan the next"
    )
    parser.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="Snakemake's arguments, --configfile included")


@command("study", "run a config to its end: Snakemake per stage of a sequential design (seeds: {initial, ...})",
         _add_study_arguments)  # fmt: skip
def _study(args: argparse.Namespace) -> int:
    from replication.study import study

    _setup_logging()
    rest = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    return study(rest, decide_only=args.decide)


# --- replication batch ------------------------------------------------------------------------


def _add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    from replication.plan.workflow import BATCHED_RULES, CELL_RULE

    parser.add_argument("commands", nargs="*", help='whole command lines, each quoted: "offline --env ..."')
    parser.add_argument(
        "--cell",
        choices=(*BATCHED_RULES, CELL_RULE),
        help="instead of commands: those the run's plan (--config) gives a batch job of the cell (--env, --seed): "
        "its variants of this rule, or (cell) the whole cell",
    )
    parser.add_argument("--config", help="with --cell: the run's resolved config (results/<name>/config.yaml)")
    parser.add_argument("--env", help="with --cell: the cell's environment")
    parser.add_argument("--seed", type=int, help="with --cell: the cell's seed")
    parser.add_argument("--print", action="store_true", help="print the command lines, run nothing")


def _batch_commands(args: argparse.Namespace) -> list[str]:
    """The command lines given, or (``--cell``) those of the batch job in the run's plan."""
    if args.cell is None:
        if not args.commands:
            raise ValueError("give command lines, or --cell with --config, --env and --seed")
        return list(args.commands)
    if args.commands or None in (args.config, args.env, args.seed):
        raise ValueError("--cell takes --config, --env and --seed, and no command lines")
    from replication.plan import config
    from replication.plan.plan import Plan

    plan = Plan.build(config.load(args.config))
    return [job.command_line() for job in plan.batch_jobs(args.cell, args.env, args.seed)]


@command("batch", "run several training commands one after the other in one process", _add_batch_arguments)
def _batch(args: argparse.Namespace) -> int:
    """The start-up (interpreter, imports, environments) is paid once; each command runs as it
    would on its own (every job seeds everything it uses), so the results are the same. Stops at
    the first command that fails. With ``--cell`` the commands come from the run's plan when the job
    runs, so that a Snakemake rule need not hold them (see rules/batch.smk)."""
    import shlex
    import time

    commands = _batch_commands(args)
    if args.print:
        print("\n".join(commands))
        return 0
    for i, line in enumerate(commands, 1):
        argv = shlex.split(line)
        if not argv or argv[0] not in BATCH_COMMANDS:
            raise ValueError(f"batch command {i} is not one of {', '.join(BATCH_COMMANDS)}: {line!r}")
        start = time.perf_counter()
        status = main(argv)
        print(f"batch {i}/{len(commands)}: {argv[0]} done in {time.perf_counter() - start:.1f} s (status {status})")
        if status:
            return status
    return 0


# --- entry point -------------------------------------------------------------------------------


TRAINING_COMMANDS = ("online", "newdata", "offline", "finetune")  # the per-cell jobs, which use d3rlpy
BATCH_COMMANDS = (*TRAINING_COMMANDS, "control")  # what `replication batch` runs (batch_jobs)


def build_parser() -> argparse.ArgumentParser:
    from replication.runinfo import package_version

    parser = argparse.ArgumentParser(
        prog="replication",
        description="Replication package: offline RL as subroutines of online RL.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        sub = subparsers.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(sub)
        sub.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["study"] and not {"-h", "--help"} & set(argv):  # Snakemake's arguments pass through as they are
        argv = ["study", *(a for a in argv[1:] if a == "--decide"), "--", *(a for a in argv[1:] if a != "--decide")]
    args = build_parser().parse_args(argv)
    if args.command in (*TRAINING_COMMANDS, "batch", "export-minari"):
        from replication.imports import import_d3rlpy

        import_d3rlpy()  # before anything else imports it: skips scikit-learn (see replication.imports)
    try:
        if args.command in TRAINING_COMMANDS:  # one live instance per job (replication.plan.runlock.job_lock)
            from replication.plan.runlock import job_lock

            with job_lock(args.out):
                return int(args._run(args) or 0)
        return int(args._run(args) or 0)
    except ValueError as error:  # the package's own errors (config, dataset, budget) are ValueErrors
        if args.debug:
            raise
        print(f"replication {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
