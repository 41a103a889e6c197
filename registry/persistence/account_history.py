"""One account's history as the write side knows it: the transactions its own events
name, read from the event store.

The carry-over limit of a NET_SALES rule needs the company's net sales (and, on a store
written before carried tonnes were recorded, its past surrenders): both are in the
transactions that moved units in or out of its account. The account's events
(``Debited``, ``Credited``, ``HeldUnitsDebited``, ``MovementsPosted``) are the index:
each names its transaction, whose record says the kind, the blocks, the parties and
when it was recorded. So nothing is written for it on the settlement path, and a store
upgraded from an earlier version has every figure already.

It is read only for a surrender under a NET_SALES rule that takes carried vintages, and
never by a settlement. On SQLite and PostgreSQL the rows are read by primary key (the
account's events, then the transactions ``CHUNK`` at a time) and only the fields the
limit needs are taken from the stored JSON, without building events or aggregates
(through the library's mapper, 5,000 transactions took 2-3 s on a loaded 2-core
machine; this way 0.4-1 s, of which most is decoding JSON).
The in-memory store, which has no SQL table, goes through the mapper.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from registry.domain.accounts import Account
from registry.domain.carry_over import RecordedTransaction
from registry.domain.transactions import Transaction, TransactionKind
from registry.persistence.aggregates import replay
from registry.persistence.eventlog import EventLog, store_cursor

CHUNK = 500
"""Transactions read per query."""

MOVEMENT_TOPICS = (
    Account.Debited.TOPIC,
    Account.Credited.TOPIC,
    Account.HeldUnitsDebited.TOPIC,
    Account.MovementsPosted.TOPIC,
)
TRANSACTION_TOPICS = (Transaction.Completed.TOPIC, Transaction.Reversed.TOPIC)
KINDS = frozenset({TransactionKind.SETTLEMENT.value, TransactionKind.SURRENDER.value})
"""The kinds the limit reads (net sales; surrenders already made): others are skipped."""


def account_transactions(
    app: Application[UUID], account_id: str, upto_version: int | None = None
) -> list[RecordedTransaction]:
    """Every completed settlement and surrender that moved units in or out of
    ``account_id`` (the kinds the limit reads), in the
    order the account recorded them, from its events up to ``upto_version`` (the
    version a decision read, so the figure is the one its version-checked save stands
    on; None: all)."""
    account = Account.id_for(account_id)
    log = EventLog.find(app.recorder)
    if log is None:
        return _through_the_mapper(app, account, upto_version)
    with store_cursor(app.recorder) as cursor:
        ids = _transaction_ids(_account_states(log, cursor, account, upto_version))
        found: dict[UUID, RecordedTransaction] = {}
        for start in range(0, len(ids), CHUNK):
            found.update(_transactions(log, cursor, ids[start : start + CHUNK]))
    return [found[i] for i in ids if i in found]


def _account_states(
    log: EventLog, cursor: Any, account: UUID, upto_version: int | None
) -> Iterable[dict[str, Any]]:
    mark = "%s" if log.postgres else "?"
    topics = ", ".join([mark] * len(MOVEMENT_TOPICS))
    params: list[Any] = [_key(log, account), *MOVEMENT_TOPICS]
    upto = ""
    if upto_version is not None:
        upto = f" AND originator_version <= {mark}"
        params.append(upto_version)
    cursor.execute(
        f"SELECT state FROM {log.table} WHERE originator_id = {mark}"
        f" AND topic IN ({topics}){upto} ORDER BY originator_version",
        params,
    )
    for (state,) in cursor.fetchall():
        yield json.loads(bytes(state))


def _transaction_ids(states: Iterable[dict[str, Any]]) -> list[UUID]:
    """The transactions the account's movement events name, each once, in order."""
    found: dict[UUID, None] = {}
    for state in states:
        for movement in state.get("movements") or (state,):
            found[_uuid(movement["transaction_id"])] = None
    return list(found)


def _transactions(
    log: EventLog, cursor: Any, ids: Sequence[UUID]
) -> dict[UUID, RecordedTransaction]:
    if log.postgres:
        cursor.execute(
            f"SELECT originator_id, topic, state FROM {log.table} "
            "WHERE originator_id = ANY(%s) AND topic = ANY(%s)",
            [list(ids), list(TRANSACTION_TOPICS)],
        )
    else:
        cursor.execute(
            f"SELECT originator_id, topic, state FROM {log.table} WHERE originator_id IN "
            f"({', '.join('?' * len(ids))}) AND topic IN (?, ?)",
            [*(i.hex for i in ids), *TRANSACTION_TOPICS],
        )
    completed: dict[UUID, dict[str, Any]] = {}
    reversed_: set[UUID] = set()
    for originator, topic, state in cursor.fetchall():
        txn_id = _uuid(originator)
        if topic == Transaction.Reversed.TOPIC:
            reversed_.add(txn_id)
            continue
        data = json.loads(bytes(state))
        if data["kind"] in KINDS:
            completed[txn_id] = data
    return {i: _recorded(i, state, i in reversed_) for i, state in completed.items()}


def _recorded(txn_id: UUID, state: dict[str, Any], reversed_: bool) -> RecordedTransaction:
    """The fields of a stored ``Transaction.Completed`` the limit needs."""
    year = (state.get("details") or {}).get("compliance_year")
    return RecordedTransaction(
        txn_id,
        state["kind"],
        state["source"],
        state["destination"],
        tuple((b["_data_"][0], b["_data_"][1], b["_data_"][2]) for b in state["blocks"]),
        datetime.fromisoformat(state["timestamp"]["_data_"]),
        None if year is None else int(year),
        reversed_,
    )


def _through_the_mapper(
    app: Application[UUID], account: UUID, upto_version: int | None
) -> list[RecordedTransaction]:
    """The same, for a store without a SQL table (the in-memory one)."""
    found: dict[UUID, None] = {}
    for event in app.events.get(account, lte=upto_version):
        if isinstance(event, Account.MovementsPosted):
            found.update((_uuid(m["transaction_id"]), None) for m in event.movements)
        elif isinstance(event, Account.Debited | Account.Credited | Account.HeldUnitsDebited):
            found[_uuid(event.transaction_id)] = None
    transactions = [replay(None, app.events.get(txn_id)) for txn_id in found]
    return [
        RecordedTransaction.of(t) for t in transactions if t is not None and t.kind_name in KINDS
    ]


def _key(log: EventLog, aggregate_id: UUID) -> Any:
    """An aggregate id as the store keeps it (SQLite: hex text)."""
    return aggregate_id if log.postgres else aggregate_id.hex


def _uuid(value: Any) -> UUID:
    """A stored id: a UUID, hex or dashed text, or the transcoded ``{"_data_": hex}``."""
    if isinstance(value, dict):
        value = value["_data_"]
    return value if isinstance(value, UUID) else UUID(str(value))
