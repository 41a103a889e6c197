"""The ``registry`` command: every operator's and regulator's tool, one entry point.

This module builds the parser from the command groups' modules (each registers its
commands with ``add_parser``/``add_parsers`` and handles them) and dispatches."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from importlib import metadata

import grpc

# Each command group as a module (not ``from registry.cli import ...``, which names the
# package: its __init__ imports this module, so that would read as an import cycle).
import registry.cli.access as access
import registry.cli.allocate as allocate
import registry.cli.bench as bench
import registry.cli.check as check
import registry.cli.config as config
import registry.cli.health as health
import registry.cli.imports as imports
import registry.cli.migrate as migrate
import registry.cli.project as project
import registry.cli.projects as projects
import registry.cli.regulator as regulator
import registry.cli.remote as remote
import registry.cli.restrictions as restrictions
import registry.cli.serve as serve
import registry.cli.supply as supply
import registry.cli.transfers as transfers
import registry.cli.verify as verify
from registry import settings as registry_settings
from registry.cli.exits import Exit, UsageError, exit_for_error, exit_table
from registry.cli.runtime import tune_gc
from registry.domain.errors import RegistryError
from registry.settings import Settings

DESCRIPTION = """\
A national carbon emissions trading registry: an event-sourced ledger of allowance (CEA)
and offset (CCER) units, their issuance, allocation, transfer, settlement, surrender and
cancellation, with read models projected from the events and a gRPC API.

Main command groups:
  run a registry     demo, serve, project, migrate, config
  check it           supply, check, verify, ledger-digest, health
  use a server       balances, history, trace, compliance-status, surrender, transfer,
                     report, restrictions (list, rebut)
  regulate           rules, close-year, propose, proposals, allocate, import, projects
  administer access  access (init, grant, token, cert, list)
  measure            bench (from a source checkout)

Settings come from REGISTRY_* environment variables (`registry config` lists them);
with none set, the store is the SQLite file registry-data/registry.sqlite under the
current directory. Table commands take --output table|json|csv."""

EPILOG = f"""\
exit status (the same for every command; README.md, "Exit status"):
{exit_table()}"""


def package_version() -> str:
    """The installed distribution's version (pyproject.toml), or "unknown" when run
    from a tree that was never installed."""
    try:
        return metadata.version("carbon-registry")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """Every command and its options (what ``registry --help`` lists)."""
    parser = argparse.ArgumentParser(
        prog="registry",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_parser(sub)
    supply.add_parser(sub)
    migrate.add_parser(sub)
    project.add_parser(sub)
    check.add_parser(sub)
    serve.add_parser(sub)
    access.add_parsers(sub)
    config.add_parser(sub)
    remote.add_parsers(sub)
    restrictions.add_parsers(sub)
    allocate.add_parsers(sub)
    verify.add_parser(sub)
    health.add_parser(sub)
    regulator.add_parsers(sub)
    regulator.add_enforcement_parsers(sub)
    transfers.add_parser(sub)
    imports.add_parsers(sub)
    projects.add_parsers(sub)
    bench.add_parser(sub)
    return parser


def add_demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``registry demo``: here rather than in ``registry.cli.demo``, whose cast of
    principals is built at import from the domain (and so eventsourcing)."""
    demo = sub.add_parser("demo", help="play a small national year on a fresh embedded store")
    demo.add_argument(
        "--data-dir",
        default=registry_settings.DEFAULT_DATA_DIR,
        help="where the demo's SQLite file goes (default: %(default)s)",
    )
    demo.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Import the demo (and the whole application) only when it runs."""
    from registry.cli.demo import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends here as one line on stderr and its exit
    status from ``registry.cli.exits`` (the one mapping of errors to statuses)."""
    tune_gc()
    args = build_parser().parse_args(argv)
    try:
        args.from_file = registry_settings.load()
        status = int(args.run(args))
        sys.stdout.flush()  # a closed pipe shows here, while we can still handle it
        return status
    except BrokenPipeError:
        return _reader_went_away()
    except SystemExit as stop:  # a command's own early exit: its status, not a raise
        if isinstance(stop.code, int):
            return stop.code
        raise
    except UsageError as error:
        print(error, file=sys.stderr)
        return Exit.USAGE
    except RegistryError as error:
        print(f"registry: {error}", file=sys.stderr)
        return exit_for_error(error)
    except grpc.RpcError as error:  # a remote command that let its failed call through
        return remote.report_error(error)
    except Exception as error:
        # Imported here: it imports SQLAlchemy, which a remote command never needs.
        from registry.persistence.faults import database_fault

        if database_fault(error) is not None:
            print(unreachable_message(error), file=sys.stderr)
            return EXIT_DATABASE_UNREACHABLE
        traceback.print_exc()
        print(
            f"registry: internal error ({type(error).__name__}): a defect; please report "
            "it with the lines above",
            file=sys.stderr,
        )
        return Exit.INTERNAL


EXIT_BROKEN_PIPE = Exit.BROKEN_PIPE
"""What a shell reports for a writer killed by SIGPIPE (128 + 13): ``registry config |
head`` stops quietly, as ``cat`` would, instead of with a traceback."""


def _reader_went_away() -> int:
    """The reader of our output closed it (``| head``): stop quietly. Standard output
    is pointed at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


EXIT_DATABASE_UNREACHABLE = Exit.UNAVAILABLE
"""Every command's exit status when its database cannot be reached or does not answer
in time: distinct from 1 (``registry check``: a mismatch; ``registry verify``: the
ledger does not verify) and 2 (bad settings or input), so an alert can tell them apart."""


def unreachable_message(error: BaseException) -> str:
    """One line: which database (password masked), what it said, what to do."""
    from registry.persistence.faults import describe_fault

    try:
        settings: Settings | None = Settings.from_env()
    except RegistryError:
        settings = None
    store = settings.describe() if settings else "the configured database"
    hint = (
        "is PostgreSQL running? start it (e.g. `pg_ctlcluster 15 main start`, "
        "`docker compose up -d postgres`) or fix REGISTRY_DATABASE_URL, then retry"
        if settings is None or settings.backend.startswith("postgres")
        else "another process holds it: retry when it is done"
    )
    return f"registry: cannot use the database {store}: {describe_fault(error)} ({hint})"


if __name__ == "__main__":
    raise SystemExit(main())
