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
