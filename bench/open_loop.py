"""The full bench's two open-loop rows alone, for A/B runs: a fresh database, the server
(two processes) and the worker started as `registry bench` starts them, the market
seeded, then single trades offered at 300/s and GetBalances at 1,000/s.

    .venv/bin/python -m bench.open_loop [--seconds 20] [--after-rows]

``--after-rows`` first runs the full run's rows that come before them (the four
settlement rows, the in-process row, GetBalances at 32 callers), in the same order,
so the servers start the open loop in the state they have in a full run.

Prints each row's rate, p50 and p99 (latency from each call's intended send time) and
the CPU seconds of the server, worker, PostgreSQL, clients and the whole machine over
the row: on 2 cores a row of 20 s has 40 CPU-s, and a machine near that is saturated,
whatever the code does per call. Server and worker logs are kept in the directory
printed at the end.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.suite import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--after-rows", action="store_true")
    args = parser.parse_args(argv)
    sizes = replace(run.FULL, open_loop_seconds=args.seconds)
    work = Path(tempfile.mkdtemp(prefix="registry-open-loop-"))
    with run.database(None, False) as url:
        bench = run.Bench(url, sizes, work, 32, 4, 2)
        try:
            bench.start_server()
            bench.start("worker", "project")
            bench.seed_market()
            if args.after_rows:
                for key, callers, batch in run.SETTLE_ROWS:
                    row = bench.settle(key, callers or bench.callers_count, batch)
                    print(f"{key}: {row.value:,.0f} trades/s")
                print(f"in-process: {bench.inprocess().value:,.0f} trades/s")
                print(f"GetBalances, 32 callers: {bench.balances().value:,.0f} calls/s")
            rows = bench.open_loops()
        finally:
            bench.close()
    for row in rows:
        print(
            f"{row.key}: {row.value:,.1f} {row.unit}, p50 {row.p50_ms} ms, p99 {row.p99_ms} ms; "
            f"CPU-s {row.cpu_seconds}"
        )
    print(f"logs in {work}")


if __name__ == "__main__":
    main()
