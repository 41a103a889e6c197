"""The ``registry`` command: every operator's and regulator's tool, one entry point."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from registry import configuration
from registry.cli import access as access_cli
from registry.cli import allocate, imports, regulator, remote
from registry.cli import health as health_cli
from registry.cli import verify as integrity_cli
from registry.cli.demo import run_demo
from registry.cli.runtime import tune_gc
from registry.config import DEFAULT_DATA_DIR, Settings, build_registry
from registry.domain.errors import RegistryError
from registry.persistence.engine import make_engine
from registry.persistence.faults import database_fault, describe_fault
from registry.readmodels import check, worker

DESCRIPTION = """\
A national carbon emissions trading registry: an event-sourced ledger of allowance (CEA)
and offset (CCER) units, their issuance, allocation, transfer, settlement, surrender and
cancellation, with read models projected from the events and a gRPC API.

Main command groups:
  run a registry     demo, serve, project, migrate, config
  check it           supply, check, verify, ledger-digest, health
  use a server       balances, history, trace, compliance-status, surrender, report
  regulate           rules, close-year, propose, proposals, allocate, import
  administer access  access (init, grant, token, cert, list)
  measure            bench (from a source checkout)

Settings come from REGISTRY_* environment variables (`registry config` lists them);
with none set, the store is the SQLite file registry-data/registry.sqlite under the
current directory. Exit status: 0 done, 1 a finding (a mismatch, a ledger that does
not verify), 2 bad settings or input (including no store or no token found), 3 the
database cannot be reached."""

BENCH_HELP = """\
usage: registry bench [--smoke] [suite options]

The benchmark suite: starts a PostgreSQL-backed server, projection worker and clients
as processes, measures them against a raw psycopg baseline and prints one table with
PASS/FAIL per target (see docs/performance.md); --smoke is a quick check. The suite is
not part of the installed package: run it from a source checkout of the registry (its
bench/ folder), where `registry bench --help` lists every suite option."""


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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="play a small national year on a fresh embedded store")
    demo.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="where the demo's SQLite file goes (default: %(default)s)",
    )
    sub.add_parser("supply", help="check units issued == sum of holdings, per unit class")
    sub.add_parser(
        "migrate",
        help="upgrade the configured database (REGISTRY_DATABASE_URL) to the latest schema",
    ).set_defaults(run=_migrate)
    worker.add_parser(sub)
    check.add_parser(sub)
    sub.add_parser(
        "serve", help="run the gRPC server (REGISTRY_LISTEN, default 127.0.0.1:50051)"
    ).set_defaults(run=_serve)
    access_cli.add_parsers(sub)
    config = sub.add_parser(
        "config",
        help="the effective settings (secrets masked), or check them as `registry serve` would",
    )
    config.add_argument(
        "--show",
        action="store_true",
        help="print every setting, its value and where it came from (the default)",
    )
    config.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if a server would start with these settings, else 2",
    )
    config.set_defaults(run=_config)
    remote.add_parsers(sub)
    allocate.add_parsers(sub)
    integrity_cli.add_parser(sub)
    health_cli.add_parser(sub)
    regulator.add_parsers(sub)
    imports.add_parsers(sub)
    # The suite parses its own options (`registry bench --help`): "+" as this parser's
    # prefix hands every "--option" through untouched.
    bench = sub.add_parser(
        "bench",
        add_help=False,
        prefix_chars="+",
        help="the benchmark suite on PostgreSQL (--smoke: a quick check); needs a source checkout",
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_gc()
    args = build_parser().parse_args(argv)
    try:
        args.from_file = configuration.load()
        if hasattr(args, "run"):
            return int(args.run(args))
        if args.command == "demo":
            return _demo(Path(args.data_dir))
        return _supply()
    except RegistryError as error:
        print(f"registry: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if database_fault(error) is None:
            raise
        print(unreachable_message(error), file=sys.stderr)
        return EXIT_DATABASE_UNREACHABLE


EXIT_DATABASE_UNREACHABLE = 3
"""Every command's exit status when its database cannot be reached or does not answer
in time: distinct from 1 (``registry check``: a mismatch; ``registry verify``: the
ledger does not verify) and 2 (bad settings or input), so an alert can tell them apart."""


def unreachable_message(error: BaseException) -> str:
    """One line: which database (password masked), what it said, what to do."""
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


def _demo(data_dir: Path) -> int:
    path = data_dir / "demo.sqlite"
    for stale in data_dir.glob("demo.sqlite*"):
        stale.unlink()
    settings = Settings(f"sqlite:///{path}")
    registry = build_registry(settings)
    print(f"Demo registry on {path} (embedded SQLite)\n")
    balanced = run_demo(registry)
    # The embedded store runs the projections in-process: one command is enough.
    engine = make_engine(settings)
    report = check.check(registry, engine)
    head = registry.recorder.max_notification_id() or 0
    print(
        f"\nRead models: {head:,} events projected in-process; registry check: "
        + ("OK, " if report.ok else "MISMATCH, ")
        + f"{report.checks:,} checks"
    )
    for difference in report.differences:
        print(f"  {difference}")
    engine.dispose()
    registry.close()
    return 0 if balanced and report.ok else 1


def _supply() -> int:
    settings = Settings.from_env()
    check.require_store(settings, "registry supply")
    registry = build_registry(settings)
    print(f"store: {settings.describe()}")
    ok = True
    for line in registry.supply():
        ok &= line.balanced
        print(
            f"{line.unit_class.key:<28} issued {line.issued:>15,}  "
            f"held {line.held_in_accounts:>15,}  {'OK' if line.balanced else 'MISMATCH'}"
        )
    registry.close()
    return 0 if ok else 1


def _serve(_: argparse.Namespace) -> int:
    from services.server import serve

    configuration.check(server=True)
    return serve()


def _config(args: argparse.Namespace) -> int:
    if args.check:
        configuration.check(server=True)
        print("settings OK")
        return 0
    rows = configuration.effective(from_file=args.from_file)
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value or '-':<44}  {source}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    """The suite lives in the source checkout's bench/, not in the installed package
    (nor in mypy's scope), so it is found and imported at run time."""
    import importlib

    root = str(Path(__file__).resolve().parents[1])
    if (Path(root) / "bench" / "suite").is_dir() and root not in sys.path:
        sys.path.insert(0, root)
    try:
        suite = importlib.import_module("bench.suite.run")
    except ImportError as error:
        if {"-h", "--help"} & set(args.args):
            print(BENCH_HELP)
            print(f"\n(here the suite cannot be loaded: {error})")
            return 0
        print(
            f"registry bench: the suite is not installed ({error}); run it from a "
            "source checkout of the registry (`registry bench --help`)",
            file=sys.stderr,
        )
        return 2
    return int(suite.main(list(args.args)))


def _migrate(_: argparse.Namespace) -> int:
    from registry.persistence import migrate

    settings = Settings.from_env()
    steps = migrate.upgrade(settings)
    for step in steps:
        print(f"applied {step}")
    state = "migrated to" if steps else "already at"
    print(f"{settings.describe()}: {state} head {migrate.head_revision()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
