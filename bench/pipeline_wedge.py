"""How often a large insert wedges in psycopg's pipeline mode, and that a plain one does
not: the measure behind ``registry.persistence.recorder.PIPELINE_MAX_BYTES`` (issue 15, item 1).

Each try runs in a child process: lock a scratch table ``IN EXCLUSIVE MODE``, NOTIFY,
and insert 10,000 rows of ``--size`` bytes in all with one ``unnest`` statement, as the
event recorder does; a try that has not finished after ``--timeout`` seconds is counted
as wedged and killed (its session is then ended by PostgreSQL).

    python -m bench.pipeline_wedge --database-url postgresql://root@127.0.0.1/test \
        --size 10000000 --tries 6 --mode pipeline
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
import uuid

import psycopg

ROWS = 10_000
TABLE = "bench_pipeline_wedge"


def insert_once(url: str, size: int, pipelined: bool) -> None:
    states = [os.urandom(size // ROWS) for _ in range(ROWS)]
    params = ([uuid.uuid4() for _ in range(ROWS)], list(range(ROWS)), ["t" * 128] * ROWS, states)
    insert = (
        f"INSERT INTO {TABLE} (oid, v, topic, state) SELECT * FROM "
        "unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) RETURNING id"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        if pipelined:
            with conn.pipeline() as pipeline, conn.transaction(), conn.cursor() as cur:
                cur.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE")
                cur.execute("NOTIFY bench_pipeline_wedge")
                cur.execute(insert, params)
                pipeline.sync()
                assert len(cur.fetchall()) == ROWS
        else:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE; NOTIFY bench_pipeline_wedge")
                cur.execute(insert, params)
                assert len(cur.fetchall()) == ROWS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--size", type=int, default=10_000_000, help="bytes per insert")
    parser.add_argument("--tries", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before wedged")
    parser.add_argument("--mode", choices=("pipeline", "plain"), default="pipeline")
    args = parser.parse_args()
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, "
            "oid uuid, v bigint, topic text, state bytea)"
        )
    wedged, seconds = 0, []
    for _ in range(args.tries):
        child = multiprocessing.Process(
            target=insert_once, args=(args.database_url, args.size, args.mode == "pipeline")
        )
        started = time.perf_counter()
        child.start()
        child.join(args.timeout)
        if child.is_alive():
            wedged += 1
            child.kill()
            child.join()
        else:
            seconds.append(time.perf_counter() - started)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {TABLE}")
    done = f", finished ones took {min(seconds):.2f}-{max(seconds):.2f} s" if seconds else ""
    print(
        f"{args.mode}: {wedged} of {args.tries} inserts of {args.size:,} bytes wedged "
        f"(no answer in {args.timeout:.0f} s){done}"
    )


if __name__ == "__main__":
    main()
