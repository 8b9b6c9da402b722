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
    from replication.envs import specs

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
    from replication import config

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
    parser.add_argument("--env", required=True, help="study environment name")
    parser.add_argument("--seed", required=True, type=int)


def _add_online_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory of the online run")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")


@command("online", "train online SAC for one cell, keeping every pause point's data", _add_online_arguments)
def _online(args: argparse.Namespace) -> int:
    from replication.online import run_online

    _setup_logging()
    summary = run_online(_load_config(args.config), args.env, args.seed, args.out, progress=args.progress)
    print(f"online {args.env} seed {args.seed}: {summary['timings']['train_steps_per_second']:.0f} env steps/s")
    return 0


def _add_newdata_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--online", required=True, help="the cell's online run directory")
    parser.add_argument("--dataset", required=True, help="dataset key, e.g. newdata-best or newdata-eps0.1-last")
    parser.add_argument("--out", required=True, help="dataset file to write (.h5)")


@command("newdata", "collect a newdata dataset with the cell's online policy", _add_newdata_arguments)
def _newdata(args: argparse.Namespace) -> int:
    from replication.datasets import build_newdata
    from replication.workflow import parse_dataset_key

    _setup_logging()
    cfg = _load_config(args.config)
    dataset = parse_dataset_key(cfg, args.dataset)
    if not dataset.is_newdata:
        raise ValueError(f"{args.dataset} is not a newdata dataset")
    eps = float(dataset.label.removeprefix("newdata-eps")) if dataset.label != "newdata" else 0.0
    meta = build_newdata(cfg, args.env, args.seed, args.online, dataset.collector, eps, args.out)
    print(f"newdata {args.env} seed {args.seed}: {meta['transitions']} transitions, {meta['episodes']} episodes")
    return 0


def _add_offline_arguments(parser: argparse.ArgumentParser) -> None:
    _cell_arguments(parser)
    parser.add_argument("--algo", required=True, choices=("iql", "cql", "calql"))
    parser.add_argument("--dataset", required=True, help="dataset key, e.g. buffer-p200000 or newdata-best")
    parser.add_argument("--data", required=True, help="the dataset file")
    parser.add_argument("--online", required=True, help="the cell's online run directory")
    parser.add_argument("--out", required=True, help="output directory")


@command("offline", "train an offline learner on a dataset, validate, recommend", _add_offline_arguments)
def _offline(args: argparse.Namespace) -> int:
    from replication.offline import run_offline
    from replication.workflow import parse_dataset_key

    _setup_logging()
    cfg = _load_config(args.config)
    dataset = parse_dataset_key(cfg, args.dataset)
    run_offline(cfg, args.env, args.seed, args.algo, args.data, args.online, dataset, args.out)
    return 0


def _add_aggregate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    parser.add_argument("inputs", nargs="+", help="tidy CSV files of the cells")


@command("aggregate", "concatenate the cells' tidy results into one table", _add_aggregate_arguments)
def _aggregate(args: argparse.Namespace) -> int:
    from replication import tidy

    df = tidy.read(args.inputs)
    tidy.write(df, args.out)
    print(f"aggregate: {len(df)} rows from {len(args.inputs)} files")
    return 0


def _add_configfile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", default="config/config.yaml", help="run config (default: config/config.yaml)")


@command("check-config", "validate a run config and print its grid", _add_configfile_arguments)
def _check_config(args: argparse.Namespace) -> int:
    from replication import config, workflow

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
    from replication.estimate import load_and_format

    print(load_and_format(args.configfile, args.cores))
    return 0


# --- entry point -------------------------------------------------------------------------------


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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ValueError as error:  # the package's own errors (config, dataset, budget) are ValueErrors
        if args.debug:
            raise
        print(f"replication {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
