"""Projection catch-up and rebuild rate over a generated history.

    .venv/bin/python -m bench.projection_catchup --events 100000              # SQLite
    .venv/bin/python -m bench.projection_catchup --events 100000 \\
        --database-url postgresql://root@127.0.0.1:5432/registry_bench

Writes about ``--events`` events (batches of 1,000 trades between two accounts: 3
events per trade), then times all six projections catching up from zero, and one
projection (serials, the costliest) rebuilt from zero and swapped in. A PostgreSQL
database is dropped, recreated and migrated first; ``--reuse`` keeps the history a
previous run wrote there and only empties the read models (to compare code changes on
the same events, minutes apart).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from sqlalchemy import text

from bench.ledger_throughput import EXCHANGE, reset_postgres, setup, trades
from registry.bootstrap import build_registry
from registry.persistence.engine import make_engine
from registry.readmodels.runner import DEFAULT_BATCH, ProjectionRunner
from registry.readmodels.tables import metadata
from registry.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the history already in --database-url (a previous run's): "
        "empty the read models only, and time again",
    )
    args = parser.parse_args()
    if args.reuse and not args.database_url:
        parser.error("--reuse needs the --database-url of a previous run")
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite"
    settings = Settings(url)
    engine = make_engine(settings)
    started = time.perf_counter()
    if args.reuse:
        registry = build_registry(settings)
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(
                    text(
                        "TRUNCATE "
                        + ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
                    )
                )
            else:
                for table in reversed(metadata.sorted_tables):
                    conn.execute(table.delete())
    else:
        if url.startswith("postgres"):
            reset_postgres(url)
        registry = build_registry(settings)
        setup(registry)
        for batch in range(max(1, args.events // 3000)):
            registry.settle_trades(EXCHANGE, trades(f"C{batch}", 1000))
    runner = ProjectionRunner(registry, engine, batch_size=args.batch_size)
    head = runner.head()
    print(
        f"store: {settings.describe()}; {'reused' if args.reuse else 'wrote'} {head:,} "
        f"events in {time.perf_counter() - started:.1f}s; batches of {args.batch_size:,}"
    )
    started = time.perf_counter()
    done = runner.catch_up()
    elapsed = time.perf_counter() - started
    print(
        f"catch-up, 6 projections: {done:,} events in {elapsed:.1f}s = "
        f"{done / elapsed:,.0f} events/s"
    )
    started = time.perf_counter()
    done = runner.rebuild("serials")
    elapsed = time.perf_counter() - started
    print(
        f"rebuild of serials + swap: {done:,} events in {elapsed:.1f}s = "
        f"{done / elapsed:,.0f} events/s"
    )
    registry.close()
    engine.dispose()


if __name__ == "__main__":
    main()
