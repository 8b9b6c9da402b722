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
    from replication.agents.envs import specs

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


def _load_config(path: str) -> dict:
    from replication.plan import config

    return config.resolve(config.read_yaml(path))


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
    from replication.plan.workflow import cell_config

    return cell_config(_load_config(args.config), args.env)


def _tag(out: str, options: str) -> None:
    """Mark the tidy results an analysis cell wrote with its options."""
    from pathlib import Path

    from replication.analysis import tidy

    for name in ("curve.csv", "recommend.csv"):
        path = Path(out) / name
        if options and path.exists():
            tidy.tag_options(path, options)


def _add_online_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory of the online run")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")


@command("online", "train online SAC for one cell, keeping every pause point's data", _add_online_arguments)
def _online(args: argparse.Namespace) -> int:
    from replication.agents.online import run_online

    _setup_logging()
    env, cfg, options = _cell(args)
    summary = run_online(cfg, env, args.seed, args.out, progress=args.progress)
    _tag(args.out, options)
    print(f"online {args.env} seed {args.seed}: {summary['timings']['train_steps_per_second']:.0f} env steps/s")
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
    from pathlib import Path

    from replication.agents.offline import finished_learner, job_key, run_offline
    from replication.analysis import tidy
    from replication.io import write_json
    from replication.plan.workflow import parse_dataset_key

    _setup_logging()
    env, cfg, options = _cell(args)
    dataset = parse_dataset_key(cfg, args.dataset)
    algos = [a for a in args.algo.split(",") if a]
    unknown = sorted(set(algos) - {"iql", "cql", "calql"})
    if unknown or not algos:
        raise ValueError(f"--algo: unknown offline learner(s) {unknown}; valid: iql, cql, calql")
    out = Path(args.out)
    summaries = {}
    for algo in algos:  # a restarted job keeps the learners it had finished
        finished = finished_learner(out / algo, job_key(cfg, env, args.seed, algo, args.data, dataset))
        if finished is None:
            finished = run_offline(cfg, env, args.seed, algo, args.data, args.online, dataset, out / algo)
        summaries[algo] = finished
        _tag(str(out / algo), options)
    tidy.write(tidy.read([out / a / "recommend.csv" for a in algos]), out / "recommend.csv")
    write_json(out / "offline.json", {"algos": algos, "dataset": args.dataset, "summaries": summaries})
    return 0


def _add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--method", required=True, choices=("iql", "pex", "calql"))
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
    summary = run_finetune(
        cfg, env, args.seed, args.method, args.offline, args.data, args.out, args.extended_steps, progress=args.progress
    )
    _tag(args.out, options)
    timings = summary["timings"]
    print(
        f"finetune {args.method} {args.env} seed {args.seed}: {summary['env_steps']} env steps"
        f" (+{args.extended_steps} beyond the budget), {timings['env_steps_per_second']:.0f} env steps/s,"
        f" {timings['updates_per_second']:.0f} updates/s"
    )
    return 0


def _add_aggregate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    parser.add_argument("inputs", nargs="+", help="tidy CSV files of the cells")


@command("collect", "concatenate the cells' tidy results into one table", _add_aggregate_arguments)
def _collect(args: argparse.Namespace) -> int:
    from replication.analysis import tidy

    df = tidy.read(args.inputs)
    tidy.write(df, args.out)
    print(f"collect: {len(df)} rows from {len(args.inputs)} files")
    return 0


PASSTHROUGH: dict[str, str] = {}  # subcommand -> module whose main(argv) takes all its arguments


def _passthrough(name: str, module: str, help: str) -> None:
    """A subcommand that hands its arguments, untouched, to ``replication.<module>.main``."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        _setup_logging()
        return int(importlib.import_module(f"replication.{module}").main(args.args) or 0)

    PASSTHROUGH[name] = module
    command(name, help + " (options: replication " + name + " --help)", _add_passthrough_arguments)(run)


def _add_passthrough_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)


_passthrough("tables", "analysis.aggregate", "tables T1-T3 (CSV, Markdown, LaTeX) from tidy results")
_passthrough("statistics", "analysis.statistics", "IQM with stratified-bootstrap CIs and probability of improvement")
_passthrough("figures", "analysis.plotting", "figures F1-F6 (PNG, PDF) from tidy results")
_passthrough("scorecard", "analysis.scorecard", "the claims scorecard S1 from tidy results and paper/claims.yaml")
_passthrough("report", "analysis.report", "the Markdown replication report")
_passthrough("provenance", "provenance", "write a run's provenance.json: commit, config hash, versions, machine, times")
_passthrough("export-minari", "agents.minari_export", "write a dataset of a run in Minari's format (D4RL's successor)")
_passthrough("videos", "analysis.videos", "render the run's rollout clips (GIF, MP4) of every environment")
_passthrough(
    "reference", "analysis.reference", "check a run's tables and figures against results/reference/, or refresh them"
)


def _add_configfile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", default="config/config.yaml", help="run config (default: config/config.yaml)")


@command("check-config", "validate a run config and print its grid", _add_configfile_arguments)
def _check_config(args: argparse.Namespace) -> int:
    from replication.plan import config, workflow

    cfg = config.load(args.configfile)
    counts = workflow.counts(cfg)
    print(f"{args.configfile}: valid; results under {workflow.results_dir(cfg)}/")
    print(", ".join(f"{n} {rule} jobs" for rule, n in counts.items()))
    return 0


def _add_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_configfile_arguments(parser)
    parser.add_argument("--cores", type=int, default=1, help="cores (or GPUs) running jobs in parallel")


@command("estimate", "print what a config will cost: jobs, env steps, gradient steps, hours", _add_estimate_arguments)
def _estimate(args: argparse.Namespace) -> int:
    from replication.plan.estimate import load_and_format

    print(load_and_format(args.configfile, args.cores))
    return 0


# --- replication calibrate --------------------------------------------------------------------


def _add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", choices=("null", "effect"), required=True,
                        help="null: no claimed effect anywhere; effect: every claim's effect planted")  # fmt: skip
    parser.add_argument("--sims", type=int, default=200, help="simulated studies (default 200)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per environment (default 5)")
    parser.add_argument("--envs", nargs="+", help="environments (default: the paper profile's twelve)")
    parser.add_argument("--sigma", type=float, default=0.1, help="noise sd, normalised units (default 0.1)")
    parser.add_argument("--reps", type=int, default=1000, help="bootstrap replications of C2.1 (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulations (default 0)")
    parser.add_argument("--min-seeds", type=int, help="override the claims file's min_seeds (default: keep it)")
    parser.add_argument("--format", choices=("json", "markdown"), default="markdown")


@command(
    "calibrate",
    "share of each scorecard verdict on simulated results without (null) or with (effect) the claimed effects",
    _add_calibrate_arguments,
)
def _calibrate(args: argparse.Namespace) -> int:
    from replication.analysis import calibration

    result = calibration.calibrate(
        args.scenario,
        args.sims,
        args.seeds,
        args.envs,
        args.sigma,
        seed=args.seed,
        reps=args.reps,
        min_seeds=args.min_seeds,
    )
    text = calibration.to_json(result) if args.format == "json" else calibration.to_markdown(result)
    print(text.rstrip("\n"))
    return 0


# --- replication batch ------------------------------------------------------------------------


def _add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("commands", nargs="+", help='whole command lines, each quoted: "offline --env ..."')


@command("batch", "run several training commands one after the other in one process", _add_batch_arguments)
def _batch(args: argparse.Namespace) -> int:
    """The start-up (interpreter, imports, environments) is paid once; each command runs as it
    would on its own (every job seeds everything it uses), so the results are the same. Stops at
    the first command that fails."""
    import shlex
    import time

    for i, line in enumerate(args.commands, 1):
        argv = shlex.split(line)
        if not argv or argv[0] not in TRAINING_COMMANDS:
            raise ValueError(f"batch command {i} is not one of {', '.join(TRAINING_COMMANDS)}: {line!r}")
        start = time.perf_counter()
        status = main(argv)
        print(
            f"batch {i}/{len(args.commands)}: {argv[0]} done in {time.perf_counter() - start:.1f} s (status {status})"
        )
        if status:
            return status
    return 0


# --- entry point -------------------------------------------------------------------------------


TRAINING_COMMANDS = ("online", "newdata", "offline", "finetune")  # the per-cell jobs, which use d3rlpy


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replication",
        description="Replication package: offline RL as subroutines of online RL.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        sub = subparsers.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(sub)
        sub.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] in PASSTHROUGH:  # the module parses its own options, --help included
        args = argparse.Namespace(command=argv[0], args=argv[1:], debug=False, _run=COMMANDS[argv[0]].run)
    else:
        args = parser.parse_args(argv)
    if args.command in (*TRAINING_COMMANDS, "batch", "export-minari"):
        from replication.imports import import_d3rlpy

        import_d3rlpy()  # before anything else imports it: skips scikit-learn (see replication.imports)
    try:
        return int(args._run(args) or 0)
    except ValueError as error:  # the package's own errors (config, dataset, budget) are ValueErrors
        if args.debug:
            raise
        print(f"replication {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
