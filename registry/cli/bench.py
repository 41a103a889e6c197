"""`registry bench`: the benchmark suite, from a source checkout (its bench/ folder)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from registry.cli.exits import Exit

BENCH_HELP = """\
usage: registry bench [--smoke] [suite options]

The benchmark suite: starts a PostgreSQL-backed server, projection worker and clients
as processes, measures them against a raw psycopg baseline and prints one table with
PASS/FAIL per target (see docs/performance.md); --smoke is a quick check. The suite is
not part of the installed package: run it from a source checkout of the registry (its
bench/ folder), where `registry bench --help` lists every suite option."""

SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this package was installed from (editable), where bench/ lives."""


def add_parser(sub: Any) -> None:
    # The suite parses its own options (`registry bench --help`): "+" as this parser's
    # prefix hands every "--option" through untouched.
    bench = sub.add_parser(
        "bench",
        add_help=False,
        prefix_chars="+",
        help="the benchmark suite on PostgreSQL (--smoke: a quick check); needs a source checkout",
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)
    bench.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The suite lives in the source checkout's bench/, not in the installed package
    (nor in mypy's scope), so it is found and imported at run time."""
    root = str(SOURCE_ROOT)
    if (SOURCE_ROOT / "bench" / "suite").is_dir() and root not in sys.path:
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
        return Exit.USAGE
    return int(suite.main(list(args.args)))
