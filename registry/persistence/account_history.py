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
never by a settlement. The account's events are read by its primary key; the
transactions too, in one query per ``CHUNK`` on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from registry.domain.accounts import Account
from registry.domain.transactions import Transaction
from registry.persistence.aggregates import replay
from registry.persistence.recorder import RegistryPostgresRecorder

CHUNK = 1000
"""Transactions read per query on PostgreSQL."""


def transaction_ids(events: Iterable[Any]) -> list[UUID]:
    """The transactions an account's events name, each once, in the order recorded."""
    found: dict[UUID, None] = {}
    for event in events:
        if isinstance(event, Account.Debited | Account.Credited | Account.HeldUnitsDebited):
            found[_uuid(event.transaction_id)] = None
        elif isinstance(event, Account.MovementsPosted):
            for movement in event.movements:
                found[_uuid(movement["transaction_id"])] = None
    return list(found)


def account_transactions(
    app: Application[UUID], account_id: str, upto_version: int | None = None
) -> list[Transaction]:
    """Every transaction that moved units in or out of ``account_id``, as recorded, from
    the account's events up to ``upto_version`` (the version a decision read, so the
    figure is the one its version-checked save stands on)."""
    events = app.events.get(Account.id_for(account_id), lte=upto_version)
    return load_transactions(app, transaction_ids(events))


def load_transactions(app: Application[UUID], ids: list[UUID]) -> list[Transaction]:
    """These transactions replayed from their events, in the order given (none missing:
    an account's event and its transaction are saved together)."""
    recorder = app.recorder
    mapper = app.mapper
    loaded: dict[UUID, Transaction] = {}
    if isinstance(recorder, RegistryPostgresRecorder):
        for start in range(0, len(ids), CHUNK):
            stored: dict[UUID, list[Any]] = {}
            for event in recorder.select_newer_events(dict.fromkeys(ids[start : start + CHUNK], 0)):
                stored.setdefault(_uuid(event.originator_id), []).append(event)
            for txn_id, events in stored.items():
                loaded[txn_id] = replay(None, map(mapper.to_domain_event, events))
    else:  # SQLite (in-process: a query each is cheap) and the in-memory store
        for txn_id in ids:
            loaded[txn_id] = replay(None, app.events.get(txn_id))
    return [loaded[txn_id] for txn_id in ids if loaded.get(txn_id) is not None]


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
