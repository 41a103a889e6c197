"""The registry application: the event store, its cache and snapshots, and one entry
point per use case.

``Registry`` is the front that services, tools and tests hold; each use case lives in
its own module (``accounts``, ``movements``, ``holds``, ``compliance``, ``queries``,
``restrictions``, ``four_eyes``, ``access``), sharing one ``Store`` (retries over a
fresh unit of work, the writers' lock, loads of many aggregates, the clock).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEvent, Snapshot
from eventsourcing.persistence import InfrastructureFactory, JSONTranscoder, Recording, Transcoder

from registry.application.access import Access
from registry.application.accounts import Accounts
from registry.application.commands import AllocationRow, EmissionsRow, Trade
from registry.application.compliance import Compliance
from registry.application.enforcement import Enforcement
from registry.application.four_eyes import Actions, FourEyes
from registry.application.holds import Holds
from registry.application.movements import Movements
from registry.application.origins import Origins
from registry.application.projects import Projects
from registry.application.queries import Queries
from registry.application.restrictions import Restrictions
from registry.application.results import (
    AccountResult,
    AccountView,
    ComplianceReportLine,
    ComplianceRulesView,
    ComplianceView,
    DeductionRun,
    EmissionsRecorded,
    FineResult,
    HoldingView,
    HoldResult,
    RowResult,
    SupplyLine,
    TradeResult,
    TransactionResult,
    YearClosing,
)
from registry.application.store import Store
from registry.application.transcodings import SerialBlockTranscoding
from registry.domain.accounts import NATIONAL_ACCOUNTS, Account, AccountType, Holder
from registry.domain.obligations import ComplianceObligation
from registry.domain.rules import ComplianceRules
from registry.domain.serials import SerialCounter
from registry.domain.transactions import SYSTEM, Principal, Transaction, TransactionKind
from registry.domain.units import UnitClass, UnitSelector
from registry.persistence.aggregates import PostgresAggregates
from registry.persistence.recorder import (
    DEFAULT_STATEMENT_TIMEOUT,
    STATEMENT_TIMEOUT_ENV,
    RegistryPostgresRecorder,
)
from registry.persistence.transcoder import MsgspecTranscoder

_RECORDS = frozenset({Transaction.Completed, Transaction.Refused})
"""Events saved as they are (``Transaction.completed_record``), told by type: an
``isinstance`` of an event class asks its metaclass in Python."""


class Registry(Application[UUID]):
    """The national registry's write model and its direct queries."""

    name = "Registry"
    env: ClassVar[dict[str, str]] = {
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        "IS_SNAPSHOTTING_ENABLED": "y",
    }
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        Account: 200,
        SerialCounter: 200,
        ComplianceObligation: 200,
    }
    snapshot_blocks_per_event: ClassVar[int] = 50
    """An account holding more than ``interval x this`` serial blocks is snapshotted
    half as often, as many times over as it takes (``snapshot_interval``)."""

    def __init__(
        self, env: dict[str, str] | None = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        super().__init__(env)
        self._aggregates: PostgresAggregates | None = None
        if isinstance(self.recorder, RegistryPostgresRecorder):
            self.recorder.set_statement_timeout(
                float(self.env.get(STATEMENT_TIMEOUT_ENV) or DEFAULT_STATEMENT_TIMEOUT)
            )
            self._aggregates = PostgresAggregates(self, self.recorder)
        self.store = Store(self, self._aggregates, clock or (lambda: datetime.now(UTC)))
        self._accounts = Accounts(self.store)
        self._movements = Movements(self.store)
        self._holds = Holds(self.store)
        self._compliance = Compliance(
            self.store, lambda principal: self.access.current().provinces_of(principal)
        )
        self._enforcement = Enforcement(self.store)
        self._queries = Queries(self.store)
        self.restrictions = Restrictions(self.store)
        self.origins = Origins(self.store)
        self.projects = Projects(self.store)
        """CCER projects: registered, changed, suspended, deregistered; read back."""
        actions = Actions(
            self._movements,
            self._accounts,
            self._compliance,
            self.restrictions,
            self._enforcement,
            self.origins,
            self.projects,
        )
        self.proposals = FourEyes(self.store, actions, lambda: self.access.current())
        """Four eyes: actions that take effect when a second regulator approves."""
        self.access = Access(self.store, self.proposals)

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.store.clock

    @clock.setter
    def clock(self, clock: Callable[[], datetime]) -> None:
        self.store.clock = clock

    @property
    def max_attempts(self) -> int:
        return self.store.max_attempts

    @max_attempts.setter
    def max_attempts(self, attempts: int) -> None:
        self.store.max_attempts = attempts

    def close(self) -> None:
        self._movements.close()
        self._accounts.close()
        super().close()

    def construct_transcoder(self) -> Transcoder:
        """orjson, in the library's stored JSON format (``registry.persistence.transcoder``);
        an explicit ``TRANSCODER_TOPIC`` (e.g. the library's ``JSONTranscoder``) wins."""
        if self.env.get(InfrastructureFactory.TRANSCODER_TOPIC):
            return super().construct_transcoder()
        transcoder = MsgspecTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(SerialBlockTranscoding())

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """Save atomically, then cache what was saved so the next load need not replay it.

        The library's fast-forwarding cache would otherwise re-read and replay every
        event this save wrote. Callers never change an aggregate after saving it, and a
        cached copy older than the store is fast-forwarded on the next load, so this is
        safe across threads and processes.
        """
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:  # the library asks a runtime Protocol of each: 7% of a batch
            if type(obj) in _RECORDS:  # most of a batch: its transaction records
                processing_event.events.append(obj)
            elif isinstance(obj, Aggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            elif isinstance(obj, DomainEvent):  # a record saved without its aggregate
                processing_event.events.append(obj)
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        if self._aggregates is not None:
            self._aggregates.saved(recordings)  # whose aggregates are cached below
        self._take_snapshots(processing_event)
        self._notify(recordings)
        if self.repository.cache is not None:
            for obj in objs:  # transaction records are written once and rarely read:
                if isinstance(obj, Aggregate) and not isinstance(obj, Transaction):
                    self.repository.cache.put(obj.id, obj)  # they would evict accounts
        return recordings

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshot from the saved aggregate in memory when a save crosses an interval.

        The library's default re-reads and replays the aggregate from the store for each
        snapshot, and saves each alone; a batch crossing many intervals paid that many
        times over.
        """
        if self.snapshots is None:
            return
        spans: dict[UUID, tuple[int, int]] = {}
        for event in processing_event.events:
            low, high = spans.get(event.originator_id, (event.originator_version, 0))
            spans[event.originator_id] = (
                min(low, event.originator_version),
                max(high, event.originator_version),
            )
        taken = []
        for aggregate_id, (low, high) in spans.items():
            aggregate = processing_event.aggregates.get(aggregate_id)
            interval = self.snapshot_interval(aggregate)
            if aggregate is not None and interval and high // interval > (low - 1) // interval:
                taken.append(Snapshot.take(aggregate))
        if taken:  # one insert for all: a batch of 1,000 trades crosses ~10 intervals
            self.snapshots.put(taken)

    def snapshot_interval(self, aggregate: Any) -> int | None:
        """Events between two snapshots of ``aggregate``: its class's interval, doubled
        until the interval times ``snapshot_blocks_per_event`` covers an account's blocks.

        A snapshot costs its holding's blocks to encode and write. At a fixed interval
        the accounts every surrender or cancellation credits (CN-SURRENDER ends a 10x
        year with about a million blocks) cost more per snapshot as the year goes on:
        quadratic in the year. Growing the interval with the holding keeps the blocks
        written per event at most ``snapshot_blocks_per_event``, and a load replays at
        most ``blocks / snapshot_blocks_per_event`` x 2 events after the snapshot, about
        what decoding the snapshot costs. Powers of two of the class's interval, so a
        multiple of the longer interval is one of the shorter: the gap between two
        snapshots never exceeds the interval in force when the later one is due."""
        interval = self.snapshotting_intervals.get(type(aggregate))
        if not interval or not isinstance(aggregate, Account):
            return interval
        blocks = len(aggregate.available) + sum(len(h) for h in aggregate.held.values())
        while interval * self.snapshot_blocks_per_event < blocks:
            interval *= 2
        return interval

    # == accounts ============================================================

    def open_account(
        self, principal: Principal, account_id: str, account_type: AccountType, holder: Holder
    ) -> AccountResult:
        return self._accounts.open_account(principal, account_id, account_type, holder)

    def ensure_national_accounts(self) -> list[AccountResult]:
        return self._accounts.ensure_national_accounts()

    def freeze_account(
        self, principal: Principal, account_id: str, reason: str, *, request_id: str | None = None
    ) -> AccountResult:
        return self._accounts.freeze_account(principal, account_id, reason, request_id=request_id)

    def unfreeze_account(
        self, principal: Principal, account_id: str, reason: str, *, request_id: str | None = None
    ) -> AccountResult:
        return self._accounts.unfreeze_account(principal, account_id, reason, request_id=request_id)

    def close_account(
        self, principal: Principal, account_id: str, reason: str, *, request_id: str | None = None
    ) -> AccountResult:
        return self._accounts.close_account(principal, account_id, reason, request_id=request_id)

    # == movements ===========================================================

    def issue_units(
        self,
        principal: Principal,
        transaction_id: str,
        unit_class: UnitClass,
        quantity: int,
        reason: str,
    ) -> TransactionResult:
        return self._movements.issue_units(principal, transaction_id, unit_class, quantity, reason)

    def allocate(
        self,
        principal: Principal,
        transaction_id: str,
        account_id: str,
        selector: UnitSelector,
        quantity: int,
        reason: str,
        source: str = NATIONAL_ACCOUNTS[AccountType.ALLOCATION_RESERVE],
    ) -> TransactionResult:
        return self._movements.allocate(
            principal, transaction_id, account_id, selector, quantity, reason, source
        )

    def return_allocation(
        self,
        principal: Principal,
        transaction_id: str,
        account_id: str,
        selector: UnitSelector,
        quantity: int,
        reason: str,
    ) -> TransactionResult:
        return self._movements.return_allocation(
            principal, transaction_id, account_id, selector, quantity, reason
        )

    def transfer(
        self,
        principal: Principal,
        transaction_id: str,
        source: str,
        destination: str,
        selector: UnitSelector,
        quantity: int,
        reason: str,
    ) -> TransactionResult:
        return self._movements.transfer(
            principal, transaction_id, source, destination, selector, quantity, reason
        )

    def transfer_units(
        self,
        principal: Principal,
        transaction_id: str,
        source: str,
        destination: str,
        selector: UnitSelector,
        quantity: int,
        reason: str,
        reference: str = "",
    ) -> TransactionResult:
        """An operator's transfer between two accounts of one holder (HOLDER_TRANSFER);
        transfers between holders go through a regulator's proposal (``four_eyes``)."""
        return self._movements.transfer_units(
            principal,
            TransactionKind.HOLDER_TRANSFER,
            transaction_id,
            source,
            destination,
            selector,
            quantity,
            reason,
            reference,
        )

    def settle_trade(self, principal: Principal, trade: Trade) -> TransactionResult:
        return self._movements.settle_trade(principal, trade)

    def surrender(
        self,
        principal: Principal,
        transaction_id: str,
        account_id: str,
        selector: UnitSelector,
        quantity: int,
        compliance_year: int,
        reason: str,
    ) -> TransactionResult:
        return self._movements.surrender(
            principal, transaction_id, account_id, selector, quantity, compliance_year, reason
        )

    def cancel(
        self,
        principal: Principal,
        transaction_id: str,
        account_id: str,
        selector: UnitSelector,
        quantity: int,
        reason: str,
    ) -> TransactionResult:
        return self._movements.cancel(
            principal, transaction_id, account_id, selector, quantity, reason
        )

    def reverse(
        self,
        principal: Principal,
        transaction_id: str,
        original_party: str,
        original_transaction_id: str,
        reason: str,
        override_restrictions: bool = False,
    ) -> TransactionResult:
        return self._movements.reverse(
            principal,
            transaction_id,
            original_party,
            original_transaction_id,
            reason,
            override_restrictions,
        )

    def settle_trades(self, principal: Principal, trades: Sequence[Trade]) -> list[TradeResult]:
        return self._movements.settle_trades(principal, trades)

    def allocate_many(self, principal: Principal, rows: Sequence[AllocationRow]) -> list[RowResult]:
        return self._movements.allocate_many(principal, rows)

    # == compliance ==========================================================

    def record_verified_emissions(
        self, principal: Principal, rows: Sequence[EmissionsRow]
    ) -> EmissionsRecorded:
        return self._compliance.record_verified_emissions(principal, rows)

    def get_compliance_status(self, account_id: str, year: int) -> ComplianceView:
        return self._compliance.get_compliance_status(account_id, year)

    def set_compliance_rules(
        self, principal: Principal, year: int, sector: str, rules: ComplianceRules, reason: str
    ) -> ComplianceRulesView:
        return self._compliance.set_compliance_rules(principal, year, sector, rules, reason)

    def get_compliance_rules(self, year: int) -> ComplianceRulesView:
        return self._compliance.get_compliance_rules(year)

    def close_compliance_year(
        self, principal: Principal, year: int, reason: str, correction_days: int | None = None
    ) -> YearClosing:
        return self._compliance.close_compliance_year(principal, year, reason, correction_days)

    def record_compliance_fine(
        self,
        principal: Principal,
        account_id: str,
        year: int,
        multiple: str,
        reference_price: str,
        reason: str,
    ) -> FineResult:
        return self._enforcement.record_fine(
            principal, account_id, year, multiple, reference_price, reason
        )

    def enforce_deductions(self, principal: Principal, year: int, reason: str) -> DeductionRun:
        return self._enforcement.enforce_deductions(principal, year, reason)

    def compliance_report(self, year: int) -> list[ComplianceReportLine]:
        return self._compliance.compliance_report(year)

    # == holds ===============================================================

    def place_hold(
        self,
        principal: Principal,
        hold_id: str,
        account_id: str,
        selector: UnitSelector,
        quantity: int,
        timeout_seconds: int,
    ) -> HoldResult:
        return self._holds.place_hold(
            principal, hold_id, account_id, selector, quantity, timeout_seconds
        )

    def release_hold(self, principal: Principal, hold_id: str, reason: str = "") -> HoldResult:
        return self._holds.release_hold(principal, hold_id, reason)

    def expire_hold(self, principal: Principal, party: str, hold_id: str) -> HoldResult:
        return self._holds.expire_hold(principal, party, hold_id)

    def expire_due_holds(self, principal: Principal = SYSTEM) -> list[HoldResult]:
        return self._holds.expire_due_holds(principal)

    # == queries =============================================================

    def get_account(self, account_id: str) -> AccountView:
        return self._queries.get_account(account_id)

    def get_holdings(self, account_id: str) -> list[HoldingView]:
        return self._queries.get_holdings(account_id)

    def get_transaction(self, party: str, transaction_id: str) -> TransactionResult:
        return self._queries.get_transaction(party, transaction_id)

    # == holds ===============================================================

    def get_hold(self, party: str, hold_id: str) -> HoldResult:
        return self._holds.get_hold(party, hold_id)

    # == compliance ==========================================================

    def get_surrendered(self, account_id: str, year: int) -> dict[str, int]:
        return self._compliance.get_surrendered(account_id, year)

    # == queries =============================================================

    def account_ids(self) -> list[str]:
        return self._queries.account_ids()

    def locate_serial(self, unit_class: UnitClass, serial: int) -> tuple[str, bool]:
        return self._queries.locate_serial(unit_class, serial)

    def supply(self) -> list[SupplyLine]:
        return self._queries.supply()
