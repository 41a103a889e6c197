"""Load each aggregate once per command (or batch), and save everything in one save."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, DomainEvent

from registry.application.request_ids import current_request_id, stamp
from registry.domain.accounts import Account
from registry.domain.errors import UnknownAccount, UnknownHold, UnknownTransaction
from registry.domain.holds import Hold
from registry.domain.obligations import ComplianceObligation
from registry.domain.rules import ComplianceYear
from registry.domain.serials import SerialCounter
from registry.domain.transactions import Transaction
from registry.domain.units import UnitClass
from registry.persistence.aggregates import replay

if TYPE_CHECKING:
    from eventsourcing.application import Application
    from eventsourcing.persistence import Recording

A = TypeVar("A", bound=Aggregate)


def saved_position(recordings: list[Recording[Any]]) -> int | None:
    """The log position of the last event of a save: wait for it to read your writes."""
    return recordings[-1].notification.id if recordings else None


def _in(cache: Any, aggregate_id: UUID) -> bool:
    try:
        cache.get(aggregate_id)
    except KeyError:
        return False
    return True


def _pending(aggregate: Aggregate) -> list[Any]:
    """The aggregate's pending events as it keeps them: an account keeps a run of
    debits and credits as one ``_Postings`` (its ``pending_events`` builds an event per
    movement, for readers; this is for counting and stamping them)."""
    pending: list[Any] = aggregate._pending_events
    return pending


def _changes(aggregate: Aggregate) -> tuple[int, int]:
    """(pending events as kept, version): every change takes one version, an account's
    debits and credits gathered into one ``_Postings`` included."""
    return len(aggregate._pending_events), aggregate.version


_UNSEEN: Any = object()
"""Not looked up yet (``None`` in ``UnitOfWork._loaded`` is: looked up, not there)."""


class StaleRead(Exception):
    """An aggregate this attempt read has changed in the store since: try again."""


class UnitOfWork:
    """An identity map over the repository for one attempt of one command.

    Every aggregate is loaded at most once, so a batch of trades on the same accounts
    evolves one copy of each; ``save`` writes all pending events atomically.

    Aggregates are loaded one after another, so a concurrent commit can fall between
    two loads. A save is safe regardless (every aggregate it changes is version-checked),
    but a decision that saves nothing it read (a recorded refusal) or that trips over
    two aggregates of different ages must first ``verify_current``.
    """

    def __init__(self, app: Application[UUID], *, optimistic: bool = False) -> None:
        self._app = app
        self._optimistic = optimistic
        self._loaded: dict[UUID, Aggregate | None] = {}
        self._read_versions: dict[UUID, int] = {}
        self._step: dict[int, tuple[Aggregate, int, int]] = {}
        """Aggregates touched since ``begin_step`` (by ``id()``: a UUID hashes in
        Python), with their pending events and version then (``_changes``)."""
        self._accounts: dict[str, Account] = {}
        """The accounts found, by account id (``account``)."""

    @property
    def optimistic(self) -> bool:
        return self._optimistic

    @property
    def app(self) -> Application[UUID]:
        """The application whose store this unit of work reads (for reads that are not
        aggregates, e.g. one account's history, ``registry.persistence.account_history``)."""
        return self._app

    @property
    def read_versions(self) -> dict[UUID, int]:
        """Each aggregate this unit of work looked up, and the version it found (0:
        none)."""
        return dict(self._read_versions)

    def find(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        """The aggregate, or None when it was never created.

        An *optimistic* unit of work takes cached aggregates as they are, without
        asking the store for newer events (a round trip per aggregate). That is safe
        because every aggregate a completed command depends on is also saved, and the
        save is version-checked: a stale copy fails the save, and the retry reads
        fresh. Decisions that save nothing they read call ``verify_current`` first."""
        found: Aggregate | None = self._loaded.get(aggregate_id, _UNSEEN)
        if found is _UNSEEN:
            found = self._cached(aggregate_id) if self._optimistic else None
            if found is None:
                try:
                    found = self._app.repository.get(aggregate_id, projector_func=replay)
                except AggregateNotFoundError:
                    found = None
            self._loaded[aggregate_id] = found
            self._read_versions[aggregate_id] = 0 if found is None else found.version
        assert found is None or isinstance(found, cls)
        if found is not None and id(found) not in self._step:
            self._step[id(found)] = (found, *_changes(found))
        return found

    def prefetch(
        self,
        aggregate_ids: Iterable[UUID],
        load_many: Callable[[list[UUID]], dict[UUID, Aggregate]] | None,
    ) -> None:
        """Load at once those of these aggregates that lookups would read from the store
        one by one (all of them, unless optimistic; else those not cached).

        ``load_many`` reads them in a few queries and returns those that exist; None
        where the store cannot. A batch's first trades on a process loaded ~1,000
        accounts one query each; a table of 1,000 verified emissions, 1,000 obligations.
        """
        cache = self._app.repository.cache
        wanted = [
            i
            for i in dict.fromkeys(aggregate_ids)
            if i not in self._loaded
            and not (self._optimistic and cache is not None and _in(cache, i))
        ]
        if load_many is None or len(wanted) < 2:
            return
        found = load_many(wanted)
        for aggregate_id in wanted:
            aggregate = found.get(aggregate_id)
            if aggregate is not None and cache is not None:
                cache.put(aggregate_id, aggregate)  # as a load through the repository
                aggregate = deepcopy(aggregate)
            self._loaded[aggregate_id] = aggregate
            self._read_versions[aggregate_id] = 0 if aggregate is None else aggregate.version

    def _cached(self, aggregate_id: UUID) -> Aggregate | None:
        cache = self._app.repository.cache
        if cache is None:
            return None
        try:
            cached = cache.get(aggregate_id)
        except KeyError:
            return None
        return deepcopy(cached) if isinstance(cached, Aggregate) else None

    def add(self, aggregate: A) -> A:
        self._loaded[aggregate.id] = aggregate
        self._read_versions.setdefault(aggregate.id, 0)
        if isinstance(aggregate, Account):
            self._accounts.pop(aggregate.account_id, None)
        # new in this step: its creation is a change
        self._step.setdefault(id(aggregate), (aggregate, 0, 0))
        return aggregate

    def account(self, account_id: str) -> Account:
        """The account, looked up by its id: a batch asks for the same few hundred
        accounts thousands of times (a UUID hashes in Python, a string once)."""
        account = self._accounts.get(account_id)
        if account is None:
            account = self.find(Account.id_for(account_id), Account)
            if account is None:
                raise UnknownAccount(f"no account {account_id}", account=account_id)
            self._accounts[account_id] = account
        elif id(account) not in self._step:
            self._step[id(account)] = (account, *_changes(account))
        return account

    def hold(self, party: str, hold_id: str) -> Hold:
        hold = self.find(Hold.id_for(party, hold_id), Hold)
        if hold is None:
            raise UnknownHold(f"no hold {party}:{hold_id}", hold=f"{party}:{hold_id}")
        return hold

    def transaction(self, party: str, client_id: str) -> Transaction:
        txn = self.find_transaction(party, client_id)
        if txn is None:
            ref = f"{party}:{client_id}"
            raise UnknownTransaction(f"no transaction {ref}", transaction=ref)
        return txn

    def find_transaction(self, party: str, client_id: str) -> Transaction | None:
        return self.find(Transaction.id_for(party, client_id), Transaction)

    def counter(self, unit_class: UnitClass) -> SerialCounter:
        return self._get_or_start(
            SerialCounter.id_for(unit_class), SerialCounter, lambda: SerialCounter.start(unit_class)
        )

    def obligation(self, account_id: str, year: int) -> ComplianceObligation:
        return self._get_or_start(
            ComplianceObligation.id_for(account_id, year),
            ComplianceObligation,
            lambda: ComplianceObligation.start(account_id, year),
        )

    def compliance_year(self, year: int) -> ComplianceYear:
        return self._get_or_start(
            ComplianceYear.id_for(year), ComplianceYear, lambda: ComplianceYear.start(year)
        )

    def _get_or_start(self, aggregate_id: UUID, cls: type[A], start: Callable[[], A]) -> A:
        found = self.find(aggregate_id, cls)
        return found if found is not None else self.add(start())

    def is_current(self) -> bool:
        """True when nothing this unit of work read has changed in the store since."""
        events = self._app.events
        return not any(
            next(iter(events.get(aggregate_id, gt=version, limit=1)), None) is not None
            for aggregate_id, version in self._read_versions.items()
        )

    def verify_current(self) -> None:
        if not self.is_current():
            raise StaleRead("an aggregate changed while this command read it")

    def begin_step(self) -> None:
        """Start watching for changes: one step is one movement of a batch."""
        self._step = {}

    def step_changed(self) -> bool:
        """Whether any aggregate touched since ``begin_step`` has gained events. Only
        the step's aggregates are looked at: a batch of 1,000 trades over a few hundred
        accounts asked all of them after every trade (a third of the batch's time)."""
        return any(aggregate.version != version for aggregate, _, version in self._step.values())

    def changed(self) -> list[Aggregate]:
        return [a for a in self._loaded.values() if a is not None and _pending(a)]

    def save(self, *extra: Aggregate | DomainEvent) -> list[Recording[Any]]:
        """Save every changed aggregate and ``extra`` (aggregates, or events saved as
        they are: a movement's transaction record) in one atomic save."""
        changed = self.changed()
        request_id = current_request_id()
        if request_id:
            stamp((e for aggregate in changed for e in _pending(aggregate)), request_id)
            stamp((e for e in extra if isinstance(e, DomainEvent)), request_id)
            stamp(
                (e for a in extra if isinstance(a, Aggregate) for e in _pending(a)),
                request_id,
            )
        return self._app.save(*changed, *extra)

    def stamp_step(self, request_id: str | None, *extra: Aggregate | DomainEvent) -> None:
        """Stamp the events made since ``begin_step`` (and ``extra``, events or their
        aggregates' events) with the id of the call they belong to: a group commit
        saves them from another call's thread."""
        if not request_id:
            return
        for aggregate, count, _ in self._step.values():
            stamp(_pending(aggregate)[count:], request_id)
        for item in extra:
            stamp((item,) if isinstance(item, DomainEvent) else _pending(item), request_id)
