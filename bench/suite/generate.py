"""A long event log, written fast: in-process through the application, not the API.

Settling a million events' worth of trades through gRPC would take most of the run, so
two spawned processes call the application directly (the same code the server runs,
minus gRPC). One builds the histories of the command-cost scenario (accounts with 10
past events and one with --history-events) with one ``Registry.settle_trade`` per
event: a save writes one event per account it changes, so an account's history grows
by one event per save. The other fills the log up to the asked size with
``Registry.settle_trades`` batches of 5,000 one-unit trades between fixed pairs of
accounts, alternating direction so no account runs dry (about one event per trade:
the trades' records, plus one per account per batch).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass
from typing import Any

from registry.application import AllocationRow, Trade
from registry.bootstrap import build_registry
from registry.domain.accounts import AccountType, Holder
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitType
from registry.settings import Settings

BATCH = 5_000
"""Trades per in-process batch: big enough that the per-save cost is small."""
REGULATOR = Principal("mee", "bench-generator")
EXCHANGE = Principal("shanghai-exchange", "bench-generator")
SHORT_EVENTS = 10
SHORT_ACCOUNTS = 24
PAIRS = 8


@dataclass(frozen=True)
class Histories:
    """The accounts of the command-cost scenario."""

    short_accounts: list[str]
    long_account: str
    short_sink: str
    long_sink: str
    long_events: int


HISTORIES = Histories(
    short_accounts=[f"HIST-SHORT-{i:02d}" for i in range(SHORT_ACCOUNTS)],
    long_account="HIST-LONG",
    short_sink="HIST-SINK-SHORT",
    long_sink="HIST-SINK-LONG",
    long_events=0,
)


def _open(registry: Any, account_ids: list[str]) -> None:
    for account_id in account_ids:
        registry.open_account(
            REGULATOR,
            account_id,
            AccountType.COMPLIANCE,
            Holder(f"{account_id} Co., Ltd.", "91110000100001234X", "POWER", "Beijing"),
        )


def _fund(registry: Any, tag: str, amounts: dict[str, int]) -> None:
    registry.issue_units(
        REGULATOR,
        f"{tag}-ISS",
        UnitClass(UnitType.CEA, 2025),
        sum(amounts.values()),
        "benchmark history",
    )
    rows = [
        AllocationRow(f"{tag}-AL-{a}", a, "CEA", q, "benchmark history", source="CN-ISSUANCE")
        for a, q in amounts.items()
    ]
    for result in registry.allocate_many(REGULATOR, rows):
        if result.outcome.value != "COMPLETED":
            raise RuntimeError(f"funding {result} failed")


def _settle_one_by_one(registry: Any, trades: list[Trade]) -> None:
    """Each trade in its own save: one event on each of its two accounts."""
    for trade in trades:
        result = registry.settle_trade(EXCHANGE, trade)
        if not result.ok:
            raise RuntimeError(f"generation refused {trade}: {result}")


def _settle(registry: Any, trades: list[Trade]) -> None:
    for start in range(0, len(trades), BATCH):
        results = registry.settle_trades(EXCHANGE, trades[start : start + BATCH])
        bad = [r for r in results if r.outcome.value != "SETTLED"]
        if bad:
            raise RuntimeError(f"generation refused {len(bad)} trades, first {bad[0]}")


def write_histories(url: str, long_events: int) -> None:
    """Short accounts with exactly 10 events each (opened, funded, 8 trades out) and
    one long account with ``long_events`` (opened, funded, then one-unit trades out).

    A save per event is a commit per event; this process alone commits without waiting
    for the disk (``synchronous_commit=off`` through libpq's PGOPTIONS): generated data
    need not survive a crash of the database, and 100,000 flushes took six minutes."""
    os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} -c synchronous_commit=off"
    registry = build_registry(Settings(url))
    try:
        h = HISTORIES
        dump = "HIST-DUMP"
        _open(
            registry,
            [*h.short_accounts, h.long_account, "HIST-LONG-PEER", dump, h.short_sink, h.long_sink],
        )
        _fund(registry, "HIST", {**dict.fromkeys(h.short_accounts, 10**6), h.long_account: 10**7})
        _settle_one_by_one(
            registry,
            [
                Trade(f"HIST-S-{a}-{i}", a, dump, "CEA", 1)
                for a in h.short_accounts
                for i in range(SHORT_EVENTS - 2)
            ],
        )
        _settle_one_by_one(
            registry,
            [
                Trade(f"HIST-L-{i}", h.long_account, "HIST-LONG-PEER", "CEA", 1)
                for i in range(long_events - 2)
            ],
        )
    finally:
        registry.close()


def write_bulk(url: str, trades: int) -> None:
    """``trades`` one-unit trades between fixed pairs, a batch per pair in turn."""
    registry = build_registry(Settings(url))
    try:
        pairs = [(f"BULK-{i:02d}-A", f"BULK-{i:02d}-B") for i in range(PAIRS)]
        _open(registry, [a for pair in pairs for a in pair])
        _fund(registry, "BULK", {a: 10**8 for pair in pairs for a in pair})
        for number, start in enumerate(range(0, trades, BATCH)):
            a, b = pairs[number % len(pairs)]
            _settle(
                registry,
                [
                    Trade(f"BULK-{n}", *((a, b) if n % 2 else (b, a)), "CEA", 1)
                    for n in range(start, min(trades, start + BATCH))
                ],
            )
    finally:
        registry.close()


def _child(target: str, url: str, count: int, results: Any) -> None:
    started = time.perf_counter()
    try:
        {"histories": write_histories, "bulk": write_bulk}[target](url, count)
    except BaseException as error:
        results.put((target, "failed", repr(error)))
        raise
    results.put((target, "done", time.perf_counter() - started))


def generate(url: str, long_events: int, bulk_trades: int) -> float:
    """Run both writers at once in spawned processes; returns the wall seconds."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    jobs = [("histories", long_events), ("bulk", bulk_trades)]
    processes = [
        ctx.Process(
            target=_child,
            args=(target, url, count, results),
            name=f"bench-generate-{target}",
            daemon=True,
        )
        for target, count in jobs
        if count > 0
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    try:
        for _ in processes:
            try:
                target, status, detail = results.get(timeout=3600)
            except queue.Empty:
                raise RuntimeError("event generation did not finish in an hour") from None
            if status == "failed":
                raise RuntimeError(f"generating {target} failed: {detail}")
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    return time.perf_counter() - started
