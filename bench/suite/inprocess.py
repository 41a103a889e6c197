"""Settlement in-process: ``Registry.settle_trades`` in batches, no gRPC, on PostgreSQL.

    python -m bench.suite.inprocess --database-url postgresql://root@127.0.0.1/h_bench
    python -m bench.suite.inprocess --smoke --json out.json
    python -m bench.suite.inprocess --count-calls --batches 5   # calls per trade

What the registry itself costs per trade, without the server, the protocol buffers or
the clients: batches of random trades between the funded compliance accounts of a
small market, timed by the wall clock and by the CPU of this process (every thread:
the group commit decides and saves on its own thread). The CPU per trade is the
figure to compare across commits on a loaded machine; trades/s is the row's value.
The database is dropped, created and migrated first.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench.ledger_throughput import reset_postgres
from registry.application import Registry, Trade
from registry.bootstrap import build_registry
from registry.domain.accounts import AccountType, Holder
from registry.domain.conservation import conserved
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.settings import Settings

REGULATOR = Principal("mee", "bench")
EXCHANGE = Principal("shanghai-exchange", "bench")
FUNDS = 10**7


@dataclass(frozen=True)
class Plan:
    accounts: int = 200
    batch: int = 1_000
    batches: int = 20
    warmup: int = 2
    """Batches settled first and not counted: the first loads every account."""
    seed: int = 20


FULL = Plan()
SMOKE = Plan(accounts=40, batches=2, warmup=1)


def drop(url: str) -> None:
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def seed(registry: Registry, accounts: list[str]) -> None:
    """Open the market's compliance accounts and fund each with ``FUNDS`` allowances."""
    for account in accounts:
        registry.open_account(
            REGULATOR,
            account,
            AccountType.COMPLIANCE,
            Holder(account, "91110000100001234X", "POWER", "Beijing"),
        )
    registry.issue_units(
        REGULATOR, "INP-ISS", UnitClass(UnitType.CEA, 2025), FUNDS * len(accounts), "bench"
    )
    for account in accounts:
        result = registry.allocate(
            REGULATOR,
            f"INP-AL-{account}",
            account,
            UnitSelector(UnitType.CEA),
            FUNDS,
            "bench",
            source="CN-ISSUANCE",
        )
        assert result.ok, result


def batches(plan: Plan, accounts: list[str]) -> list[list[Trade]]:
    """Every batch of the run, warm-up first: trades between random pairs."""
    rng = random.Random(plan.seed)
    out = []
    for b in range(plan.warmup + plan.batches):
        rows = []
        for n in range(plan.batch):
            seller, buyer = rng.sample(accounts, 2)
            rows.append(Trade(f"INP-{b}-{n}", seller, buyer, "CEA", rng.randint(1, 7)))
        out.append(rows)
    return out


class CallCounter:
    """Python and C function calls made while ``on``, in every thread started after
    ``install`` and in this one: work per trade that a loaded machine does not blur
    (the hook slows the run several times over: with it, only the count means
    anything)."""

    def __init__(self) -> None:
        self.calls = 0
        self.on = False

    def hook(self, frame: Any, event: str, arg: Any) -> None:
        if self.on and (event == "call" or event == "c_call"):
            self.calls += 1

    def install(self) -> None:
        threading.setprofile(self.hook)  # the group commit's thread starts later
        sys.setprofile(self.hook)


def measure(url: str, plan: Plan, count_calls: bool = False) -> dict[str, Any]:
    """Seed a fresh database, settle the plan's batches and return the figures."""
    reset_postgres(url)
    counter = CallCounter()
    if count_calls:
        counter.install()
    registry = build_registry(Settings(url))
    try:
        accounts = [f"INP-{i:04d}" for i in range(plan.accounts)]
        seed(registry, accounts)
        work = batches(plan, accounts)
        for rows in work[: plan.warmup]:
            registry.settle_trades(EXCHANGE, rows)
        per_batch: list[float] = []
        wall = cpu = 0.0
        for rows in work[plan.warmup :]:
            w0, c0 = time.perf_counter(), time.process_time()
            counter.on = True
            results = registry.settle_trades(EXCHANGE, rows)
            counter.on = False
            w1, c1 = time.perf_counter(), time.process_time()
            wall += w1 - w0
            cpu += c1 - c0
            per_batch.append(w1 - w0)
            settled = sum(r.outcome == "SETTLED" for r in results)
            if settled != len(rows):
                raise RuntimeError(f"{len(rows) - settled} trades of a batch not settled")
        if not all(conserved(line.issued, line.held_in_accounts) for line in registry.supply()):
            raise RuntimeError("units not conserved")
    finally:
        registry.close()
        sys.setprofile(None)
        threading.setprofile(None)
    trades = plan.batch * plan.batches
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "peak_rss_mib": round(peak, 1),
        "trades": trades,
        "seconds": round(wall, 3),
        "trades_per_second": round(trades / wall, 1),
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_trade": round(cpu / trades * 1e6, 1),
        "batch_ms": sorted(round(s * 1000, 1) for s in per_batch),
        **({"calls_per_trade": round(counter.calls / trades)} if count_calls else {}),
        "plan": plan.__dict__,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/h_inprocess")
    p.add_argument("--smoke", action="store_true", help="a toy run (CI)")
    p.add_argument("--batches", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the figures here too")
    p.add_argument("--keep-database", action="store_true")
    p.add_argument(
        "--count-calls",
        action="store_true",
        help="count the function calls per trade instead (every thread; the rates are "
        "then meaningless)",
    )
    args = p.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.batches:
        plan = Plan(**{**plan.__dict__, "batches": args.batches})
    try:
        figures = measure(args.database_url, plan, args.count_calls)
    finally:
        if not args.keep_database:
            drop(args.database_url)
    text = json.dumps(figures)
    if args.json:
        args.json.write_text(text)
    print(
        f"settle_trades in-process, batches of {plan.batch:,}: "
        f"{figures['trades_per_second']:,.0f} trades/s, "
        f"{figures['cpu_us_per_trade']} µs CPU/trade"
        + (f", {figures['calls_per_trade']} calls/trade" if args.count_calls else ""),
        file=sys.stderr,
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
