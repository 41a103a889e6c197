"""What every use case shares: attempts retried over a fresh unit of work, the writers'
lock for a group, loads of many aggregates, the clock.

The use-case modules take this object instead of calling each other's private
methods; ``Registry`` builds one and hands it to each.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording

from registry.application.unit_of_work import StaleRead, UnitOfWork
from registry.domain.accounts import Account, AccountType
from registry.domain.errors import ConcurrencyConflict, RegistryError
from registry.domain.transactions import Transaction
from registry.persistence.aggregates import PostgresAggregates, originators
from registry.persistence.faults import DATABASE_BUSY, database_fault
from registry.persistence.write_lock import drop_dead_connections, writer_lock

R = TypeVar("R")
A = TypeVar("A", bound=Aggregate)

MAX_ATTEMPTS = 12
DB_FAULT_ATTEMPTS = 4
"""Attempts of one command over lost database connections before the caller is told
(UNAVAILABLE) to retry later: enough to get past the dead connections of a restart."""
BACKOFF_SECONDS = 0.002
BACKOFF_CAP_SECONDS = 0.2
CONTENTION_WINDOW_SECONDS = 1.0
"""After a group of this process loses a race, its groups take the writer lock
exclusively for this long (``Store.group_lock``)."""
OTHERS_WINDOW_SECONDS = 5.0
"""After the catch-up last found another process's events, this process's groups take
the writer lock shared for this long (``Store.group_lock``)."""


@dataclass(frozen=True)
class AccountOpening:
    """What an account's opening fixed for good (no later event changes them)."""

    account_type: AccountType
    holder: dict[str, str]


def _no_lock(_: bool) -> AbstractContextManager[None]:
    return nullcontext()


class Store:
    """The application's store as the use cases use it (one per application)."""

    def __init__(
        self,
        app: Application[UUID],
        aggregates: PostgresAggregates | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.app = app
        self.aggregates = aggregates
        """The cache followed along a PostgreSQL log; None on other stores."""
        self.clock = clock
        self.max_attempts = MAX_ATTEMPTS
        self.load_many: Callable[[list[UUID]], dict[UUID, Aggregate]] | None = (
            aggregates.load if aggregates is not None else None
        )
        """How ``UnitOfWork.prefetch`` loads many aggregates at once; None where the
        store cannot."""
        self._contended_until = 0.0

    def save(self, *objs: Any) -> list[Recording[UUID]]:
        return self.app.save(*objs)

    def find(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        return UnitOfWork(self.app).find(aggregate_id, cls)

    def account(self, account_id: str) -> Account:
        return UnitOfWork(self.app).account(account_id)

    def originators(self, topic: str) -> Iterator[UUID]:
        """Ids of aggregates whose events of ``topic`` are in the log, in log order."""
        return originators(self.app.recorder, topic)

    def account_openings(self, account_ids: Iterable[str]) -> dict[str, AccountOpening]:
        """What opening fixed for good of each of these accounts that exists (its type
        and holder), for checks that need nothing else: from the cached copy, else on
        PostgreSQL from the opening event alone, in one query for all.

        Checking a table of 37,000 verified emissions loaded every account whole on a
        process that had not cached them (replaying its year of trades): 45 s."""
        wanted = {Account.id_for(a): a for a in account_ids}
        cache = self.app.repository.cache
        found: dict[str, Account] = {}
        for aggregate_id, account_id in wanted.items():
            try:
                cached = None if cache is None else cache.get(aggregate_id)
            except KeyError:
                continue
            if isinstance(cached, Account):
                found[account_id] = cached
        rest = [i for i, a in wanted.items() if a not in found]
        if self.aggregates is not None:
            created = self.aggregates.load_created(rest)
        else:
            uow = UnitOfWork(self.app, optimistic=True)
            created = {i: a for i in rest if (a := uow.find(i, Account)) is not None}
        for aggregate_id, aggregate in created.items():
            assert isinstance(aggregate, Account)
            found[wanted[aggregate_id]] = aggregate
        return {
            account_id: AccountOpening(account.account_type, dict(account.holder))
            for account_id, account in found.items()
        }

    def preload(self, aggregate_ids: Iterable[UUID]) -> set[UUID] | None:
        """Cache, before taking the writer lock, the aggregates a group will read that
        are not cached (``PostgresAggregates.preload``); the ids among them that do not
        exist, or None when they could not be cached. Best effort: a database fault
        here is left for the group's own attempt to meet and handle."""
        if self.aggregates is None:
            return None
        try:
            return self.aggregates.preload(aggregate_ids)
        except Exception as error:
            if not database_fault(error):
                raise
            return None

    def catch_up(self) -> None:
        """Bring the cached aggregates up to date with other processes' writes."""
        if self.aggregates is not None:
            self.aggregates.catch_up()

    def recorded_transactions(
        self, party: str, client_ids: Sequence[str]
    ) -> dict[str, Transaction]:
        """The recorded transactions among these client ids: on PostgreSQL in one query
        (after a lost race a batch asks for 1,000, usually none recorded)."""
        ids = {Transaction.id_for(party, c): c for c in dict.fromkeys(client_ids)}
        if self.aggregates is None:
            found = {
                client_id: self.find(aggregate_id, Transaction)
                for aggregate_id, client_id in ids.items()
            }
            return {c: txn for c, txn in found.items() if txn is not None}
        return {ids[i]: txn for i, txn in self.aggregates.load_events(ids).items()}

    def retrying(
        self,
        attempt: Callable[[UnitOfWork], R],
        on_conflict: Callable[[], R | None] | None = None,
        lock: Callable[[bool], AbstractContextManager[None]] = _no_lock,
    ) -> R:
        """Run ``attempt`` on a fresh unit of work, retrying lost races.

        The first attempt trusts the aggregate cache (no read round trips; a stale copy
        fails the version-checked save). When it loses, the cached copies of what it
        read are brought up to date in one query and the second attempt trusts them
        again; later retries read each aggregate fresh from the store.
        A store collision or a stale read first asks ``on_conflict`` (a replay answers);
        otherwise back off with full jitter and try again, a bounded number of times.
        Every attempt runs under ``lock(retry)`` (see ``group_lock``).
        An unexpected error is re-raised only if what the attempt read was current: two
        aggregates read at different moments can disagree (the same serials in both),
        which is a lost race, not a bug.
        A lost database connection (a restart or failover ends every session) is tried
        again on fresh connections, reading fresh: had the lost save committed, the
        retry collides and is answered as a replay. If the database stays away, or on
        a lock or statement timeout, the database's error is raised for the caller to
        retry (``registry.persistence.faults``: UNAVAILABLE, never INTERNAL).
        """
        refreshed = False
        for tries in range(self.max_attempts):
            uow = UnitOfWork(self.app, optimistic=tries == 0 or refreshed)
            refreshed = False
            try:
                with lock(tries > 0):
                    return attempt(uow)
            except (IntegrityError, StaleRead):
                refreshed = (
                    tries == 0
                    and self.aggregates is not None
                    and self.aggregates.refresh(uow.read_versions)
                )
            except RegistryError:
                raise
            except Exception as error:
                fault = database_fault(error)
                if fault == DATABASE_BUSY or (fault and tries >= DB_FAULT_ATTEMPTS - 1):
                    raise
                if fault:
                    drop_dead_connections(self.app.recorder)
                    time.sleep(random.uniform(0, BACKOFF_CAP_SECONDS))
                    continue  # not on_conflict: it would ask the lost database too
                if uow.is_current():
                    raise
            if on_conflict is not None:
                answer = on_conflict()
                if answer is not None:
                    return answer
            delay = min(BACKOFF_CAP_SECONDS, BACKOFF_SECONDS * 2**tries)
            time.sleep(random.uniform(0, delay))
        raise ConcurrencyConflict(
            f"gave up after {self.max_attempts} attempts lost to concurrent changes; retry",
            attempts=self.max_attempts,
        )

    def group_lock(self, retry: bool) -> AbstractContextManager[None]:
        """The writer lock for one attempt of a group (``write_lock``): exclusive for a
        retry and while this process has lately lost races, shared while other
        processes have lately written, none otherwise. Groups that keep colliding
        (every surrender credits CN-SURRENDER) then take turns instead of each deciding
        in vain; groups that do not collide (trades between different accounts) still
        run side by side; and a process writing alone pays nothing for the lock (its
        two round trips were a third of a single trade's time)."""
        now = time.monotonic()
        if retry:
            self._contended_until = now + CONTENTION_WINDOW_SECONDS
        if retry or now < self._contended_until:
            return writer_lock(self.app.recorder, exclusive=True)
        aggregates = self.aggregates
        if aggregates is not None and now - aggregates.others_seen_at < OTHERS_WINDOW_SECONDS:
            return writer_lock(self.app.recorder, exclusive=False)
        return nullcontext()  # no other process writing lately: no round trips for it
