"""The registry application: one short method per use case.

Every command that moves units evaluates against freshly loaded aggregates and then
saves the transaction record and every aggregate it touched in ONE atomic save. The
transaction's id is derived from (party, client id), so the store's primary key makes
retries safe: a save that collides is answered from what was recorded first.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import Application, LRUCache, ProcessingEvent
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Recording, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder

from registry.application.access import Access
from registry.application.commands import (
    MAX_BATCH,
    AllocationRow,
    EmissionsRow,
    Movement,
    Trade,
    check_emissions,
    check_quantity,
    check_reason,
    fingerprint,
)
from registry.application.four_eyes import FourEyes
from registry.application.group_commit import GroupCommit
from registry.application.request_ids import current_request_id, stamp
from registry.application.restrictions import Restrictions, check_restrictions
from registry.application.results import (
    AccountResult,
    AccountView,
    ComplianceReportLine,
    ComplianceRulesView,
    ComplianceState,
    ComplianceView,
    EmissionsRecorded,
    EmissionsRowResult,
    EmissionsRowStatus,
    HoldingView,
    HoldResult,
    RowResult,
    SupplyLine,
    TradeResult,
    TransactionResult,
    YearClosing,
)
from registry.application.transcodings import SerialBlockTranscoding
from registry.application.unit_of_work import StaleRead, UnitOfWork, replay
from registry.application.unit_of_work import saved_position as _position
from registry.domain import units
from registry.domain.accounts import (
    NATIONAL_ACCOUNTS,
    REGISTRY_AUTHORITY,
    Account,
    AccountState,
    AccountType,
    Holder,
    check_account_id,
)
from registry.domain.errors import (
    AccountExistsWithDifferentContent,
    ComplianceYearClosed,
    ConcurrencyConflict,
    HoldExistsWithDifferentContent,
    InvalidCommand,
    MovementNotAllowed,
    Refused,
    RegistryError,
    RowsInvalid,
    TransactionExistsWithDifferentContent,
    UnknownAccount,
    UnknownHold,
    UnknownSerial,
    UnknownTransaction,
    Violation,
)
from registry.domain.holds import Hold, HoldStatus, check_timeout
from registry.domain.ids import check_client_id
from registry.domain.obligations import MAX_YEAR, MIN_YEAR, ComplianceObligation, check_year
from registry.domain.restriction_index import RestrictionIndex
from registry.domain.rules import (
    DEFAULT_RULES,
    ComplianceRules,
    ComplianceYear,
    check_rule_key,
)
from registry.domain.serials import SerialCounter
from registry.domain.transactions import (
    HOLDERS,
    Principal,
    Transaction,
    TransactionKind,
    TransactionStatus,
    check_movement,
)
from registry.domain.units import Holding, SerialBlock, UnitClass, UnitSelector, UnitType
from registry.persistence.faults import DATABASE_BUSY, database_fault
from registry.persistence.recorder import (
    DEFAULT_STATEMENT_TIMEOUT,
    STATEMENT_TIMEOUT_ENV,
    RegistryPostgresRecorder,
    select_latest_events,
)
from registry.persistence.write_lock import drop_dead_connections, writer_lock

R = TypeVar("R")
A = TypeVar("A", bound=Aggregate)

RECORDABLE = (Refused, UnknownAccount, UnknownHold, UnknownTransaction)
"""Errors about the ledger's state: the transaction is recorded as refused."""

SYSTEM = Principal("registry", "system")
MAX_ATTEMPTS = 12
DB_FAULT_ATTEMPTS = 4
"""Attempts of one command over lost database connections before the caller is told
(UNAVAILABLE) to retry later: enough to get past the dead connections of a restart."""
BACKOFF_SECONDS = 0.002
BACKOFF_CAP_SECONDS = 0.2
SCAN_PAGE = 1000
CACHE_CATCH_UP_LIMIT = 20_000
"""Events written elsewhere after which a process drops its cache instead of following."""
MAX_GROUP = 2000
"""Movements after which a group commit stops taking more callers' requests."""
CONTENTION_WINDOW_SECONDS = 1.0
OTHERS_WINDOW_SECONDS = 5.0
"""After the catch-up last found another process's events, this process's groups take
the writer lock shared for this long (``Registry._group_lock``)."""
"""After a group of this process loses a race, its groups take the writer lock
exclusively for this long (``Registry._group_lock``)."""


@dataclass(frozen=True)
class MoveJob:
    """One caller's movements for the group commit: a single movement or a batch, each
    row (client id, the movement or why it is malformed)."""

    principal: Principal
    rows: list[tuple[str, Movement | RegistryError]]
    single: bool
    request_id: str | None = field(default_factory=current_request_id)
    """The caller's call, captured in its thread: the group saves from another."""


@dataclass(frozen=True)
class Opening:
    """One caller's request to open an account, for the openings' group commit."""

    principal: Principal
    account_id: str
    account_type: AccountType
    holder: Holder
    request_id: str | None = field(default_factory=current_request_id)


class _BatchFailed(Exception):
    """A batch met an error that fails the whole call: decide the group without it."""


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

    def __init__(
        self, env: dict[str, str] | None = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        super().__init__(env)
        if isinstance(self.recorder, RegistryPostgresRecorder):
            self.recorder.set_statement_timeout(
                float(self.env.get(STATEMENT_TIMEOUT_ENV) or DEFAULT_STATEMENT_TIMEOUT)
            )
        self.clock = clock or (lambda: datetime.now(UTC))
        self.max_attempts = MAX_ATTEMPTS
        self._cache_position: int | None = (
            (self.recorder.max_notification_id() or 0)
            if isinstance(self.recorder, RegistryPostgresRecorder)
            else None
        )
        """The log position up to which ``_catch_up_cache`` has followed other writers
        (the head at start, when the cache is empty)."""
        self._contended_until = 0.0
        self._others_seen_at = -OTHERS_WINDOW_SECONDS
        """When the catch-up last found events another process wrote."""
        self._own_saves: list[tuple[int, int]] = []
        """Log ranges this process saved that the catch-up has not passed yet."""
        self._movements: GroupCommit[MoveJob, list[TransactionResult | RegistryError]] = (
            GroupCommit(
                self._move_group,
                limit=MAX_GROUP,
                weight=lambda job: len(job.rows),
                name="registry-group-commit",
            )
        )
        self._openings: GroupCommit[Opening, AccountResult] = GroupCommit(
            self._open_group, limit=MAX_GROUP, name="registry-openings"
        )
        self.proposals = FourEyes(self)
        self.restrictions = Restrictions(self)
        self.access = Access(self)
        """Four eyes: actions that take effect when a second regulator approves."""

    def close(self) -> None:
        self._movements.close()
        self._openings.close()
        super().close()

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
            if isinstance(obj, Aggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        if self._cache_position is not None and recordings:
            first, last = recordings[0].notification.id, recordings[-1].notification.id
            if first == self._cache_position + 1:
                # Nothing was written between what the cache has followed and this save,
                # whose events the cache gets below: the catch-up need not read them back.
                self._cache_position = last
            else:
                self._own_saves.append((first, last))  # the catch-up will read them
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
        snapshot; a batch crossing many intervals paid that many times over.
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
        for aggregate_id, (low, high) in spans.items():
            aggregate = processing_event.aggregates.get(aggregate_id)
            interval = self.snapshotting_intervals.get(type(aggregate))
            if aggregate is not None and interval and high // interval > (low - 1) // interval:
                self.snapshots.put([Snapshot.take(aggregate)])

    # == accounts ================================================================

    def open_account(
        self, principal: Principal, account_id: str, account_type: AccountType, holder: Holder
    ) -> AccountResult:
        """Open an account; the same request again is a replay. Saved together with the
        other accounts this process's callers are opening (3,700 accounts opened by 32
        callers one save each took ~10 s of a national year)."""
        Account.open(account_id, account_type, holder, str(principal))  # refuse bad input here
        return self._openings.submit(Opening(principal, account_id, account_type, holder))

    def _open_group(self, openings: Sequence[Opening]) -> list[AccountResult | RegistryError]:
        """Open every new account of the group in one save; an account that exists is a
        replay when the request matches it, else refused, as it would be alone."""

        def attempt(uow: UnitOfWork) -> list[AccountResult | RegistryError]:
            uow.prefetch((Account.id_for(o.account_id) for o in openings), self._load_many)
            outcomes: list[Account | AccountResult | RegistryError] = []
            for opening in openings:
                existing = uow.find(Account.id_for(opening.account_id), Account)
                if existing is None:
                    account = Account.open(
                        opening.account_id,
                        opening.account_type,
                        opening.holder,
                        str(opening.principal),
                    )
                    stamp(account.pending_events, opening.request_id)
                    outcomes.append(uow.add(account))
                elif (
                    existing.account_type is opening.account_type
                    and existing.holder == opening.holder.as_dict()
                ):
                    outcomes.append(AccountResult(AccountView.of(existing), replayed=True))
                else:
                    outcomes.append(
                        AccountExistsWithDifferentContent(
                            f"account {opening.account_id} exists with other details",
                            account=opening.account_id,
                        )
                    )
            position = _position(uow.save())
            return [
                AccountResult(AccountView.of(o), position=position) if isinstance(o, Account) else o
                for o in outcomes
            ]

        return self._retrying(attempt)

    def ensure_national_accounts(self) -> list[AccountResult]:
        """Open the four national accounts unless they exist, and start the restriction
        index (every movement reads it; a missing aggregate would cost a query each
        time). Safe to call at every start."""
        opened = [
            self.open_account(SYSTEM, account_id, account_type, Holder(REGISTRY_AUTHORITY))
            for account_type, account_id in NATIONAL_ACCOUNTS.items()
        ]

        def start_index(uow: UnitOfWork) -> None:
            if uow.find(RestrictionIndex.id_for(), RestrictionIndex) is None:
                uow.add(RestrictionIndex.start())
                uow.save()

        self._retrying(start_index)
        return opened

    def freeze_account(
        self, principal: Principal, account_id: str, reason: str, *, request_id: str | None = None
    ) -> AccountResult:
        check_reason(reason)
        return self._change_account(
            account_id,
            AccountState.FROZEN,
            request_id,
            lambda a, rid: a.freeze(reason, str(principal), rid),
        )

    def unfreeze_account(
        self, principal: Principal, account_id: str, reason: str, *, request_id: str | None = None
    ) -> AccountResult:
        check_reason(reason)
        return self._change_account(
            account_id,
            AccountState.OPEN,
            request_id,
            lambda a, rid: a.unfreeze(reason, str(principal), rid),
        )

    def close_account(
        self, principal: Principal, account_id: str, reason: str, *, request_id: str | None = None
    ) -> AccountResult:
        check_reason(reason)
        return self._change_account(
            account_id,
            AccountState.CLOSED,
            request_id,
            lambda a, rid: a.close(reason, str(principal), rid),
        )

    def _change_account(
        self,
        account_id: str,
        target: AccountState,
        request_id: str | None,
        change: Callable[[Account, str], None],
    ) -> AccountResult:
        """Change the account's state; a retry of the last change (same request id) is
        answered with the account as it is, not refused as unchanged."""
        check_account_id(account_id)
        rid = "" if request_id is None else check_client_id(request_id, "request id")

        def attempt(uow: UnitOfWork) -> AccountResult:
            account = uow.account(account_id)
            if account.is_replay(rid, target):
                return AccountResult(AccountView.of(account), replayed=True)
            change(account, rid)
            return AccountResult(AccountView.of(account), position=_position(uow.save()))

        return self._retrying(attempt)

    # == movements ===============================================================

    def issue_units(
        self,
        principal: Principal,
        transaction_id: str,
        unit_class: UnitClass,
        quantity: int,
        reason: str,
    ) -> TransactionResult:
        """Create a new block of serials of ``unit_class`` in the ISSUANCE account."""
        return self._move(
            principal,
            Movement(
                transaction_id,
                TransactionKind.ISSUANCE,
                None,
                NATIONAL_ACCOUNTS[AccountType.ISSUANCE],
                quantity,
                reason,
                unit_class=unit_class,
            ),
        )

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
        """Free allocation to a compliance account (from the reserve unless told otherwise)."""
        return self._move(
            principal,
            Movement(
                transaction_id,
                TransactionKind.ALLOCATION,
                source,
                account_id,
                quantity,
                reason,
                selector=selector,
            ),
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
        """Over-allocation given back at true-up, to the allocation reserve."""
        return self._move(
            principal,
            Movement(
                transaction_id,
                TransactionKind.ALLOCATION_RETURN,
                account_id,
                NATIONAL_ACCOUNTS[AccountType.ALLOCATION_RESERVE],
                quantity,
                reason,
                selector=selector,
            ),
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
        return self._move(
            principal,
            Movement(
                transaction_id,
                TransactionKind.TRANSFER,
                source,
                destination,
                quantity,
                reason,
                selector=selector,
            ),
        )

    def settle_trade(self, principal: Principal, trade: Trade) -> TransactionResult:
        return self._move(principal, trade.movement())

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
        """Move units to SURRENDER against the (account, compliance year) obligation."""
        return self._move(
            principal,
            Movement(
                transaction_id,
                TransactionKind.SURRENDER,
                account_id,
                NATIONAL_ACCOUNTS[AccountType.SURRENDER],
                quantity,
                reason,
                selector=selector,
                compliance_year=compliance_year,
            ),
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
        """Voluntary cancellation: the units go to CANCELLATION and never move again."""
        return self._move(
            principal,
            Movement(
                transaction_id,
                TransactionKind.CANCELLATION,
                account_id,
                NATIONAL_ACCOUNTS[AccountType.CANCELLATION],
                quantity,
                reason,
                selector=selector,
            ),
        )

    def reverse(
        self,
        principal: Principal,
        transaction_id: str,
        original_party: str,
        original_transaction_id: str,
        reason: str,
    ) -> TransactionResult:
        """Undo a completed transaction: the same serial blocks go back where they came from."""
        return self._move(
            principal,
            Movement(
                transaction_id,
                TransactionKind.REVERSAL,
                None,
                None,
                None,
                reason,
                reverses=(original_party, original_transaction_id),
            ),
        )

    def settle_trades(self, principal: Principal, trades: Sequence[Trade]) -> list[TradeResult]:
        """Settle many trades in order, one result each, in one atomic save when possible.

        A trade refused for the ledger's state is recorded as refused and does not stop
        the others; a malformed trade is rejected and nothing of it is stored.
        """
        rows = self._move_batch(principal, [(t.trade_id, t.movement) for t in trades], "trades")
        return [TradeResult.of_row(row) for row in rows]

    def allocate_many(self, principal: Principal, rows: Sequence[AllocationRow]) -> list[RowResult]:
        """A whole allocation table in one call, with the batch semantics of trades: one
        save, one result per row in request order, refusals recorded, retries replayed."""
        return self._move_batch(principal, [(r.transaction_id, r.movement) for r in rows], "rows")

    def _move_batch(
        self,
        principal: Principal,
        requests: Sequence[tuple[str, Callable[[], Movement]]],
        field: str,
    ) -> list[RowResult]:
        """Evaluate (client id, movement) requests in order and save them in one save
        (shared with other callers' movements, see ``_move_group``): one result per row,
        refusals recorded, retries replayed. ``field`` names the list in the request,
        for a too-large batch's error."""
        if len(requests) > MAX_BATCH:
            raise InvalidCommand(
                f"at most {MAX_BATCH} {field} per batch, got {len(requests)}",
                reason="BATCH_TOO_LARGE",
                field=field,
                limit=MAX_BATCH,
            )
        rows: list[tuple[str, Movement | RegistryError]] = []
        for client_id, movement in requests:
            try:
                rows.append((client_id, movement()))
            except InvalidCommand as error:
                rows.append((client_id, error))
        outcomes = self._movements.submit(MoveJob(principal, rows, single=False))
        return [
            RowResult.of(outcome)
            if isinstance(outcome, TransactionResult)
            else RowResult.rejected(client_id, outcome)
            for (client_id, _), outcome in zip(rows, outcomes, strict=True)
        ]

    def _move(self, principal: Principal, movement: Movement) -> TransactionResult:
        """One movement, saved with whatever other movements this process's callers
        asked for meanwhile (see ``_move_group``)."""
        outcome = self._movements.submit(
            MoveJob(principal, [(movement.client_id, movement)], single=True)
        )[0]
        if isinstance(outcome, RegistryError):
            raise outcome
        return outcome

    def _move_group(
        self, jobs: Sequence[MoveJob]
    ) -> list[list[TransactionResult | RegistryError] | BaseException]:
        """Decide independent callers' movements in order on one unit of work and save
        them in one save (``group_commit``). Each caller gets what it would have got
        alone: per movement its result, a replay, a refusal or a rejection; a batch
        that cannot be decided (an error that is not a refusal) fails alone, and the
        group is decided again without it. After a lost race, what was recorded
        meanwhile is replayed."""
        failed: dict[int, RegistryError] = {}
        known: dict[tuple[str, str], Transaction] = {}

        def attempt(uow: UnitOfWork) -> dict[tuple[int, int], TransactionResult | RegistryError]:
            self._catch_up_cache()
            while True:
                try:
                    return self._apply_jobs(uow, jobs, failed, known)
                except _BatchFailed:
                    uow = UnitOfWork(self, optimistic=uow.optimistic)

        def on_conflict() -> None:
            for party in {job.principal.party for job in jobs}:
                ids = [
                    m.client_id
                    for job in jobs
                    if job.principal.party == party
                    for _, m in job.rows
                    if isinstance(m, Movement)
                ]
                known.update(
                    {
                        (party, client_id): txn
                        for client_id, txn in self._recorded_transactions(party, ids).items()
                    }
                )

        outcomes = self._retrying(attempt, on_conflict, lock=self._group_lock)
        return [
            failed[j] if j in failed else [outcomes[(j, r)] for r in range(len(job.rows))]
            for j, job in enumerate(jobs)
        ]

    def _apply_jobs(
        self,
        uow: UnitOfWork,
        jobs: Sequence[MoveJob],
        failed: dict[int, RegistryError],
        known: dict[tuple[str, str], Transaction],
    ) -> dict[tuple[int, int], TransactionResult | RegistryError]:
        uow.prefetch(
            (
                aggregate_id
                for j, job in enumerate(jobs)
                if j not in failed
                for _, movement in job.rows
                if isinstance(movement, Movement)
                for aggregate_id in _reads(movement)
            ),
            self._load_many,
        )
        outcomes: dict[tuple[int, int], TransactionResult | RegistryError] = {}
        first: dict[tuple[str, str], tuple[int, int]] = {}
        repeats: list[tuple[int, int]] = []
        new: list[tuple[tuple[int, int], Transaction]] = []
        for j, job in enumerate(jobs):
            if j in failed:
                continue
            for r, (_, movement) in enumerate(job.rows):
                if isinstance(movement, RegistryError):
                    outcomes[(j, r)] = movement
                    continue
                key = (job.principal.party, movement.client_id)
                if key in first:
                    repeats.append((j, r))  # an id twice (in a batch, or a retry racing
                    continue  # its original): a replay of the first, below
                first[key] = (j, r)
                if key in known:
                    outcomes[(j, r)] = _replay_outcome(known[key], movement)
                    continue
                try:
                    txn = self._apply(uow, job.principal, movement)
                    uow.stamp_step(job.request_id, txn)
                    new.append(((j, r), txn))
                except RegistryError as error:
                    if uow.step_changed():
                        raise RuntimeError(
                            f"{movement.kind} {movement.client_id} changed state before "
                            f"failing ({error.reason}); guards must run before any change"
                        ) from error
                    if not job.single:
                        failed[j] = error
                        raise _BatchFailed from error
                    outcomes[(j, r)] = error
        if any(txn.status is TransactionStatus.REFUSED for _, txn in new):
            uow.verify_current()  # a refusal saves nothing it read: read it fresh
        position = _position(uow.save(*(txn for _, txn in new)))
        for at, txn in new:
            outcomes[at] = TransactionResult.of(txn, position=position)
        for j, r in repeats:
            movement = jobs[j].rows[r][1]
            assert isinstance(movement, Movement)
            fj, fr = first[(jobs[j].principal.party, movement.client_id)]
            first_movement = jobs[fj].rows[fr][1]
            assert isinstance(first_movement, Movement)
            outcomes[(j, r)] = _repeat_of(outcomes[(fj, fr)], first_movement, movement)
        return outcomes

    def _apply(self, uow: UnitOfWork, principal: Principal, movement: Movement) -> Transaction:
        """Evaluate one movement on the unit of work: a completed or a refused record."""
        party = principal.party
        txn_id = Transaction.id_for(party, movement.client_id)
        record: dict[str, Any] = {
            "party": party,
            "client_id": movement.client_id,
            "kind": movement.kind,
            "reason": movement.reason,
            "principal": principal,
            "fingerprint": movement.fingerprint,
            "details": movement.details(),
        }
        uow.begin_step()
        try:
            source, destination, blocks = self._perform(uow, party, txn_id, movement)
        except RECORDABLE as error:
            if uow.step_changed():
                raise RuntimeError(
                    f"{movement.kind} {movement.client_id} changed state before refusing "
                    f"({error.reason}); guards must run before any change"
                ) from error
            return Transaction.refuse(
                source=movement.source, destination=movement.destination, error=error, **record
            )
        return Transaction.complete(
            source=source, destination=destination, blocks=list(blocks), **record
        )

    def _perform(
        self, uow: UnitOfWork, party: str, txn_id: UUID, movement: Movement
    ) -> tuple[str | None, str, tuple[SerialBlock, ...]]:
        """Check every guard, then change the aggregates. Returns (source, destination, blocks)."""
        if movement.kind is TransactionKind.ISSUANCE:
            return self._perform_issuance(uow, txn_id, movement)
        if movement.kind is TransactionKind.REVERSAL:
            return self._perform_reversal(uow, txn_id, movement)
        assert movement.source and movement.destination and movement.selector
        assert movement.quantity is not None
        source = uow.account(movement.source)
        destination = uow.account(movement.destination)
        check_movement(movement.kind, source.account_type, destination.account_type)
        source.ensure_can_send()
        destination.ensure_can_receive()
        if movement.hold_id is not None:
            now = self.clock()
            hold = uow.hold(party, movement.hold_id)
            hold.ensure_active(now)
            hold.ensure_matches(source.account_id, movement.selector, movement.quantity)
            check_restrictions(
                uow,
                source,
                movement.kind,
                movement.selector,
                movement.quantity,
                blocks=source.held.get(str(hold.id), ()),
            )
            blocks = source.debit_hold(hold.id, txn_id, movement.quantity)
            hold.settle(txn_id, movement.quantity, now)
        else:
            pool = check_restrictions(
                uow, source, movement.kind, movement.selector, movement.quantity
            )
            if movement.kind is TransactionKind.SURRENDER:
                return self._perform_surrender(uow, txn_id, movement, source, destination, pool)
            if (
                movement.kind is TransactionKind.ALLOCATION
                and destination.account_type is AccountType.COMPLIANCE
            ):
                return self._perform_allocation(uow, txn_id, movement, source, destination, pool)
            if movement.kind is TransactionKind.ALLOCATION_RETURN:
                return self._perform_return(uow, txn_id, movement, source, destination, pool)
            blocks = source.debit(txn_id, movement.selector, movement.quantity, pool)
        destination.credit(txn_id, blocks)
        return source.account_id, destination.account_id, blocks

    def _perform_return(
        self,
        uow: UnitOfWork,
        txn_id: UUID,
        movement: Movement,
        source: Account,
        destination: Account,
        pool: Holding | None,
    ) -> tuple[str | None, str, tuple[SerialBlock, ...]]:
        """A true-up return: what the account holds of the vintage goes back; the rest
        it cannot cover is carried as a debt into the next year's obligation (deducted
        from the next allocation). The year's allocation counts the full return."""
        assert movement.selector is not None and movement.quantity is not None
        year = movement.selector.vintage
        carries_debt = (
            year is not None
            and MIN_YEAR <= year < MAX_YEAR
            and movement.selector.unit_type is UnitType.CEA
        )
        holding = source.available if pool is None else pool
        covered = (
            min(movement.quantity, units.total(holding, movement.selector))
            if carries_debt
            else movement.quantity
        )  # else: all of it, or refused
        blocks: tuple[SerialBlock, ...] = ()
        if covered:
            blocks = source.debit(txn_id, movement.selector, covered, pool)
            destination.credit(txn_id, blocks)
        if carries_debt:
            assert year is not None
            uow.obligation(source.account_id, year).record_allocation(txn_id, -movement.quantity)
            if covered < movement.quantity:
                uow.obligation(source.account_id, year + 1).carry_debt(
                    year, movement.quantity - covered
                )
        return source.account_id, destination.account_id, blocks

    def _perform_surrender(
        self,
        uow: UnitOfWork,
        txn_id: UUID,
        movement: Movement,
        source: Account,
        destination: Account,
        pool: Holding | None,
    ) -> tuple[str | None, str, tuple[SerialBlock, ...]]:
        """Check what would be taken against the year's rules for the account's sector
        (vintages, CCER cap, advance use, a closed year), then move it."""
        assert movement.compliance_year is not None and movement.selector is not None
        assert movement.quantity is not None
        year = movement.compliance_year
        rules, closed = self._rules(uow, year, source)
        if closed:
            raise ComplianceYearClosed(f"compliance year {year} is closed", year=year)
        existing = uow.find(
            ComplianceObligation.id_for(source.account_id, year), ComplianceObligation
        )
        # A first surrender for the year starts its obligation, but only once every
        # guard has passed: a refusal changes nothing.
        obligation = existing or ComplianceObligation.start(source.account_id, year)
        advance = obligation.check_surrender(
            rules, source.would_debit(movement.selector, movement.quantity, pool)
        )
        blocks = source.debit(txn_id, movement.selector, movement.quantity, pool)
        destination.credit(txn_id, blocks)
        if existing is None:
            uow.add(obligation)
        obligation.record_surrender(
            txn_id, movement.selector.unit_type.value, movement.quantity, advance
        )
        return source.account_id, destination.account_id, blocks

    def _perform_allocation(
        self,
        uow: UnitOfWork,
        txn_id: UUID,
        movement: Movement,
        source: Account,
        destination: Account,
        pool: Holding | None,
    ) -> tuple[str | None, str, tuple[SerialBlock, ...]]:
        """Free allocation to a compliance account, counted towards the year of its
        vintage; a shortfall carried from the year before is deducted first (the
        deducted units stay where they are, and the transaction records how many)."""
        assert movement.selector is not None and movement.quantity is not None
        year = movement.selector.vintage
        if year is None:  # the oldest matching block is what is taken first
            year = source.would_debit(movement.selector, 1, pool)[0].unit_class.vintage
        # free allocation counts towards the year of its vintage; offsets delivered
        # this way are not allocation
        counted = movement.selector.unit_type is UnitType.CEA and MIN_YEAR <= year <= MAX_YEAR
        existing = (
            uow.find(
                ComplianceObligation.id_for(destination.account_id, year), ComplianceObligation
            )
            if counted
            else None
        )
        deducted = min(existing.debt_outstanding, movement.quantity) if existing else 0
        moved = movement.quantity - deducted
        blocks: tuple[SerialBlock, ...] = ()
        if moved:  # the last guard: the obligation is started only once it has passed
            blocks = source.debit(txn_id, movement.selector, moved, pool)
            destination.credit(txn_id, blocks)
        if counted:
            obligation = uow.obligation(destination.account_id, year)
            if deducted:
                obligation.deduct_debt(txn_id, deducted)
            obligation.record_allocation(txn_id, movement.quantity)
        for vintage, quantity in _cea_by_vintage(blocks).items():
            if vintage != year:
                uow.obligation(destination.account_id, vintage).record_allocation(txn_id, quantity)
        return source.account_id, destination.account_id, blocks

    def _rules(self, uow: UnitOfWork, year: int, account: Account) -> tuple[ComplianceRules, bool]:
        """The year's rules for the account's sector, and whether the year is closed."""
        compliance_year = uow.find(ComplianceYear.id_for(year), ComplianceYear)
        if compliance_year is None:
            return DEFAULT_RULES, False
        return compliance_year.rules_for(account.holder.get("sector", "")), compliance_year.closed

    @staticmethod
    def _perform_issuance(
        uow: UnitOfWork, txn_id: UUID, movement: Movement
    ) -> tuple[str | None, str, tuple[SerialBlock, ...]]:
        assert movement.unit_class is not None and movement.quantity is not None
        issuance = uow.account(NATIONAL_ACCOUNTS[AccountType.ISSUANCE])
        issuance.ensure_can_receive()
        block = uow.counter(movement.unit_class).issue(movement.quantity, txn_id)
        issuance.credit(txn_id, [block])
        return None, issuance.account_id, (block,)

    @staticmethod
    def _perform_reversal(
        uow: UnitOfWork, txn_id: UUID, movement: Movement
    ) -> tuple[str | None, str, tuple[SerialBlock, ...]]:
        assert movement.reverses is not None
        original = uow.transaction(*movement.reverses)
        original.ensure_reversible()
        assert original.source is not None and original.destination is not None
        source = uow.account(original.destination)
        destination = uow.account(original.source)
        source.ensure_can_send()
        destination.ensure_can_receive()
        undo = _obligation_undo(uow, original)  # its guards run before anything changes
        blocks = source.debit_blocks(txn_id, original.blocks)
        destination.credit(txn_id, blocks)
        original.mark_reversed(txn_id)
        for step in undo:
            step(txn_id)
        return source.account_id, destination.account_id, blocks

    # == compliance ==============================================================

    def record_verified_emissions(
        self, principal: Principal, rows: Sequence[EmissionsRow]
    ) -> EmissionsRecorded:
        """Record verified emissions for many (account, year), all in one save or none.

        Every row is checked first and every bad row named (RowsInvalid), because a
        half-loaded table is worse than none. The same figure again is UNCHANGED.
        """
        self._check_emissions_rows(rows)

        def attempt(uow: UnitOfWork) -> EmissionsRecorded:
            for year in sorted({row.compliance_year for row in rows}):
                compliance_year = uow.find(ComplianceYear.id_for(year), ComplianceYear)
                if compliance_year is not None:
                    compliance_year.ensure_open()  # a closed year's figures are fixed
            uow.prefetch(
                (ComplianceObligation.id_for(row.account_id, row.compliance_year) for row in rows),
                self._load_many,
            )
            results = []
            for row in rows:
                obligation = uow.obligation(row.account_id, row.compliance_year)
                recorded = obligation.record_emissions(
                    row.verified_emissions, row.reason, str(principal)
                )
                results.append(
                    EmissionsRowResult(
                        row.account_id,
                        row.compliance_year,
                        EmissionsRowStatus.RECORDED if recorded else EmissionsRowStatus.UNCHANGED,
                    )
                )
            return EmissionsRecorded(tuple(results), _position(uow.save()))

        return self._retrying(attempt)

    def _check_emissions_rows(self, rows: Sequence[EmissionsRow]) -> None:
        if not rows:
            raise InvalidCommand("no emissions rows given", reason="EMPTY_BATCH", field="rows")
        if len(rows) > MAX_BATCH:
            raise InvalidCommand(
                f"at most {MAX_BATCH} emissions rows per call, got {len(rows)}",
                reason="BATCH_TOO_LARGE",
                field="rows",
                limit=MAX_BATCH,
            )
        uow = UnitOfWork(self, optimistic=True)  # an account's type never changes
        uow.prefetch(
            (Account.id_for(row.account_id) for row in rows if isinstance(row.account_id, str)),
            self._load_many,
        )
        seen: dict[tuple[str, int], int] = {}
        violations: list[Violation] = []
        for index, row in enumerate(rows):
            violations += _emissions_row_violations(uow, f"rows[{index}]", row)
            first = seen.setdefault((row.account_id, row.compliance_year), index)
            if first != index:
                violations.append(
                    Violation(
                        f"rows[{index}].account_id",
                        "DUPLICATE_ROW",
                        f"rows[{first}] already gives {row.account_id} {row.compliance_year}",
                    )
                )
        if violations:
            bad = len({v.field.split(".")[0] for v in violations})
            raise RowsInvalid(
                f"{bad} of {len(rows)} emissions rows are invalid; nothing was recorded",
                violations=violations,
            )

    def get_compliance_status(self, account_id: str, year: int) -> ComplianceView:
        """Where (account, year) stands, judged by the year's rules for its sector."""
        check_account_id(account_id)
        account = self._account(account_id)
        check_year(year)
        if account.account_type is not AccountType.COMPLIANCE:
            raise InvalidCommand(
                f"{account_id} is a {account.account_type} account: only compliance "
                "accounts have obligations",
                reason="NOT_COMPLIANCE_ACCOUNT",
                field="account_id",
                account=account_id,
            )
        uow = UnitOfWork(self)
        obligation = uow.find(ComplianceObligation.id_for(account_id, year), ComplianceObligation)
        rules, closed = self._rules(uow, year, account)
        return ComplianceView.of(account_id, year, obligation, rules, closed)

    def set_compliance_rules(
        self, principal: Principal, year: int, sector: str, rules: ComplianceRules, reason: str
    ) -> ComplianceRulesView:
        """Set the rules one sector (or, ``*``, every sector without its own) surrenders
        under for ``year``; the same rules again change nothing. Refused once the year
        is closed."""
        check_year(year)
        check_rule_key(sector)
        rules.check(year)
        check_reason(reason)

        def attempt(uow: UnitOfWork) -> ComplianceRulesView:
            compliance_year = uow.compliance_year(year)
            changed = compliance_year.change_rules(sector, rules, str(principal), reason)
            position = _position(uow.save()) if changed else None
            return ComplianceRulesView.of(compliance_year, year, position)

        return self._retrying(attempt)

    def get_compliance_rules(self, year: int) -> ComplianceRulesView:
        check_year(year)
        return ComplianceRulesView.of(self._find(ComplianceYear.id_for(year), ComplianceYear), year)

    def close_compliance_year(self, principal: Principal, year: int, reason: str) -> YearClosing:
        """Deadline processing, all in one save: every obligation of the year is closed
        with its shortfall fixed, each shortfall is carried as a debt into the next
        year's obligation (deducted from the next allocation), and the year's rules are
        frozen. Closing a closed year again answers what the closing fixed."""
        check_year(year)
        check_reason(reason)

        def attempt(uow: UnitOfWork) -> YearClosing:
            compliance_year = uow.compliance_year(year)
            accounts, obligations = self._compliance_accounts(uow, year)
            if compliance_year.closed:
                short = [o.shortfall for o in obligations.values() if o.shortfall]
                return YearClosing(
                    year,
                    sum(1 for o in obligations.values() if o.closed),
                    len(short),
                    sum(short),
                    replayed=True,
                )
            closed = shortfalls = tonnes = 0
            for account in accounts:
                obligation = obligations.get(account.account_id)
                if obligation is None or obligation.closed:
                    continue
                shortfall = obligation.close(
                    compliance_year.rules_for(account.holder.get("sector", "")), str(principal)
                )
                closed += 1
                if shortfall and year < MAX_YEAR:
                    uow.obligation(account.account_id, year + 1).carry_debt(year, shortfall)
                    shortfalls += 1
                    tonnes += shortfall
            compliance_year.close(str(principal), reason)
            return YearClosing(year, closed, shortfalls, tonnes, position=_position(uow.save()))

        return self._retrying(attempt)

    def compliance_report(self, year: int) -> list[ComplianceReportLine]:
        """Compliance accounts by sector, province and status for ``year``, with the
        tonnes verified, owed, surrendered (by unit type) and short."""
        check_year(year)
        uow = UnitOfWork(self, optimistic=True)
        compliance_year = uow.find(ComplianceYear.id_for(year), ComplianceYear)
        accounts, obligations = self._compliance_accounts(uow, year)
        lines: dict[tuple[str, str, ComplianceState], ComplianceReportLine] = {}
        for account in accounts:
            sector = account.holder.get("sector", "")
            rules = compliance_year.rules_for(sector) if compliance_year else DEFAULT_RULES
            view = ComplianceView.of(
                account.account_id,
                year,
                obligations.get(account.account_id),
                rules,
                compliance_year is not None and compliance_year.closed,
            )
            key = (sector, account.holder.get("province", ""), view.state)
            line = lines.get(key) or ComplianceReportLine(*key)
            lines[key] = replace(
                line,
                accounts=line.accounts + 1,
                verified_emissions=line.verified_emissions + (view.verified_emissions or 0),
                obligation=line.obligation + view.obligation,
                surrendered_cea=line.surrendered_cea + view.surrendered_cea,
                surrendered_ccer=line.surrendered_ccer + view.surrendered_ccer,
                shortfall=line.shortfall + view.shortfall,
            )
        return [lines[key] for key in sorted(lines)]

    def _compliance_accounts(
        self, uow: UnitOfWork, year: int
    ) -> tuple[list[Account], dict[str, ComplianceObligation]]:
        """Every compliance account, and the obligations of ``year`` that exist, loaded
        in a few queries."""
        ids = list(self._originators(Account.Opened.TOPIC))
        uow.prefetch(ids, self._load_many)
        accounts = [
            a
            for a in (uow.find(i, Account) for i in ids)
            if a is not None and a.account_type is AccountType.COMPLIANCE
        ]
        uow.prefetch(
            (
                ComplianceObligation.id_for(a.account_id, y)
                for a in accounts
                for y in (year, year + 1)
            ),
            self._load_many,
        )
        found = {
            a.account_id: uow.find(
                ComplianceObligation.id_for(a.account_id, year), ComplianceObligation
            )
            for a in accounts
        }
        return accounts, {k: v for k, v in found.items() if v is not None}

    # == holds ===================================================================

    def place_hold(
        self,
        principal: Principal,
        hold_id: str,
        account_id: str,
        selector: UnitSelector,
        quantity: int,
        timeout_seconds: int,
    ) -> HoldResult:
        """Reserve units for an open sell order: available -> held, until the timeout."""
        check_client_id(hold_id, "hold id")
        check_account_id(account_id)
        check_quantity(quantity)
        check_timeout(timeout_seconds)
        party = principal.party
        content = {
            "account": account_id,
            "selector": selector.as_dict(),
            "quantity": quantity,
            "timeout_seconds": timeout_seconds,
        }
        record: dict[str, Any] = {
            "party": party,
            "hold_id": hold_id,
            "account_id": account_id,
            "selector": selector,
            "quantity": quantity,
            "timeout_seconds": timeout_seconds,
            "principal": principal,
            "fingerprint": fingerprint(content),
        }

        def attempt(uow: UnitOfWork) -> HoldResult:
            try:
                account = uow.account(account_id)
                if account.account_type not in HOLDERS:
                    raise MovementNotAllowed(
                        f"units in a {account.account_type} account cannot be held",
                        account=account_id,
                    )
                # a hold reserves units for exchange settlement: what would stop that
                # settlement (a freeze, a detention, a halt) refuses the hold now
                pool = check_restrictions(
                    uow, account, TransactionKind.SETTLEMENT, selector, quantity
                )
                blocks = account.hold(Hold.id_for(party, hold_id), selector, quantity, pool)
            except RECORDABLE as error:
                uow.verify_current()
                hold = Hold.refuse(error=error, **record)
                return HoldResult.of(hold, position=_position(self.save(hold)))
            hold = Hold.place(now=self.clock(), **record)
            return HoldResult.of(hold, blocks, position=_position(uow.save(hold)))

        def on_conflict() -> HoldResult | None:
            hold = self._find(Hold.id_for(party, hold_id), Hold)
            if hold is None:
                return None
            if hold.fingerprint != record["fingerprint"]:
                raise HoldExistsWithDifferentContent(
                    f"hold {party}:{hold_id} exists with other content", hold=f"{party}:{hold_id}"
                )
            return self._hold_result(hold, replayed=True)

        return self._retrying(attempt, on_conflict)

    def release_hold(self, principal: Principal, hold_id: str, reason: str = "") -> HoldResult:
        """Give held units back to available. Releasing a released hold is a no-op replay."""
        check_client_id(hold_id, "hold id")
        check_reason(reason)
        return self._end_hold(
            principal.party,
            hold_id,
            HoldStatus.RELEASED,
            lambda hold: hold.release(principal, reason),
        )

    def expire_hold(self, principal: Principal, party: str, hold_id: str) -> HoldResult:
        """Release a hold whose timeout has passed (refused while it has not)."""
        now = self.clock()
        return self._end_hold(
            party, hold_id, HoldStatus.EXPIRED, lambda hold: hold.expire(principal, now)
        )

    def expire_due_holds(self, principal: Principal = SYSTEM) -> list[HoldResult]:
        """Expire every active hold past its timeout (scans the log; a read model will index)."""
        now = self.clock()
        expired = []
        for hold_uuid in self._originators(Hold.Placed.TOPIC):
            hold = self._find(hold_uuid, Hold)
            if hold is not None and hold.is_due(now):
                expired.append(self.expire_hold(principal, hold.party, hold.hold_id))
        return expired

    def _end_hold(
        self, party: str, hold_id: str, final: HoldStatus, end: Callable[[Hold], None]
    ) -> HoldResult:
        def attempt(uow: UnitOfWork) -> HoldResult:
            hold = uow.hold(party, hold_id)
            if hold.status is final:
                return HoldResult.of(hold, replayed=True)
            account = uow.account(hold.account_id)
            end(hold)
            blocks = account.release_hold(hold.id)
            return HoldResult.of(hold, blocks, position=_position(uow.save()))

        return self._retrying(attempt)

    # == queries =================================================================

    def get_account(self, account_id: str) -> AccountView:
        return AccountView.of(self._account(account_id))

    def get_holdings(self, account_id: str) -> list[HoldingView]:
        """Per unit class: total, held by exchange holds, and available."""
        account = self._account(account_id)
        available = list(account.available)
        held = list(account.held_blocks)
        classes = sorted({b.unit_class for b in [*available, *held]})
        views = []
        for unit_class in classes:
            selector = UnitSelector(
                unit_class.unit_type, unit_class.vintage, unit_class.project or None
            )
            in_class = [b for b in account.all_blocks if b.unit_class == unit_class]
            held_qty = units.total(held, selector)
            avail_qty = units.total(available, selector)
            views.append(
                HoldingView(unit_class, held_qty + avail_qty, held_qty, avail_qty, tuple(in_class))
            )
        return views

    def get_transaction(self, party: str, transaction_id: str) -> TransactionResult:
        return TransactionResult.of(UnitOfWork(self).transaction(party, transaction_id))

    def get_hold(self, party: str, hold_id: str) -> HoldResult:
        return self._hold_result(UnitOfWork(self).hold(party, hold_id))

    def get_surrendered(self, account_id: str, year: int) -> dict[str, int]:
        """Units surrendered against (account, compliance year), by unit type."""
        check_year(year)
        obligation = self._find(ComplianceObligation.id_for(account_id, year), ComplianceObligation)
        return dict(obligation.surrendered) if obligation else {}

    def account_ids(self) -> list[str]:
        accounts = (self._find(i, Account) for i in self._originators(Account.Opened.TOPIC))
        return [a.account_id for a in accounts if a is not None]

    def locate_serial(self, unit_class: UnitClass, serial: int) -> tuple[str, bool]:
        """(account holding ``serial`` now, whether it is held by an exchange hold)."""
        counter = self._find(SerialCounter.id_for(unit_class), SerialCounter)
        if counter is None or not 0 < serial < counter.next_serial:
            raise UnknownSerial(
                f"serial {serial} of {unit_class} was never issued",
                unit_class=unit_class.key,
                serial=serial,
            )
        for account_id in self.account_ids():
            account = self._account(account_id)
            for block in account.all_blocks:
                if block.unit_class == unit_class and block.contains(serial):
                    held = any(
                        b.unit_class == unit_class and b.contains(serial)
                        for b in account.held_blocks
                    )
                    return account_id, held
        raise RuntimeError(f"serial {serial} of {unit_class} is issued but held nowhere")

    def supply(self) -> list[SupplyLine]:
        """Units issued per class against the sum of every account's holding (conservation)."""
        issued: dict[UnitClass, int] = {}
        for counter_id in self._originators(SerialCounter.Started.TOPIC):
            counter = self._find(counter_id, SerialCounter)
            if counter is not None:
                issued[counter.unit_class] = counter.issued
        held: dict[UnitClass, int] = {}
        for account_id in self.account_ids():
            for block in self._account(account_id).all_blocks:
                held[block.unit_class] = held.get(block.unit_class, 0) + block.quantity
        return [
            SupplyLine(c, issued.get(c, 0), held.get(c, 0))
            for c in sorted(issued.keys() | held.keys())
        ]

    # == plumbing ================================================================

    def _retrying(
        self,
        attempt: Callable[[UnitOfWork], R],
        on_conflict: Callable[[], R | None] | None = None,
        lock: Callable[[bool], AbstractContextManager[None]] = lambda _: nullcontext(),
    ) -> R:
        """Run ``attempt`` on a fresh unit of work, retrying lost races.

        The first attempt trusts the aggregate cache (no read round trips; a stale copy
        fails the version-checked save). When it loses, the cached copies of what it
        read are brought up to date in one query and the second attempt trusts them
        again; later retries read each aggregate fresh from the store.
        A store collision or a stale read first asks ``on_conflict`` (a replay answers);
        otherwise back off with full jitter and try again, a bounded number of times.
        Every attempt runs under ``lock(retry)`` (see ``_group_lock``).
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
            uow = UnitOfWork(self, optimistic=tries == 0 or refreshed)
            refreshed = False
            try:
                with lock(tries > 0):
                    return attempt(uow)
            except (IntegrityError, StaleRead):
                refreshed = tries == 0 and self._refresh_cache(uow.read_versions)
            except RegistryError:
                raise
            except Exception as error:
                fault = database_fault(error)
                if fault == DATABASE_BUSY or (fault and tries >= DB_FAULT_ATTEMPTS - 1):
                    raise
                if fault:
                    drop_dead_connections(self.recorder)
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

    def _group_lock(self, retry: bool) -> AbstractContextManager[None]:
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
            return writer_lock(self.recorder, exclusive=True)
        if now - self._others_seen_at < OTHERS_WINDOW_SECONDS:
            return writer_lock(self.recorder, exclusive=False)
        return nullcontext()  # no other process writing lately: no round trips for it

    def _catch_up_cache(self) -> None:
        """Apply to the cached aggregates what other processes wrote since this one last
        looked (before a group is decided), so the group decides on current copies
        instead of losing its save and trying again: with two server processes, every
        group found the account the other had just changed (CN-SURRENDER, in the
        national year) stale.

        Reads the log after the last position seen, one query (this process's own
        saves move the position on when nothing came between, see ``save``); a copy
        that missed events is dropped (the next read loads it), and after a long
        absence (more than CACHE_CATCH_UP_LIMIT events) the whole cache is dropped."""
        recorder, cache = self.recorder, self.repository.cache
        if (
            not isinstance(recorder, RegistryPostgresRecorder)
            or cache is None
            or self._cache_position is None
        ):
            return
        rows = recorder.select_log_after(self._cache_position, CACHE_CATCH_UP_LIMIT + 1)
        if len(rows) > CACHE_CATCH_UP_LIMIT:
            self.repository.cache = LRUCache(maxsize=getattr(cache, "maxsize", 20_000))
            self._cache_position = recorder.max_notification_id() or 0
            return
        own, self._own_saves = self._own_saves, []
        if any(not any(first <= position <= last for first, last in own) for position, _ in rows):
            self._others_seen_at = time.monotonic()
        if rows:
            self._own_saves.extend(r for r in own if r[1] > rows[-1][0])
        else:
            self._own_saves.extend(own)
        for position, stored in rows:
            self._cache_position = position
            aggregate_id = _uuid(stored.originator_id)
            cached = _cached_copy(cache, aggregate_id)
            if cached is None or cached.version >= stored.originator_version:
                continue  # not followed here, or it has this event already
            if cached.version + 1 == stored.originator_version:
                self._advance_cached(aggregate_id, cached, [stored])
            else:
                cache.get(aggregate_id, evict=True)  # it missed events: load it afresh

    def _refresh_cache(self, read_versions: dict[UUID, int]) -> bool:
        """Apply to the cached copies of these aggregates what the store has after the
        versions read, in one query; False where the store cannot do that in one.

        Several server processes each cache the accounts they touched; another
        process's writes make those copies stale, and a batch of 1,000 trades reads
        ~1,000 accounts: reading each afresh after a lost race took a second per batch.
        Only copies still at the version read are advanced."""
        if not isinstance(self.recorder, RegistryPostgresRecorder) or self.repository.cache is None:
            return False
        newer: dict[UUID, list[StoredEvent]] = {}
        for stored in self.recorder.select_newer_events(read_versions):
            newer.setdefault(_uuid(stored.originator_id), []).append(stored)
        for aggregate_id, events in newer.items():
            cached = _cached_copy(self.repository.cache, aggregate_id)
            if (
                cached is not None
                and cached.version == read_versions[aggregate_id]
                and events[0].originator_version == cached.version + 1
            ):
                self._advance_cached(aggregate_id, cached, events)
        return True

    def _advance_cached(
        self, aggregate_id: UUID, cached: Aggregate, events: Sequence[StoredEvent]
    ) -> None:
        """Cache a copy of ``cached`` with ``events`` (its next ones) applied. The copy
        replaces it, never changes it in place: other threads may hold it."""
        assert self.repository.cache is not None
        self.repository.cache.put(
            aggregate_id, replay(deepcopy(cached), map(self.mapper.to_domain_event, events))
        )

    def _recorded_transactions(
        self, party: str, client_ids: Sequence[str]
    ) -> dict[str, Transaction]:
        """The recorded transactions among these client ids: on PostgreSQL in one query
        (after a lost race a batch asks for 1,000, usually none recorded)."""
        ids = {Transaction.id_for(party, c): c for c in dict.fromkeys(client_ids)}
        if not isinstance(self.recorder, RegistryPostgresRecorder):
            found = {
                client_id: self._find(aggregate_id, Transaction)
                for aggregate_id, client_id in ids.items()
            }
            return {c: txn for c, txn in found.items() if txn is not None}
        events: dict[UUID, list[StoredEvent]] = {}
        for stored in self.recorder.select_newer_events(dict.fromkeys(ids, 0)):
            events.setdefault(_uuid(stored.originator_id), []).append(stored)
        return {
            ids[aggregate_id]: replay(None, map(self.mapper.to_domain_event, stored))
            for aggregate_id, stored in events.items()
        }

    @property
    def _load_many(self) -> Callable[[list[UUID]], dict[UUID, Aggregate]] | None:
        """How ``UnitOfWork.prefetch`` loads many aggregates at once: on PostgreSQL,
        their latest snapshots in one query and the events after them in another."""
        if not isinstance(self.recorder, RegistryPostgresRecorder):
            return None
        return self._load_from_store

    def _load_from_store(self, aggregate_ids: list[UUID]) -> dict[UUID, Aggregate]:
        assert isinstance(self.recorder, RegistryPostgresRecorder)
        start: dict[UUID, Aggregate] = {}
        if self.snapshots is not None:
            snapshot_recorder = self.snapshots.recorder
            assert isinstance(snapshot_recorder, PostgresAggregateRecorder)
            for stored in select_latest_events(snapshot_recorder, aggregate_ids):
                snapshot = self.snapshots.mapper.to_domain_event(stored)
                assert isinstance(snapshot, Snapshot)
                aggregate = snapshot.mutate(None)
                assert isinstance(aggregate, Aggregate)
                start[_uuid(stored.originator_id)] = aggregate
        after = {i: start[i].version if i in start else 0 for i in aggregate_ids}
        events: dict[UUID, list[StoredEvent]] = {}
        for stored in self.recorder.select_newer_events(after):
            events.setdefault(_uuid(stored.originator_id), []).append(stored)
        loaded = {
            i: replay(start.get(i), map(self.mapper.to_domain_event, events.get(i, ())))
            for i in aggregate_ids
        }
        return {i: aggregate for i, aggregate in loaded.items() if aggregate is not None}

    def _find(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        return UnitOfWork(self).find(aggregate_id, cls)

    def _account(self, account_id: str) -> Account:
        return UnitOfWork(self).account(account_id)

    def _hold_result(self, hold: Hold, *, replayed: bool = False) -> HoldResult:
        blocks: tuple[SerialBlock, ...] = ()
        if hold.status is HoldStatus.ACTIVE:
            account = self._account(hold.account_id)
            blocks = tuple(account.held.get(str(hold.id), ()))
        return HoldResult.of(hold, blocks, replayed=replayed)

    def _originators(self, topic: str) -> Iterator[UUID]:
        """Ids of aggregates whose events of ``topic`` are in the log, in log order."""
        start = 1
        while True:
            page = self.recorder.select_notifications(start=start, limit=SCAN_PAGE, topics=[topic])
            for notification in page:
                originator = notification.originator_id
                yield originator if isinstance(originator, UUID) else UUID(originator)
            if len(page) < SCAN_PAGE:
                return
            start = page[-1].id + 1


def _reads(movement: Movement) -> Iterator[UUID]:
    """The accounts and obligation a movement reads, as far as it tells."""
    for account_id in (movement.source, movement.destination):
        if account_id is not None:
            yield Account.id_for(account_id)
    if movement.compliance_year is not None and movement.source is not None:
        yield ComplianceObligation.id_for(movement.source, movement.compliance_year)
        yield ComplianceYear.id_for(movement.compliance_year)
    vintage = movement.selector.vintage if movement.selector is not None else None
    if (
        movement.kind is TransactionKind.ALLOCATION
        and vintage is not None
        and movement.destination is not None
    ):
        yield ComplianceObligation.id_for(movement.destination, vintage)


def _obligation_undo(uow: UnitOfWork, original: Transaction) -> list[Callable[[UUID], None]]:
    """What reversing ``original`` must undo on compliance obligations, as steps to run
    with the reversal's id once the units have moved back. Guards run here, first: a
    closed year's surrenders are final (COMPLIANCE_YEAR_CLOSED), and a return whose
    carried debt was already deducted cannot be reversed before that allocation is.
    Allocations count towards a year whether or not it is closed, as when made."""
    kind = TransactionKind(original.kind)
    requested = int(original.details.get("quantity") or original.quantity)
    selector = original.details.get("selector") or {}
    counted = selector.get("unit_type") == UnitType.CEA.value
    by_vintage = _cea_by_vintage(original.blocks)

    def obligation(account_id: str | None, year: int) -> ComplianceObligation:
        found = uow.find(ComplianceObligation.id_for(str(account_id), year), ComplianceObligation)
        assert found is not None, f"{original.client_id} recorded on {account_id} {year}"
        return found

    if kind is TransactionKind.SURRENDER:
        year = int(original.details["compliance_year"])
        surrendered = obligation(original.source, year)
        surrendered.ensure_open()
        unit_type = original.blocks[0].unit_class.unit_type.value
        advance = by_vintage.get(year + 1, 0)
        return [lambda t: surrendered.reverse_surrender(t, unit_type, original.quantity, advance)]
    if kind is TransactionKind.ALLOCATION and counted:
        vintage = selector.get("vintage") or (
            original.blocks[0].unit_class.vintage if original.blocks else None
        )
        if vintage is None or not MIN_YEAR <= vintage <= MAX_YEAR:
            return []
        if (
            uow.find(
                ComplianceObligation.id_for(str(original.destination), vintage),
                ComplianceObligation,
            )
            is None
        ):
            return []  # not to a compliance account: nothing was counted
        allocated = obligation(original.destination, vintage)
        deducted = requested - original.quantity
        others = [
            (obligation(original.destination, v), q) for v, q in by_vintage.items() if v != vintage
        ]  # other vintages the blocks counted towards

        def reverse_allocations(t: UUID) -> None:
            allocated.reverse_allocation(t, requested, deducted)
            for other, quantity in others:
                other.reverse_allocation(t, quantity)

        return [reverse_allocations]
    if kind is TransactionKind.ALLOCATION_RETURN and counted:
        given_back = selector.get("vintage")
        if given_back is None or not MIN_YEAR <= given_back < MAX_YEAR:
            return []
        returned = obligation(original.source, given_back)
        carried = requested - original.quantity
        steps: list[Callable[[UUID], None]] = [lambda t: returned.record_allocation(t, requested)]
        if carried:
            following = obligation(original.source, given_back + 1)
            following.ensure_debt_outstanding(carried, original.client_id)
            steps.append(lambda t: following.carry_debt(given_back, -carried))
        return steps
    return []


def _cea_by_vintage(blocks: Sequence[SerialBlock]) -> dict[int, int]:
    """Allowance quantities by vintage (what an allocation counts towards each year)."""
    by_vintage: dict[int, int] = {}
    for block in blocks:
        if block.unit_class.unit_type is UnitType.CEA:
            vintage = block.unit_class.vintage
            by_vintage[vintage] = by_vintage.get(vintage, 0) + block.quantity
    return by_vintage


def _replayed(txn: Transaction, movement: Movement) -> TransactionResult:
    if txn.fingerprint != movement.fingerprint:
        ref = f"{txn.party}:{txn.client_id}"
        raise TransactionExistsWithDifferentContent(
            f"transaction {ref} was recorded with different content", transaction=ref
        )
    return TransactionResult.of(txn, replayed=True)


def _uuid(value: UUID | str) -> UUID:
    """A stored originator id as a UUID (psycopg already gives one)."""
    return value if isinstance(value, UUID) else UUID(value)


def _cached_copy(cache: Any, aggregate_id: UUID) -> Aggregate | None:
    """The aggregate the cache holds under this id, or None."""
    try:
        cached = cache.get(aggregate_id)
    except KeyError:
        return None
    return cached if isinstance(cached, Aggregate) else None


def _replay_outcome(txn: Transaction, movement: Movement) -> TransactionResult | RegistryError:
    try:
        return _replayed(txn, movement)
    except RegistryError as error:
        return error


def _repeat_of(
    first: TransactionResult | RegistryError, first_movement: Movement, movement: Movement
) -> TransactionResult | RegistryError:
    """The answer to an id asked for twice in one group: a replay of the first (its
    error, when it had one); the same id with other content is refused."""
    if first_movement.fingerprint != movement.fingerprint:
        return TransactionExistsWithDifferentContent(
            f"{movement.client_id} was asked for twice at once with different content",
            transaction=movement.client_id,
        )
    return first.as_replay() if isinstance(first, TransactionResult) else first


def _emissions_row_violations(uow: UnitOfWork, name: str, row: EmissionsRow) -> list[Violation]:
    """Every problem of one emissions row, each named by its field."""
    checks: list[tuple[str, Callable[[Any], object], Any]] = [
        ("account_id", check_account_id, row.account_id),
        ("compliance_year", check_year, row.compliance_year),
        ("verified_emissions", check_emissions, row.verified_emissions),
        ("reason", check_reason, row.reason),
    ]
    violations = []
    for column, check, value in checks:
        try:
            check(value)
        except InvalidCommand as error:
            violations.append(Violation(f"{name}.{column}", error.reason, error.message))
    if any(v.field == f"{name}.account_id" for v in violations):
        return violations  # a malformed id names no account to look up
    account = uow.find(Account.id_for(row.account_id), Account)
    if account is None:
        violations.append(
            Violation(f"{name}.account_id", UnknownAccount.reason, f"no account {row.account_id}")
        )
    elif account.account_type is not AccountType.COMPLIANCE:
        violations.append(
            Violation(
                f"{name}.account_id",
                "NOT_COMPLIANCE_ACCOUNT",
                f"{row.account_id} is a {account.account_type} account; verified emissions "
                f"belong to COMPLIANCE accounts",
            )
        )
    return violations
