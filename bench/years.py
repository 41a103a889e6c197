"""The full bench's two national years alone (the 1x year, then ``--scale`` times it on
the same server), on a fresh database, with the server's settings taken from the
environment (the aggregate cache, unless ``REGISTRY_CACHE_SIZE`` is set, as the capacity
plan sets it for the scale): to try a setting on the 10x year without the whole run.

    .venv/bin/python -m bench.years [--scale 10] [--database-url URL]

Prints each year's time, its phases and the scaled year's target, memory and ratio.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.suite import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument(
        "--database-url",
        help="an empty PostgreSQL database to run on (another server's settings); "
        "default: a fresh database on the local server, dropped afterwards",
    )
    args = parser.parse_args(argv)
    sizes = replace(run.FULL, year_scale=args.scale)
    work = Path(tempfile.mkdtemp(prefix="registry-years-"))
    with run.database(args.database_url, False) as url:
        bench = run.Bench(url, sizes, work, 32, 4, 2)
        try:
            bench.start_server()
            bench.start("worker", "project")
            bench.seed_market()
            one = bench.national_year()
            bench.add(one)
            print(f"1x year: {one.value:,.1f} s; phases {one.details.get('phases')}")
            scaled = bench.national_year_scaled()
            scaled.evaluate()
            print(f"x{args.scale} year: {scaled.value:,.1f} s; target {scaled.targets[0]}")
            print({k: v for k, v in scaled.details.items() if k != "phases"})
        finally:
            bench.close()
    print(f"logs in {work}")


if __name__ == "__main__":
    main()
