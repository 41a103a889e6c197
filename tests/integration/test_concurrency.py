"""Concurrent writers on one PostgreSQL store: threads and OS processes, shared accounts.

Every worker records what it was acknowledged. Afterwards the ledger is audited from a
fresh Registry and from the raw event table:

- conservation: per unit class, issued == held, and serial blocks tile 1..issued exactly;
- every acknowledged transaction is stored once, with the acknowledged status and blocks;
- every account, replayed event by event, never debits units it did not have available,
  never credits units it already had, and balances credits against debits at every version;
- every completed movement debits exactly the blocks it credits; refusals move nothing;
- holds: placed once, ended once, and their account events agree with the hold's.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from registry.application import HoldResult, Registry, Trade, TransactionResult
from registry.bootstrap import build_registry
from registry.domain import units
from registry.domain.accounts import Account, AccountType, Holder
from registry.domain.errors import ConcurrencyConflict, HoldNotActive, RegistryError
from registry.domain.holds import Hold, HoldStatus
from registry.domain.transactions import Transaction
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType
from registry.settings import Settings
from tests.integration.concurrency_worker import (
    ACCOUNTS,
    EXCHANGE,
    ISSUANCE,
    PROJECT_OWNER,
    REGULATOR,
    Ack,
    BlockKey,
    Worker,
    WorkerReport,
    block_keys,
    process_main,
    seed_registry,
)
from tests.support import assert_conserved, fresh_pg_database

pytestmark = pytest.mark.postgres

T = TypeVar("T")

THREADS = 6
THREAD_OPERATIONS = 70
PROCESSES = 4
PROCESS_OPERATIONS = 60
RACERS = 8

TXN_CREATED = ("registry.Transaction.Completed", "registry.Transaction.Refused")


# == running workers ==============================================================


@contextmanager
def registries(url: str, count: int, pool_size: int = 2) -> Iterator[list[Registry]]:
    """``count`` independent Registry instances on one database (each its own cache/pool)."""
    opened: list[Registry] = []
    try:
        for _ in range(count):
            opened.append(build_registry(Settings(url, pool_size=pool_size)))
        yield opened
    finally:
        for registry in opened:
            registry.close()


def run_threads(functions: Sequence[Callable[[], T]]) -> list[T]:
    """Run each function in its own thread, all released at once; re-raise any failure."""
    barrier = threading.Barrier(len(functions))

    def start(function: Callable[[], T]) -> T:
        barrier.wait(timeout=30)
        return function()

    with ThreadPoolExecutor(max_workers=len(functions)) as pool:
        futures = [pool.submit(start, f) for f in functions]
        return [f.result(timeout=120) for f in futures]


@dataclass
class Client:
    """Sends commands as an exchange's client would, counting what went wrong.

    ConcurrencyConflict means "not acknowledged": the same command is sent again. A
    RegistryError is an answer and is raised. Anything else is a finding (recorded, and
    asserted absent at the end of the test) after which the same command is sent again,
    since the caller cannot tell whether anything was stored.
    """

    conflicts: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, command: Callable[[], T]) -> T:
        for _ in range(10):
            try:
                return command()
            except ConcurrencyConflict:
                with self.lock:
                    self.conflicts += 1
            except RegistryError:
                raise
            except Exception as error:
                with self.lock:
                    self.errors.append(f"{type(error).__name__}: {error}")
        raise AssertionError(f"no answer after 10 attempts: {self.errors[-3:]}")


def summarize(title: str, reports: Sequence[WorkerReport], seconds: float) -> str:
    ops: Counter[str] = Counter()
    for report in reports:
        ops.update(report.ops)
    acks = [a for r in reports for a in r.acks]
    statuses = Counter(a.status for a in acks if not a.replayed)
    refusals = Counter(a.refusal_reason for a in acks if a.refusal_reason and not a.replayed)
    total = sum(n for op, n in ops.items() if "-with-" not in op)  # sub-counts excluded
    line = (
        f"{title}: {len(reports)} workers, {total} operations "
        f"{dict(sorted(ops.items()))} in {seconds:.1f}s; {len(acks)} acks "
        f"({sum(a.replayed for a in acks)} replays, {dict(statuses)}, refusals "
        f"{dict(refusals)}); {sum(len(r.holds) for r in reports)} holds; "
        f"ConcurrencyConflict {sum(r.conflicts for r in reports)}, abandoned "
        f"{sum(len(r.abandoned) for r in reports)}"
    )
    print(line)
    return line


# == reading the raw store ==========================================================


@dataclass(frozen=True)
class Row:
    originator_id: UUID
    version: int
    topic: str
    state: bytes
    notification_id: int

    def json(self) -> dict[str, Any]:
        data = json.loads(self.state)
        assert isinstance(data, dict)
        return data


def read_rows(url: str) -> list[Row]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT originator_id, originator_version, topic, state, notification_id "
            "FROM registry_events ORDER BY notification_id"
        ).fetchall()
    return [Row(UUID(str(r[0])), r[1], r[2], bytes(r[3]), r[4]) for r in rows]


def count_snapshots(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM registry_snapshots").fetchone()
    assert row is not None
    return int(row[0])


def stored_blocks(state: dict[str, Any]) -> tuple[BlockKey, ...]:
    """Blocks as the transcoder wrote them: {"_type_": "block", "_data_": [key, a, b]}."""
    blocks = []
    for item in state.get("blocks", []):
        assert item["_type_"] == "block", item
        key, first, last = item["_data_"]
        blocks.append((key, first, last))
    return tuple(blocks)


# == auditing =========================================================================


def within(blocks: Iterable[SerialBlock], holding: Iterable[SerialBlock]) -> bool:
    """Every serial of ``blocks`` is in ``holding``, and ``blocks`` do not overlap."""
    blocks = list(blocks)
    holding = list(holding)
    try:
        units.merge(blocks)
    except ValueError:
        return False
    return all(
        any(
            h.unit_class == b.unit_class and h.first <= b.first and b.last <= h.last
            for h in holding
        )
        for b in blocks
    )


def disjoint(blocks: Iterable[SerialBlock], holding: Iterable[SerialBlock]) -> bool:
    return not any(b.overlaps(h) for b in blocks for h in holding)


def by_class(blocks: Iterable[SerialBlock]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for block in blocks:
        totals[block.unit_class.key] += block.quantity
    return totals


State = tuple[tuple[SerialBlock, ...], dict[str, tuple[SerialBlock, ...]]]


def state_of(account: Account) -> State:
    return (units.merge(account.available), {k: units.merge(v) for k, v in account.held.items()})


@dataclass
class Movements:
    """Account events by transaction and by hold, collected while replaying accounts."""

    debits: dict[UUID, list[tuple[str, tuple[SerialBlock, ...]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    credits: dict[UUID, list[tuple[str, tuple[SerialBlock, ...]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    held: dict[UUID, list[tuple[str, tuple[SerialBlock, ...]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    released: dict[UUID, list[tuple[SerialBlock, ...]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    hold_debits: dict[UUID, list[tuple[UUID, tuple[SerialBlock, ...], tuple[SerialBlock, ...]]]] = (
        field(default_factory=lambda: defaultdict(list))
    )
    versions: int = 0


def replay_account(registry: Registry, events: list[Any], moves: Movements) -> None:
    """Re-apply one account's stored events in order, checking every version."""
    account: Account | None = None
    states: list[State] = []
    credited: Counter[str] = Counter()
    debited: Counter[str] = Counter()
    for expected_version, event in enumerate(events, start=1):
        assert event.originator_version == expected_version, "gap in the account's versions"
        available = tuple(account.available) if account else ()
        held = dict(account.held) if account else {}
        name = account.account_id if account else "(new)"
        where = f"{name} v{expected_version} {type(event).__name__}"
        if isinstance(event, Account.MovementsPosted):  # a batch's debits and credits
            running = available
            for movement in event.movements:
                txn_id = movement["transaction_id"]
                if "debited" in movement:
                    blocks = tuple(movement["debited"])
                    assert within(blocks, running), f"{where}: debits units not available"
                    moves.debits[txn_id].append((name, blocks))
                    debited.update(by_class(blocks))
                    running = units.remove(running, blocks)
                else:
                    blocks = tuple(movement["credited"])
                    assert disjoint(blocks, [*running, *(b for v in held.values() for b in v)]), (
                        f"{where}: credits units it already holds"
                    )
                    moves.credits[txn_id].append((name, blocks))
                    credited.update(by_class(blocks))
                    running = units.add(running, blocks)
        elif isinstance(event, Account.Debited):
            assert within(event.blocks, available), f"{where}: debits units not available"
            moves.debits[event.transaction_id].append((name, tuple(event.blocks)))
            debited.update(by_class(event.blocks))
        elif isinstance(event, Account.Credited):
            assert disjoint(event.blocks, [*available, *(b for v in held.values() for b in v)]), (
                f"{where}: credits units it already holds"
            )
            moves.credits[event.transaction_id].append((name, tuple(event.blocks)))
            credited.update(by_class(event.blocks))
        elif isinstance(event, Account.UnitsHeld):
            assert str(event.hold_id) not in held, f"{where}: hold placed twice"
            assert within(event.blocks, available), f"{where}: holds units not available"
            moves.held[event.hold_id].append((name, tuple(event.blocks)))
        elif isinstance(event, Account.HoldReleased):
            assert units.merge(event.blocks) == units.merge(held[str(event.hold_id)]), where
            moves.released[event.hold_id].append(tuple(event.blocks))
        elif isinstance(event, Account.HeldUnitsDebited):
            was_held = units.merge(held[str(event.hold_id)])
            assert units.merge([*event.blocks, *event.released]) == was_held, (
                f"{where}: settled + released != held"
            )
            moves.debits[event.transaction_id].append((name, tuple(event.blocks)))
            moves.hold_debits[event.hold_id].append(
                (event.transaction_id, tuple(event.blocks), tuple(event.released))
            )
            debited.update(by_class(event.blocks))
        account = event.mutate(account)
        assert account is not None
        held_blocks = list(account.held_blocks)
        units.merge([*account.available, *held_blocks])  # raises on overlapping serials
        available_qty, held_qty = by_class(account.available), by_class(held_blocks)
        for key in {*credited, *debited, *available_qty, *held_qty}:
            assert available_qty[key] >= 0 and held_qty[key] >= 0, where
            assert available_qty[key] + held_qty[key] == credited[key] - debited[key], (
                f"{where}: {key} holding {available_qty[key]}+{held_qty[key]} != "
                f"credited {credited[key]} - debited {debited[key]}"
            )
        states.append(state_of(account))
    assert account is not None
    moves.versions += len(events)
    # The application's own reconstruction (snapshots included) agrees at every probe.
    latest: Account = registry.repository.get(account.id)
    assert latest.version == len(events)
    assert state_of(latest) == states[-1], f"{account.account_id}: latest state differs"
    probes = {1, len(events), len(events) // 2}
    for step in range(200, len(events) + 1, 200):  # around each snapshot interval
        probes.update({step - 1, step, step + 1})
    probes.update(
        random.Random(account.account_id).sample(range(1, len(events) + 1), min(5, len(events)))
    )
    for version in sorted(v for v in probes if 1 <= v <= len(events)):
        past: Account = registry.repository.get(account.id, version=version)
        assert state_of(past) == states[version - 1], f"{account.account_id} v{version}"


def merged(entries: Iterable[tuple[str, tuple[SerialBlock, ...]]]) -> tuple[SerialBlock, ...]:
    return units.merge(b for _, blocks in entries for b in blocks)


def audit(
    url: str, seeded: dict[str, int], reports: Sequence[WorkerReport]
) -> tuple[dict[str, int], Movements]:
    """Check the whole ledger against itself and against what the workers were told."""
    rows = read_rows(url)
    with registries(url, 1) as (registry,):
        stats, moves = _audit(registry, rows, seeded, reports)
    stats["snapshots"] = count_snapshots(url)
    return stats, moves


def _audit(
    registry: Registry, rows: list[Row], seeded: dict[str, int], reports: Sequence[WorkerReport]
) -> tuple[dict[str, int], Movements]:
    acks = [a for r in reports for a in r.acks]
    abandoned = {what for r in reports for what in r.abandoned}

    # -- conservation, and serial blocks tiling 1..issued per class ----------------
    issued_expected = Counter(seeded)
    first_acks = {(a.party, a.transaction_id): a for a in reversed(acks)}
    for ack in first_acks.values():
        if ack.kind == "ISSUANCE" and ack.status == "COMPLETED":
            issued_expected[ack.blocks[0][0]] += ack.quantity
    assert_conserved(registry)
    supply = registry.supply()
    assert {line.unit_class.key: line.issued for line in supply} == dict(issued_expected)
    blocks_by_class: dict[str, list[SerialBlock]] = defaultdict(list)
    active_held: dict[str, int] = {}
    for account_id in registry.account_ids():
        for holding in registry.get_holdings(account_id):
            assert holding.total == holding.held + holding.available >= 0
            assert holding.held >= 0 and holding.available >= 0
            assert holding.total == units.total(holding.blocks)
            blocks_by_class[holding.unit_class.key].extend(holding.blocks)
            if holding.held:
                active_held[account_id] = active_held.get(account_id, 0) + holding.held
    for key, blocks in blocks_by_class.items():
        ordered = sorted(blocks, key=lambda b: b.first)
        for before, after in pairwise(ordered):
            assert before.last < after.first, f"{key}: {before} overlaps {after}"
        assert (
            ordered[0].first == 1
            and sum(b.quantity for b in ordered) == issued_expected[key] == ordered[-1].last
        ), f"{key}: serials do not tile 1..issued"

    # -- the raw store: one creation event per transaction ------------------------
    created: dict[UUID, list[Row]] = defaultdict(list)
    for row in rows:
        if row.topic in TXN_CREATED:
            created[row.originator_id].append(row)
            assert row.version == 1
    assert all(len(found) == 1 for found in created.values())

    # -- every acknowledged transaction: stored once, as acknowledged --------------
    by_id: dict[tuple[str, str], list[Ack]] = defaultdict(list)
    for ack in acks:
        by_id[(ack.party, ack.transaction_id)].append(ack)
    for (party, client_id), answers in by_id.items():
        first = answers[0]
        assert sum(not a.replayed for a in answers) <= 1, f"{client_id} moved twice: {answers}"
        for answer in answers:
            assert (
                answer.kind,
                answer.status,
                answer.source,
                answer.destination,
                answer.blocks,
            ) == (first.kind, first.status, first.source, first.destination, first.blocks), (
                f"{client_id}: two answers disagree: {first} / {answer}"
            )
        recorded = registry.get_transaction(party, client_id)
        assert (
            recorded.status.value,
            block_keys(recorded.blocks),
            recorded.source,
            recorded.destination,
        ) == (first.status, first.blocks, first.source, first.destination), (
            f"{client_id}: {recorded}"
        )
        txn_id = Transaction.id_for(party, client_id)
        (row,) = created[txn_id]
        assert row.topic == f"registry.Transaction.{first.status.title()}"
        assert stored_blocks(row.json()) == first.blocks
        assert row.json()["client_id"] == client_id
    acked_ids = {Transaction.id_for(p, c) for p, c in by_id}
    for txn_id, (row,) in created.items():
        state = row.json()
        if txn_id not in acked_ids:
            assert state["client_id"].startswith("SEED-"), (
                f"stored but never acknowledged: {state['client_id']} "
                f"(abandoned: {sorted(abandoned)[:5]})"
            )
    completed_acked = sum(a.quantity for a in first_acks.values() if a.status == "COMPLETED")
    completed_stored = sum(
        sum(b[2] - b[1] + 1 for b in stored_blocks(created[t][0].json()))
        for t in acked_ids
        if created[t][0].topic == "registry.Transaction.Completed"
    )
    assert completed_acked == completed_stored

    # -- every account, version by version ------------------------------------------
    events_by_originator: dict[UUID, list[Row]] = defaultdict(list)
    for row in rows:
        events_by_originator[row.originator_id].append(row)
    account_ids = {r.originator_id for r in rows if r.topic == "registry.Account.Opened"}
    moves = Movements()
    for originator_id in account_ids:
        stored = sorted(events_by_originator[originator_id], key=lambda r: r.version)
        events = [
            registry.mapper.to_domain_event(
                StoredEvent(
                    originator_id=r.originator_id,
                    originator_version=r.version,
                    topic=r.topic,
                    state=r.state,
                )
            )
            for r in stored
        ]
        replay_account(registry, events, moves)

    # -- every transaction: completed ones debit exactly what they credit -----------
    transactions: dict[UUID, Any] = {}
    for txn_id, (row,) in created.items():
        txn = registry.mapper.to_domain_event(
            StoredEvent(
                originator_id=row.originator_id,
                originator_version=row.version,
                topic=row.topic,
                state=row.state,
            )
        )
        transactions[txn_id] = txn
        out, into = moves.debits.get(txn_id, []), moves.credits.get(txn_id, [])
        if isinstance(txn, Transaction.Refused):
            assert not out and not into, f"refused {txn.client_id} moved units"
            continue
        assert isinstance(txn, Transaction.Completed)
        txn_blocks = units.merge(txn.blocks)
        assert units.total(txn_blocks) == txn.details["quantity"], txn.client_id
        assert [a for a, _ in into] == [txn.destination] and merged(into) == txn_blocks, (
            f"{txn.client_id}: credited {into}, recorded {txn.destination} {txn_blocks}"
        )
        if txn.kind == "ISSUANCE":
            assert not out and txn.destination in (ISSUANCE, PROJECT_OWNER)
        else:
            assert [a for a, _ in out] == [txn.source] and merged(out) == txn_blocks, (
                f"{txn.client_id}: debited {out}, recorded {txn.source} {txn_blocks}"
            )
    completed_ids = {t for t, e in transactions.items() if isinstance(e, Transaction.Completed)}
    assert set(moves.debits) <= completed_ids and set(moves.credits) <= completed_ids

    # -- holds: the hold's events and the account's agree --------------------------
    hold_rows = [r for r in rows if r.topic.startswith("registry.Hold.")]
    placed = {r.originator_id for r in hold_rows if r.topic == "registry.Hold.Placed"}
    refused = {r.originator_id for r in hold_rows if r.topic == "registry.Hold.Refused"}
    assert set(moves.held) == placed and not placed & refused
    for hold_id in placed:
        ((account_name, held_blocks),) = moves.held[hold_id]
        hold: Hold = registry.repository.get(hold_id)
        assert isinstance(hold, Hold)
        assert hold.account_id == account_name and units.total(held_blocks) == hold.quantity
        ends = len(moves.released[hold_id]) + len(moves.hold_debits[hold_id])
        if hold.status is HoldStatus.ACTIVE:
            assert ends == 0
        elif hold.status is HoldStatus.SETTLED:
            ((txn_id, taken, freed),) = moves.hold_debits[hold_id]
            assert ends == 1 and txn_id == hold.settled_by
            assert units.total(taken) == hold.settled_quantity
            assert units.total(freed) == hold.quantity - hold.settled_quantity
            assert within(taken, held_blocks)
        else:
            assert hold.status in (HoldStatus.RELEASED, HoldStatus.EXPIRED)
            assert ends == 1 and len(moves.released[hold_id]) == 1
    still_held = sum(
        registry.repository.get(h).quantity
        for h in placed
        if registry.repository.get(h).status is HoldStatus.ACTIVE
    )
    assert sum(active_held.values()) == still_held

    # -- holds as the workers were told ------------------------------------------------
    for report in reports:
        for record in report.holds:
            hold_now = registry.get_hold(record.party, record.hold_id)
            assert hold_now.quantity == record.quantity
            expected = record.ended_as or record.status
            assert hold_now.status.value == expected, (record, hold_now)
            if record.ended_as == "SETTLED":
                assert hold_now.settled_quantity == record.settled_quantity
                settlement = registry.get_transaction(record.party, record.settled_by)
                assert within(
                    settlement.blocks,
                    [SerialBlock(UnitClass.from_key(k), a, b) for k, a, b in record.blocks],
                )

    return {
        "events": len(rows),
        "account_versions": moves.versions,
        "transactions": len(created),
        "completed": len(completed_ids),
        "holds": len(placed) + len(refused),
    }, moves


def assert_no_worker_errors(reports: Sequence[WorkerReport]) -> None:
    """Asserted last, after the audit: a failure here is a command that raised something
    other than a registry answer (the worker then resent it with the same ids)."""
    errors = [f"{r.worker}: {e}" for r in reports for e in r.errors]
    assert errors == [], (
        f"{len(errors)} commands failed with errors that are not registry "
        "answers:\n" + "\n".join(errors[:20])
    )


# == the tests ====================================================================


def test_threads_on_shared_accounts_keep_the_ledger_exact() -> None:
    """Six threads, over two Registry instances (three threads share each one's cache),
    transfer, settle, batch-settle, hold/settle/release and replay on five accounts."""
    with fresh_pg_database() as url:
        with registries(url, 1) as (setup,):
            seeded = seed_registry(setup)
        started = time.monotonic()
        with registries(url, 2, pool_size=4) as shared:
            workers = [Worker(shared[i % 2], f"T{i}", seed=1000 + i) for i in range(THREADS)]
            reports = run_threads([partial(w.run, THREAD_OPERATIONS) for w in workers])
        seconds = time.monotonic() - started
        summarize("threads", reports, seconds)
        stats, _ = audit(url, seeded, reports)
        print(f"threads audit: {stats}")
        assert sum(len(r.acks) for r in reports) >= THREADS * THREAD_OPERATIONS // 2
        assert_no_worker_errors(reports)


def test_processes_on_shared_accounts_keep_the_ledger_exact(tmp_path: Path) -> None:
    """Four spawned OS processes, each with its own Registry, the same mix on the same
    accounts; they report their acknowledgements as JSON files. (Their registries are
    built one after the other; building them at once is the startup test's subject.)"""
    with fresh_pg_database() as url:
        with registries(url, 1) as (setup,):
            seeded = seed_registry(setup)
        context = multiprocessing.get_context("spawn")
        barrier, startup = context.Barrier(PROCESSES), context.Lock()
        outputs = [tmp_path / f"worker-{i}.json" for i in range(PROCESSES)]
        processes = [
            context.Process(
                target=process_main,
                args=(
                    url,
                    f"P{i}",
                    2000 + i,
                    PROCESS_OPERATIONS,
                    startup,
                    barrier,
                    str(outputs[i]),
                ),
            )
            for i in range(PROCESSES)
        ]
        started = time.monotonic()
        for process in processes:
            process.start()
        deadline = started + 120
        try:
            for process in processes:
                process.join(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                    process.join(5)
        seconds = time.monotonic() - started
        assert [p.exitcode for p in processes] == [0] * PROCESSES
        reports = [WorkerReport.from_json(json.loads(p.read_text())) for p in outputs]
        summarize("processes", reports, seconds)
        stats, _ = audit(url, seeded, reports)
        print(f"processes audit: {stats}")
        assert sum(len(r.acks) for r in reports) >= PROCESSES * PROCESS_OPERATIONS // 2
        assert_no_worker_errors(reports)


def test_one_trade_settled_by_many_threads_at_once_moves_once() -> None:
    """Eight threads, each with its own Registry, settle the same trade id (same content)
    at the same instant, half through settle_trade and half through settle_trades: one is
    the first (replayed=False), the others are replays, and the units move once. Six
    rounds: any CEA, one vintage, and against a hold, twice each."""
    with fresh_pg_database() as url:
        with registries(url, 1) as (setup,):
            seeded = seed_registry(setup)
            for n, account in ((1, "TRD-CC-03"), (2, "TRD-CC-05")):
                hold = setup.place_hold(
                    EXCHANGE, f"RACE-HOLD-{n}", account, UnitSelector(UnitType.CEA, 2025), 90, 3600
                )
                assert hold.status is HoldStatus.ACTIVE
        rounds = [
            Trade("RACE-0001", "TRD-CC-01", "TRD-CC-02", "CEA", 137),
            Trade("RACE-0002", "TRD-CC-02", "TRD-CC-04", "CEA", 55, 2025),
            Trade("RACE-0003", "TRD-CC-03", "TRD-CC-05", "CEA", 60, 2025, hold_id="RACE-HOLD-1"),
            Trade("RACE-0004", "TRD-CC-04", "TRD-CC-01", "CEA", 210),
            Trade("RACE-0005", "TRD-CC-01", "TRD-CC-03", "CEA", 42, 2024),
            Trade("RACE-0006", "TRD-CC-05", "TRD-CC-02", "CEA", 90, 2025, hold_id="RACE-HOLD-2"),
        ]
        client = Client()
        reports = [WorkerReport("racers")]
        with registries(url, RACERS, pool_size=1) as racers:
            for trade in rounds:
                before = {a: _total(racers[0], a) for a in (trade.seller, trade.buyer)}

                def settle(
                    registry: Registry, index: int, trade: Trade = trade
                ) -> TransactionResult:
                    if index % 2:
                        return client.send(lambda: registry.settle_trade(EXCHANGE, trade))
                    (result,) = client.send(lambda: registry.settle_trades(EXCHANGE, [trade]))
                    assert result.transaction is not None, result
                    return result.transaction

                results = run_threads([partial(settle, r, i) for i, r in enumerate(racers)])
                reports[0].acks.extend(Ack.of("race", r) for r in results)
                assert sorted(r.replayed for r in results) == [False] + [True] * (RACERS - 1)
                assert {(r.status.value, block_keys(r.blocks)) for r in results} == {
                    ("COMPLETED", block_keys(results[0].blocks))
                }
                assert results[0].quantity == trade.quantity
                after = {a: _total(racers[0], a) for a in (trade.seller, trade.buyer)}
                assert after[trade.seller] == before[trade.seller] - trade.quantity
                assert after[trade.buyer] == before[trade.buyer] + trade.quantity
            for n, quantity in ((1, 60), (2, 90)):
                settled = racers[0].get_hold(EXCHANGE.party, f"RACE-HOLD-{n}")
                assert (settled.status, settled.settled_quantity) == (HoldStatus.SETTLED, quantity)
        print(
            f"same trade id x{RACERS}: {len(rounds)} rounds, ConcurrencyConflict "
            f"{client.conflicts}, other failures {len(client.errors)}"
        )
        rows = read_rows(url)
        _, moves = audit(url, seeded, reports)
        for trade in rounds:
            txn_id = Transaction.id_for(EXCHANGE.party, trade.trade_id)
            assert [r.topic for r in rows if r.originator_id == txn_id] == [
                "registry.Transaction.Completed"
            ]
            ((seller, taken),) = moves.debits[txn_id]
            ((buyer, given),) = moves.credits[txn_id]
            assert (seller, buyer) == (trade.seller, trade.buyer)
            assert units.total(taken) == units.total(given) == trade.quantity
            if trade.hold_id:
                hold_uuid = Hold.id_for(EXCHANGE.party, trade.hold_id)
                assert [t for t, _, _ in moves.hold_debits[hold_uuid]] == [txn_id]
        assert client.errors == [], (
            "racers saw failures that are not registry answers:\n" + "\n".join(client.errors)
        )


def test_many_threads_cannot_spend_more_than_an_account_holds() -> None:
    """Eight threads (own Registry each) send sixteen transfers and trades that together
    ask for 2-3x what one account holds: completed debits never exceed the balance, every
    other one is refused INSUFFICIENT_UNITS, and each refused one asked for more than was
    left at the end."""
    balance = 100
    seller = "TRD-SPEND-01"
    with fresh_pg_database() as url:
        with registries(url, 1) as (setup,):
            seeded = seed_registry(setup)
            setup.open_account(REGULATOR, seller, AccountType.TRADING, Holder("Spender Ltd"))
            funded = setup.transfer(
                REGULATOR,
                "FUND-SPEND-01",
                ISSUANCE,
                seller,
                UnitSelector(UnitType.CEA, 2025),
                balance,
                "funding",
            )
            assert funded.ok
        rng = random.Random(7)
        quantities = [[rng.randint(5, 40) for _ in range(2)] for _ in range(RACERS)]
        assert sum(map(sum, quantities)) > 2 * balance
        client = Client()

        def spend(registry: Registry, index: int) -> list[TransactionResult]:
            results = []
            for n, quantity in enumerate(quantities[index]):
                buyer = ACCOUNTS[(index + n) % len(ACCOUNTS)]
                trade = Trade(f"SPEND-{index}-{n}", seller, buyer, "CEA", quantity, 2025)

                def send(
                    trade: Trade = trade, as_trade: bool = bool((index + n) % 2)
                ) -> TransactionResult:
                    if as_trade:
                        return registry.settle_trade(EXCHANGE, trade)
                    return registry.transfer(
                        EXCHANGE,
                        trade.trade_id,
                        seller,
                        trade.buyer,
                        UnitSelector(UnitType.CEA),
                        trade.quantity,
                        "spend",
                    )

                results.append(client.send(send))
            return results

        with registries(url, RACERS, pool_size=1) as racers:
            outcome = run_threads([partial(spend, r, i) for i, r in enumerate(racers)])
            left = racers[0].get_holdings(seller)
        results = [r for batch in outcome for r in batch]
        completed = [r for r in results if r.ok]
        refused = [r for r in results if not r.ok]
        spent = sum(r.quantity for r in completed)
        remaining = sum(h.available for h in left)
        print(
            f"overspend: {len(completed)} completed ({spent} of {balance}), "
            f"{len(refused)} refused, ConcurrencyConflict {client.conflicts}, "
            f"other failures {len(client.errors)}"
        )
        assert sum(r.replayed for r in results) <= len(client.errors)
        assert spent <= balance and remaining == balance - spent
        assert completed and refused
        assert {r.refusal_reason for r in refused} == {"INSUFFICIENT_UNITS"}
        for result in refused:
            asked = result.details["quantity"]
            assert asked > remaining, f"{result.transaction_id} refused {asked}, {remaining} left"
        funding = Ack.of("setup", funded)
        reports = [WorkerReport("spenders", [funding, *(Ack.of("spend", r) for r in results)])]
        audit(url, seeded, reports)
        assert client.errors == [], (
            "spenders saw failures that are not registry answers:\n" + "\n".join(client.errors)
        )


def test_releasing_a_hold_while_it_settles_ends_it_once() -> None:
    """Per round, four threads settle one trade against a hold while four others release
    that hold (each thread its own Registry). Whichever lands first wins outright: either
    the trade completed once and every release is refused HOLD_NOT_ACTIVE, or the hold was
    released once and the trade is recorded refused HOLD_NOT_ACTIVE."""
    rounds = 10
    with fresh_pg_database() as url:
        with registries(url, 1) as (setup,):
            seeded = seed_registry(setup)
            for n in range(rounds):
                placed = setup.place_hold(
                    EXCHANGE,
                    f"DUEL-HOLD-{n}",
                    ACCOUNTS[n % 5],
                    UnitSelector(UnitType.CEA, 2025),
                    40,
                    3600,
                )
                assert placed.status is HoldStatus.ACTIVE
        client = Client()
        reports = [WorkerReport("duellists")]
        winners: Counter[str] = Counter()
        with registries(url, RACERS, pool_size=1) as racers:
            for n in range(rounds):
                hold_id, seller = f"DUEL-HOLD-{n}", ACCOUNTS[n % 5]
                trade = Trade(
                    f"DUEL-{n}", seller, ACCOUNTS[(n + 1) % 5], "CEA", 25, 2025, hold_id=hold_id
                )

                def act(
                    registry: Registry,
                    index: int,
                    trade: Trade = trade,
                    hold_id: str = hold_id,
                    round_: int = n,
                ) -> Any:
                    if (index + round_) % 2:  # alternate who is released first
                        return client.send(lambda: registry.settle_trade(EXCHANGE, trade))
                    try:
                        return client.send(
                            lambda: registry.release_hold(EXCHANGE, hold_id, "order cancelled")
                        )
                    except HoldNotActive as refusal:
                        return refusal

                answers = run_threads([partial(act, r, i) for i, r in enumerate(racers)])
                settles = [a for a in answers if isinstance(a, TransactionResult)]
                releases = [a for a in answers if isinstance(a, HoldResult)]
                refusals = [a for a in answers if isinstance(a, HoldNotActive)]
                reports[0].acks.extend(Ack.of("duel", s) for s in settles)
                assert len(settles) == RACERS // 2
                assert sum(not s.replayed for s in settles) == 1
                final = racers[0].get_hold(EXCHANGE.party, hold_id)
                held_now = sum(h.held for h in racers[0].get_holdings(seller))
                if final.status is HoldStatus.SETTLED:
                    winners["settlement"] += 1
                    assert {s.status.value for s in settles} == {"COMPLETED"}
                    assert {s.quantity for s in settles} == {25}
                    assert releases == [] and len(refusals) == RACERS // 2
                else:
                    winners["release"] += 1
                    assert final.status is HoldStatus.RELEASED
                    assert {(s.status.value, s.refusal_reason) for s in settles} == {
                        ("REFUSED", "HOLD_NOT_ACTIVE")
                    }
                    assert refusals == [] and len(releases) == RACERS // 2
                    assert sum(not r.replayed for r in releases) == 1
                assert held_now == sum(
                    racers[0].get_hold(EXCHANGE.party, f"DUEL-HOLD-{m}").quantity
                    for m in range(n + 1, rounds)
                    if m % 5 == n % 5
                )
        print(
            f"release vs settlement x{rounds}: winners {dict(winners)}, ConcurrencyConflict "
            f"{client.conflicts}, other failures {len(client.errors)}"
        )
        audit(url, seeded, reports)
        assert client.errors == [], (
            "duellists saw failures that are not registry answers:\n" + "\n".join(client.errors)
        )


def test_registries_started_at_once_on_one_database_all_start() -> None:
    """Eight Registry instances built at the same instant on one initialised database (as
    replicas of a service starting together) must all start."""
    with fresh_pg_database() as url:
        with registries(url, 1):
            pass  # the store's tables exist, as after a first deployment

        def start() -> str:
            try:
                build_registry(Settings(url, pool_size=1)).close()
            except Exception as error:
                return f"{type(error).__module__}.{type(error).__name__}: {error}"
            return "started"

        outcomes = run_threads([start] * RACERS)
        assert outcomes == ["started"] * RACERS


def _total(registry: Registry, account_id: str) -> int:
    return sum(h.total for h in registry.get_holdings(account_id))
