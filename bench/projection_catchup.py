"""Projection catch-up and rebuild rate over a generated history.

    .venv/bin/python -m bench.projection_catchup --events 100000              # SQLite
    .venv/bin/python -m bench.projection_catchup --events 100000 \\
        --database-url postgresql://root@127.0.0.1:5432/registry_bench

Writes about ``--events`` events (batches of 1,000 trades between two accounts: an
event per trade, plus one per account per batch), then times all six projections
catching up from zero, and one projection (serials, the costliest) rebuilt from zero
and swapped in. A PostgreSQL
database is dropped, recreated and migrated first; ``--reuse`` keeps the history a
previous run wrote there and only empties the read models (to compare code changes on
the same events, minutes apart). Each phase prints its wall time and the CPU time of
this process (the machine is shared: CPU per event is the steadier figure);
``--profile FILE`` writes a cProfile of the catch-up (``--skip-rebuild`` to skip the
rebuild).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import tempfile
import time
from pathlib import Path

from sqlalchemy import Engine, text

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
    parser.add_argument("--profile", default="", help="write a cProfile of the catch-up here")
    parser.add_argument("--skip-rebuild", action="store_true", help="time the catch-up only")
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
        for batch in range(max(1, args.events // 1000)):
            registry.settle_trades(EXCHANGE, trades(f"C{batch}", 1000))
    runner = ProjectionRunner(registry, engine, batch_size=args.batch_size)
    head = runner.head()
    print(
        f"store: {settings.describe()}; {'reused' if args.reuse else 'wrote'} {head:,} "
        f"events in {time.perf_counter() - started:.1f}s; batches of {args.batch_size:,}"
    )
    profile = cProfile.Profile(time.process_time) if args.profile else None
    backends = _backend_cpu(engine)
    started, cpu = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    done = runner.catch_up()
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    _report("catch-up, 6 projections", done, started, cpu)
    if backends is not None:
        used = (_backend_cpu(engine) or 0.0) - backends
        print(
            f"  PostgreSQL backends of this database: CPU {used:.1f}s = "
            f"{used / max(done, 1) * 1e6:.1f} us/event"
        )
    if not args.skip_rebuild:
        started, cpu = time.perf_counter(), time.process_time()
        done = runner.rebuild("serials")
        _report("rebuild of serials + swap", done, started, cpu)
    registry.close()
    engine.dispose()


def _backend_cpu(engine: Engine) -> float | None:
    """CPU seconds used so far by the PostgreSQL sessions on the bench's database (read
    from /proc: the server must run on this host); None on SQLite or elsewhere."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _report(title: str, done: int, started: float, cpu: float) -> None:
    elapsed = time.perf_counter() - started
    used = time.process_time() - cpu
    print(
        f"{title}: {done:,} events in {elapsed:.1f}s = {done / elapsed:,.0f} events/s; "
        f"CPU {used:.1f}s = {used / max(done, 1) * 1e6:.1f} us/event "
        f"({done / max(used, 1e-9):,.0f} events per CPU-second)"
    )


if __name__ == "__main__":
    main()
