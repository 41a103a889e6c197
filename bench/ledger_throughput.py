"""Transfer throughput of the core ledger, single and batched, on one store.

    .venv/bin/python -m bench.ledger_throughput                       # SQLite (temp file)
    .venv/bin/python -m bench.ledger_throughput --database-url postgresql://root@127.0.0.1/bench

Trades alternate between two compliance accounts so every settlement reads and writes
both (2 account aggregates + 1 transaction record, 3 events, one atomic save). The
PostgreSQL database is created if missing and its registry tables are emptied first.
This is a quick measure for the ledger; the full benchmark against the raw database
is a separate suite.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg

from registry.application import Registry, Trade
from registry.bootstrap import build_registry
from registry.domain.accounts import AccountType, Holder
from registry.domain.conservation import conserved
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.persistence import migrate
from registry.settings import Settings

REGULATOR = Principal("mee", "bench")
EXCHANGE = Principal("exchange", "bench")


def reset_postgres(url: str) -> None:
    """Drop, recreate and migrate the benchmark's PostgreSQL database."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(Settings(url))


def setup(registry: Registry) -> None:
    for account in ("PWR-A", "PWR-B"):
        registry.open_account(
            REGULATOR,
            account,
            AccountType.COMPLIANCE,
            Holder(account, "91110000100001234X", "POWER", "Beijing"),
        )
    registry.issue_units(REGULATOR, "ISS", UnitClass(UnitType.CEA, 2025), 10**9, "bench")
    registry.transfer(
        REGULATOR,
        "RES",
        "CN-ISSUANCE",
        "CN-ALLOCATION-RESERVE",
        UnitSelector(UnitType.CEA),
        10**9,
        "bench",
    )
    for account in ("PWR-A", "PWR-B"):
        registry.allocate(
            REGULATOR, f"AL-{account}", account, UnitSelector(UnitType.CEA), 10**8, "bench"
        )


def trades(prefix: str, count: int) -> list[Trade]:
    return [
        Trade(
            f"{prefix}-{n}",
            *(("PWR-A", "PWR-B") if n % 2 else ("PWR-B", "PWR-A")),
            "CEA",
            1 + n % 7,
        )
        for n in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="")
    parser.add_argument("--single", type=int, default=1000, help="trades, one per call")
    parser.add_argument("--batches", type=int, default=10, help="batches of each size")
    parser.add_argument(
        "--history",
        type=int,
        default=20_000,
        help="past events on the account of the history measure",
    )
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite"
    if url.startswith("postgres"):
        reset_postgres(url)
    registry = build_registry(Settings(url))
    setup(registry)
    print(
        f"store: {Settings(url).describe()}  machine: {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    started = time.perf_counter()
    for trade in trades("S", args.single):
        assert registry.settle_trade(EXCHANGE, trade).ok
    elapsed = time.perf_counter() - started
    print(
        f"settle_trade, 1 per call:   {args.single / elapsed:8.0f} trades/s "
        f"({elapsed / args.single * 1000:.2f} ms each)"
    )
    for size in (100, 1000):
        started = time.perf_counter()
        for batch in range(args.batches):
            results = registry.settle_trades(EXCHANGE, trades(f"B{size}-{batch}", size))
            assert all(r.outcome == "SETTLED" for r in results)
        elapsed = time.perf_counter() - started
        total = size * args.batches
        print(
            f"settle_trades, batch {size:>4}: {total / elapsed:8.0f} trades/s "
            f"({elapsed / args.batches * 1000:.0f} ms per batch)"
        )
    assert all(conserved(line.issued, line.held_in_accounts) for line in registry.supply())
    registry.close()
    measure_history(url, args.history)


def measure_history(url: str, events: int) -> None:
    """Command cost on an account with a long history, cold (new process) and warm."""
    registry = build_registry(Settings(url))
    registry.open_account(REGULATOR, "HIST-A", AccountType.TRADING, Holder("history"))
    registry.open_account(REGULATOR, "HIST-B", AccountType.TRADING, Holder("history"))
    registry.transfer(
        REGULATOR, "HIST-FUND", "PWR-A", "HIST-A", UnitSelector(UnitType.CEA), 10**6, "bench"
    )
    for start in range(0, events, 1000):
        batch = [
            Trade(f"H-{n}", "HIST-A", "HIST-B", "CEA", 1)
            for n in range(start, min(events, start + 1000))
        ]
        registry.settle_trades(EXCHANGE, batch)
    registry.close()
    fresh = build_registry(Settings(url))  # no cache: loads via the latest snapshot
    started = time.perf_counter()
    assert fresh.settle_trade(EXCHANGE, Trade("H-cold", "HIST-A", "PWR-A", "CEA", 1)).ok
    cold = time.perf_counter() - started
    started = time.perf_counter()
    for n in range(200):
        assert fresh.settle_trade(EXCHANGE, Trade(f"H-warm-{n}", "HIST-A", "PWR-A", "CEA", 1)).ok
    warm = (time.perf_counter() - started) / 200
    print(
        f"account with {events:,} past events: first command after a restart "
        f"{cold * 1000:.1f} ms, then {warm * 1000:.2f} ms each"
    )
    fresh.close()


if __name__ == "__main__":
    main()
