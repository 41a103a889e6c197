"""Incremental against full ledger verification on one PostgreSQL store (issue 21).

    .venv/bin/python -m bench.verify_incremental \
        --database-url postgresql://root@127.0.0.1/bench_verify --events 100000

Recreates the database, writes ``--events`` raw events (one per aggregate, version 1:
the verifier hashes bytes, it does not decode them), chains and signs them (every
10,000), runs a full verification and records it, appends ``--new`` events, chains
them, then runs an incremental verification. Prints each run's events checked, wall
and CPU seconds (``time.process_time``: this process's share, the database's is not
in it), best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import time

import psycopg

from bench.ledger_throughput import reset_postgres
from registry.integrity.ledger import extend_chain
from registry.integrity.signing import generate_key
from registry.integrity.verify import Verified, VerifyReport, record_verified, verify_ledger
from registry.persistence.engine import make_engine
from registry.settings import Settings


def append(url: str, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO registry_events (originator_id, originator_version, topic, state) "
            "SELECT gen_random_uuid(), 1, 'bench:Event', "
            "convert_to('{\"n\":' || n || ',\"pad\":\"' || repeat('x', 200) || '\"}', 'UTF8') "
            "FROM generate_series(1, %s) AS n",
            (count,),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    reset_postgres(args.database_url)
    engine = make_engine(Settings(args.database_url))
    key = generate_key()
    try:
        append(args.database_url, args.events)
        extend_chain(engine, key)

        def timed(since: Verified | None) -> tuple[VerifyReport, float, float]:
            best = (float("inf"), float("inf"))
            report = None
            for _ in range(args.rounds):
                wall, cpu = time.perf_counter(), time.process_time()
                report = verify_ledger(engine, [key.public_key()], since=since)
                took = (time.perf_counter() - wall, time.process_time() - cpu)
                best = min(best, took)
                assert report.ok, report.summary()
            assert report is not None
            return report, *best

        full, wall, cpu = timed(None)
        print(
            f"full:        {full.events_checked:>9,} events  {wall:7.3f} s wall  {cpu:7.3f} s CPU"
        )
        record = record_verified(engine, full)
        append(args.database_url, args.new)
        extend_chain(engine, key, checkpoint_at_head=True)
        incremental, wall, cpu = timed(record)
        print(
            f"incremental: {incremental.events_checked:>9,} events  {wall:7.3f} s wall  "
            f"{cpu:7.3f} s CPU  (after position {incremental.since:,})"
        )
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
