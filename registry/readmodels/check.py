"""Reconciliation: every read model compared with the event store, difference by difference.

The expected rows are recomputed from the write side (the Account, Transaction and
SerialCounter aggregates, read through the registry's own queries, and the log's
notification ids for positions), never from projection code: a bug in a projection
cannot then hide itself by being repeated in its check. Transaction aggregates, the
bulk of a registry, are replayed in one pass over the log with the library's own
projector (what ``repository.get`` does for each, minus a query and a deep copy per
aggregate: ten times faster).

A comparison only means something when the projections have applied exactly the log
the aggregates are read from. ``reconcile`` therefore first requires every projection to
be at the head of the log (and reports lag as a difference instead of comparing), and it
reports a store that moved while it read. ``check`` catches the projections up first and
retries a moved store; the ``registry check`` command uses it.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.persistence import Notification
from sqlalchemy import Connection, Engine, Table, select

from registry.application import Registry
from registry.domain.accounts import Account
from registry.domain.conservation import imbalances, per_class
from registry.domain.serials import SerialCounter
from registry.domain.transactions import Transaction, TransactionStatus
from registry.domain.units import SerialBlock
from registry.readmodels import tables as t
from registry.readmodels.runner import ProjectionRunner, all_projections

A = TypeVar("A")
Key = tuple[Any, ...]
Row = dict[str, Any]
Ranges = list[tuple[int, int]]

SCAN_PAGE = 1000
STATE_TOPICS = (
    Account.Opened.TOPIC,
    Account.Frozen.TOPIC,
    Account.Unfrozen.TOPIC,
    Account.Closed.TOPIC,
)
TRANSACTION_TOPICS = (
    Transaction.Completed.TOPIC,
    Transaction.Refused.TOPIC,
    Transaction.Reversed.TOPIC,
)


@dataclass(frozen=True)
class Difference:
    """One way a read model disagrees with the event store.

    ``key`` names the table and the row (or group of rows) in it, e.g.
    ``rm_holdings CMP-1 CEA/2025`` or ``rm_transactions exchange T-17``;
    ``expected`` is what the aggregates say, ``actual`` what the read model holds
    (None for a missing or an unexpected row).
    """

    projection: str
    key: str
    expected: Any
    actual: Any
    message: str

    def __str__(self) -> str:
        return (
            f"{self.projection} [{self.key}] {self.message}: "
            f"expected {self.expected!r}, read model has {self.actual!r}"
        )


@dataclass(frozen=True)
class Report:
    """What a reconciliation compared (rows and groups of rows) and what differed."""

    checks: int
    differences: tuple[Difference, ...]

    @property
    def ok(self) -> bool:
        return not self.differences


MOVED = "the event store or the read models moved during the check"


def check(runner: ProjectionRunner, attempts: int = 3) -> Report:
    """Catch the projections up with ``runner`` (``registry.bootstrap.build_worker``),
    then reconcile; retry when writes land meanwhile."""
    report = Report(0, ())
    for _ in range(attempts):
        runner.catch_up()
        report = compare(runner.registry, runner.engine)
        if not any(d.message.startswith(MOVED) for d in report.differences):
            return report
    return report


def reconcile(registry: Registry, engine: Engine) -> list[Difference]:
    """Every difference between the read models and the event store (empty: equal)."""
    return list(compare(registry, engine).differences)


def compare(registry: Registry, engine: Engine) -> Report:
    """Like ``reconcile``, with the number of checks made (rows and groups compared)."""
    names = [p.name for p in all_projections(registry)]
    head = _head(registry)
    with engine.connect() as conn:
        before = _positions(conn, names)
        behind = [
            Difference(
                "tracking",
                name,
                head,
                before.get(name),
                "projection is not at the head of the event log; catch it up "
                "(ProjectionRunner.catch_up) before checking",
            )
            for name in names
            if before.get(name) != head
        ]
        if behind:
            return Report(len(names), tuple(behind))
        actual = {table.name: _rows(conn, table) for table in t.metadata.sorted_tables}
        after = _positions(conn, names)
    expected = _Expected(registry, head)
    now = _head(registry)
    if now != head or after != before:
        return Report(
            len(names),
            (
                Difference(
                    "tracking",
                    "head",
                    head,
                    now,
                    f"{MOVED}; run it again (or when writes are quiet)",
                ),
            ),
        )
    checker = _Checker()
    checker.compare_rows(
        "accounts",
        "rm_accounts",
        expected.accounts,
        actual[t.accounts.name],
        _fields(t.accounts, 1),
    )
    checker.compare_rows(
        "holdings",
        "rm_holdings",
        expected.holdings,
        _non_zero(actual[t.holdings.name], ("total", "held", "available")),
        _fields(t.holdings, 2),
    )
    checker.compare_rows(
        "supply",
        "rm_supply",
        expected.supply,
        _non_zero(actual[t.supply.name], ("total", "held")),
        _fields(t.supply, 2),
    )
    checker.compare_rows(
        "supply", "rm_issued", expected.issued, actual[t.issued.name], _fields(t.issued, 1)
    )
    checker.conservation(expected.issued, actual[t.holdings.name])
    checker.compare_rows(
        "transactions",
        "rm_transactions",
        expected.transactions,
        _decoded(actual[t.transactions.name], ("blocks", "details")),
        _fields(t.transactions, 2),
    )
    checker.compare_rows(
        "history",
        "rm_account_history",
        expected.history,
        _decoded(actual[t.history.name], ("blocks",)),
        _fields(t.history, 4),
    )
    checker.history_balances(expected.totals, actual[t.history.name])
    checker.compare_rows(
        "serials",
        "rm_serial_movements",
        expected.movements,
        actual[t.serial_movements.name],
        _fields(t.serial_movements, 3),
    )
    checker.serial_locations(expected.ranges, actual[t.serial_blocks.name])
    return Report(checker.checks, tuple(checker.differences))


# == what the event store says ====================================================


class _Expected:
    """Every read-model row recomputed from aggregates and log positions up to ``head``."""

    def __init__(self, registry: Registry, head: int) -> None:
        self.accounts: dict[Key, Row] = {}
        self.holdings: dict[Key, Row] = {}
        self.supply: dict[Key, Row] = {}
        self.issued: dict[Key, Row] = {}
        self.transactions: dict[Key, Row] = {}
        self.history: dict[Key, Row] = {}
        self.movements: dict[Key, Row] = {}
        self.totals: dict[Key, int] = {}
        self.ranges: dict[Key, Ranges] = {}
        """Merged serial ranges per (unit class, account)."""

        last_change: dict[UUID, int] = {}
        created: dict[UUID, int] = {}
        transactions: dict[UUID, Transaction] = {}
        for notification in _notifications(registry, head, (*STATE_TOPICS, *TRANSACTION_TOPICS)):
            originator = UUID(str(notification.originator_id))
            if notification.topic in STATE_TOPICS:
                last_change[originator] = notification.id
                continue
            if notification.topic != Transaction.Reversed.TOPIC:
                created[originator] = notification.id
            event = registry.mapper.to_domain_event(notification)
            txn = project_aggregate(transactions.get(originator), [event])
            assert isinstance(txn, Transaction), notification
            transactions[originator] = txn
        self._accounts(registry, last_change)
        self._issued(registry)
        for originator, position in created.items():
            self._transaction(transactions, position, transactions[originator])

    def _accounts(self, registry: Registry, last_change: Mapping[UUID, int]) -> None:
        supply: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
        for account_id in registry.account_ids():
            view = registry.get_account(account_id)
            holder = view.holder
            self.accounts[(account_id,)] = {
                "account_uuid": str(Account.id_for(account_id)),
                "account_type": view.account_type.value,
                "state": view.state.value,
                "holder_name": holder.get("name", ""),
                "credit_code": holder.get("credit_code", ""),
                "sector": holder.get("sector", ""),
                "province": holder.get("province", ""),
                "opened_at": _utc(view.opened_at),
                "position": last_change.get(Account.id_for(account_id)),
            }
            for holding in registry.get_holdings(account_id):
                unit_class = holding.unit_class
                key = unit_class.key
                self.holdings[(account_id, key)] = {
                    "unit_type": unit_class.unit_type.value,
                    "vintage": unit_class.vintage,
                    "project": unit_class.project,
                    "total": holding.total,
                    "held": holding.held,
                    "available": holding.available,
                }
                self.totals[(account_id, key)] = holding.total
                self.ranges[(key, account_id)] = [(b.first, b.last) for b in holding.blocks]
                line = supply[(key, view.account_type.value)]
                line[0] += holding.total
                line[1] += holding.held
        self.supply = {key: {"total": total, "held": held} for key, (total, held) in supply.items()}

    def _issued(self, registry: Registry) -> None:
        for line in registry.supply():
            if line.issued:
                counter = _get(registry, SerialCounter.id_for(line.unit_class), SerialCounter)
                self.issued[(line.unit_class.key,)] = {
                    "issued": line.issued,
                    "next_serial": counter.next_serial,
                }

    def _transaction(
        self, transactions: Mapping[UUID, Transaction], position: int, txn: Transaction
    ) -> None:
        reversed_by = None
        if txn.reversed_by is not None:
            reversal = transactions[txn.reversed_by]
            reversed_by = f"{reversal.party}:{reversal.client_id}"
        self.transactions[(txn.party, txn.client_id)] = {
            "kind": txn.kind.value,
            "status": txn.status.value,
            "source": txn.source,
            "destination": txn.destination,
            "quantity": txn.quantity,
            "blocks": _blocks(txn.blocks),
            "reason": txn.reason,
            "principal": txn.principal,
            "refusal_reason": txn.refusal_reason,
            "refusal_message": txn.refusal_message,
            "details": json.loads(json.dumps(txn.details)),
            "reversed_by": reversed_by,
            "recorded_at": _utc(txn.created_on),
            "position": position,
        }
        if txn.status is not TransactionStatus.COMPLETED:
            return
        assert txn.destination is not None
        common = {
            "party": txn.party,
            "client_id": txn.client_id,
            "kind": txn.kind.value,
            "reason": txn.reason,
            "principal": txn.principal,
            "recorded_at": _utc(txn.created_on),
        }
        by_class: dict[str, list[SerialBlock]] = defaultdict(list)
        for block in txn.blocks:
            by_class[block.unit_class.key].append(block)
            self.movements[(block.unit_class.key, block.first, position)] = {
                "last": block.last,
                "source": txn.source,
                "destination": txn.destination,
                "kind": txn.kind.value,
                "party": txn.party,
                "client_id": txn.client_id,
            }
        sides = [("CREDIT", txn.destination, txn.source)]
        if txn.source is not None:
            sides.append(("DEBIT", txn.source, txn.destination))
        for direction, account_id, counterparty in sides:
            for key, blocks in by_class.items():
                self.history[(account_id, position, key, direction)] = {
                    **common,
                    "counterparty": counterparty,
                    "unit_type": blocks[0].unit_class.unit_type.value,
                    "quantity": sum(b.quantity for b in blocks),
                    "blocks": _blocks(blocks),
                }


def _notifications(registry: Registry, head: int, topics: Iterable[str]) -> Iterator[Notification]:
    """The log's notifications of ``topics`` up to ``head``, in order, page by page."""
    start, wanted = 1, list(topics)
    while True:
        page = registry.recorder.select_notifications(
            start=start, limit=SCAN_PAGE, stop=head, topics=wanted
        )
        yield from page
        if len(page) < SCAN_PAGE:
            return
        start = page[-1].id + 1


def _get(registry: Registry, aggregate_id: UUID, cls: type[A]) -> A:
    aggregate: object = registry.repository.get(aggregate_id)
    assert isinstance(aggregate, cls), f"{aggregate_id} is a {type(aggregate).__name__}"
    return aggregate


def _head(registry: Registry) -> int:
    return int(registry.recorder.max_notification_id() or 0)


def _blocks(blocks: Iterable[SerialBlock]) -> list[list[Any]]:
    return [[b.unit_class.key, b.first, b.last] for b in blocks]


def _utc(moment: datetime) -> datetime:
    """Naive UTC: SQLite hands back naive datetimes, PostgreSQL aware ones."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


# == what the read models hold ====================================================


def _positions(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    query = select(t.tracking.c.projection, t.tracking.c.position).where(
        t.tracking.c.projection.in_(list(names))
    )
    return {name: int(position) for name, position in conn.execute(query).all()}


def _fields(table: Table, key_columns: int) -> tuple[list[str], list[str]]:
    """(key columns, value columns) of ``table``: the primary key comes first."""
    key = [c.name for c in table.primary_key.columns]
    assert len(key) == key_columns, (table.name, key)
    return key, [c.name for c in table.columns if c.name not in key]


def _rows(conn: Connection, table: Table) -> list[Row]:
    rows = []
    for row in conn.execute(select(table)).mappings():
        rows.append({name: _utc(v) if isinstance(v, datetime) else v for name, v in row.items()})
    return rows


def _non_zero(rows: list[Row], amounts: tuple[str, ...]) -> list[Row]:
    """Rows of a class an account no longer has stay at zero; zero equals absent."""
    return [row for row in rows if any(row[a] for a in amounts)]


def _decoded(rows: list[Row], columns: tuple[str, ...]) -> list[Row]:
    """JSON columns as values, so that key order and spacing do not count."""
    decoded = []
    for row in rows:
        row = dict(row)
        for column in columns:
            with suppress(TypeError, ValueError):  # left as text, it then differs
                row[column] = json.loads(row[column])
        decoded.append(row)
    return decoded


# == the comparison ===============================================================


class _Checker:
    def __init__(self) -> None:
        self.checks = 0
        self.differences: list[Difference] = []

    def add(self, projection: str, key: str, expected: Any, actual: Any, message: str) -> None:
        self.differences.append(Difference(projection, key, expected, actual, message))

    def compare_rows(
        self,
        projection: str,
        table: str,
        expected: Mapping[Key, Row],
        rows: list[Row],
        fields: tuple[list[str], list[str]],
    ) -> None:
        """Row by row, field by field; a missing or an unexpected row is one difference."""
        key_columns, value_columns = fields
        actual = {tuple(row[c] for c in key_columns): row for row in rows}
        for key in sorted(expected.keys() | actual.keys(), key=_sortable):
            self.checks += 1
            label = f"{table} " + " ".join(str(k) for k in key)
            want, have = expected.get(key), actual.get(key)
            if have is None:
                self.add(projection, label, want, None, "row missing")
            elif want is None:
                self.add(
                    projection, label, None, {c: have[c] for c in value_columns}, "unexpected row"
                )
            else:
                for column in value_columns:
                    if column in want and want[column] != have[column]:
                        self.add(projection, label, want[column], have[column], f"{column} differs")

    def conservation(self, issued: Mapping[Key, Row], holdings: list[Row]) -> None:
        """Per unit class, the read model's holdings of every account add up to the units
        issued per the event store (``registry.domain.conservation``)."""
        per_class_issued = {key[0]: row["issued"] for key, row in issued.items()}
        held = per_class((row["unit_class"], row["total"]) for row in holdings)
        self.checks += len(per_class_issued.keys() | held.keys())
        for imbalance in imbalances(per_class_issued, held):
            self.add(
                "conservation",
                f"rm_holdings {imbalance.unit_class}",
                imbalance.issued,
                imbalance.held,
                "units held in all accounts differ from units issued",
            )

    def history_balances(self, totals: Mapping[Key, int], rows: list[Row]) -> None:
        """Credits minus debits per account and unit class equal the account's total."""
        sums: dict[Key, int] = defaultdict(int)
        for row in rows:
            sign = 1 if row["direction"] == "CREDIT" else -1
            sums[(row["account_id"], row["unit_class"])] += sign * row["quantity"]
        for key in sorted(totals.keys() | sums.keys()):
            self.checks += 1
            if totals.get(key, 0) != sums.get(key, 0):
                self.add(
                    "history",
                    f"balance {key[0]} {key[1]}",
                    totals.get(key, 0),
                    sums.get(key, 0),
                    "credits minus debits differ from the total held",
                )

    def serial_locations(self, expected: Mapping[Key, Ranges], rows: list[Row]) -> None:
        """Each row lies in the account that holds it; the rows cover every block exactly."""
        expected = {key: _normalise(ranges)[0] for key, ranges in expected.items()}
        actual: dict[Key, Ranges] = defaultdict(list)
        for row in sorted(rows, key=lambda r: (r["unit_class"], r["first"])):
            self.checks += 1
            key = (row["unit_class"], row["account_id"])
            span = (row["first"], row["last"])
            if not _within(span, expected.get(key, [])):
                self.add(
                    "serials",
                    f"rm_serial_blocks {row['unit_class']}#{span[0]}-{span[1]}",
                    _holders(expected, row["unit_class"], span) or "never issued",
                    row["account_id"],
                    "serial block is not (all) in the account the aggregates say",
                )
            actual[key].append(span)
        for key in sorted(expected.keys() | actual.keys()):
            self.checks += 1
            merged, overlaps = _normalise(actual.get(key, []))
            label = f"rm_serial_blocks {key[1]} {key[0]}"
            for first, last in overlaps:
                self.add(
                    "serials",
                    label,
                    None,
                    f"{first}-{last}",
                    "rows overlap: these serials are in more than one row",
                )
            want = expected.get(key, [])
            missing, extra = _subtract(want, merged), _subtract(merged, want)
            if missing or extra:
                self.add(
                    "serials",
                    label,
                    _text(want),
                    _text(merged),
                    f"blocks differ: missing {_text(missing) or 'none'}, "
                    f"unexpected {_text(extra) or 'none'}",
                )


def _sortable(key: Key) -> tuple[str, ...]:
    return tuple(f"{k:020d}" if isinstance(k, int) else str(k) for k in key)


def _normalise(ranges: Ranges) -> tuple[Ranges, Ranges]:
    """(merged ranges, the overlapping parts found while merging)."""
    merged: Ranges = []
    overlaps: Ranges = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            if first <= merged[-1][1]:
                overlaps.append((first, min(last, merged[-1][1])))
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged, overlaps


def _subtract(ranges: Ranges, minus: Ranges) -> Ranges:
    """The parts of ``ranges`` not in ``minus`` (both merged and sorted), in one pass."""
    left: Ranges = []
    j = 0
    for first, last in ranges:
        while j < len(minus) and minus[j][1] < first:
            j += 1
        k = j
        while k < len(minus) and minus[k][0] <= last and first <= last:
            if minus[k][0] > first:
                left.append((first, minus[k][0] - 1))
            first = max(first, minus[k][1] + 1)
            k += 1
        if first <= last:
            left.append((first, last))
    return left


def _within(span: tuple[int, int], ranges: Ranges) -> bool:
    """Whether ``span`` lies inside one of the merged, sorted ``ranges``."""
    index = bisect_right(ranges, span[0], key=lambda r: r[0]) - 1
    return index >= 0 and ranges[index][0] <= span[0] and span[1] <= ranges[index][1]


def _holders(expected: Mapping[Key, Ranges], unit_class: str, span: tuple[int, int]) -> str:
    """The accounts holding any serial of ``span``, per the aggregates (on failure only)."""
    first, last = span
    return ", ".join(
        sorted(
            account
            for (cls, account), ranges in expected.items()
            if cls == unit_class and any(f <= last and l_ >= first for f, l_ in ranges)
        )
    )


def _text(ranges: Ranges) -> str:
    return ", ".join(f"{first}-{last}" for first, last in ranges)
