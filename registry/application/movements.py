"""Movements of units (issuance, allocation, transfers, trades, surrender, cancellation,
reversal), one by one or in batches, decided in group commits.

Every movement evaluates against freshly loaded aggregates and then saves its
transaction record and every aggregate it touched in ONE atomic save, shared with the
movements other callers of this process asked for meanwhile (``group_commit``). The
transaction's id is derived from (party, client id), so the store's primary key makes
retries safe: a save that collides is answered from what was recorded first.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from itertools import chain
from json.encoder import encode_basestring_ascii as _json_str
from uuid import UUID

from registry.application.commands import (
    MAX_QUANTITY,
    AllocationRow,
    Movement,
    Trade,
    check_batch,
)
from registry.application.group_commit import MAX_GROUP, GroupCommit
from registry.application.perform import decide, reads
from registry.application.request_ids import current_request_id
from registry.application.results import RowResult, TradeResult, TransactionResult
from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.application.unit_of_work import saved_position as _position
from registry.domain.accounts import ACCOUNT_ID, NATIONAL_ACCOUNTS, Account, AccountType
from registry.domain.errors import (
    InvalidCommand,
    RegistryError,
    TransactionExistsWithDifferentContent,
)
from registry.domain.ids import CLIENT_ID
from registry.domain.ledger import TRANSFER_KINDS
from registry.domain.transactions import (
    Principal,
    Transaction,
    TransactionKind,
    TransactionRecord,
)
from registry.domain.units import UnitClass, UnitSelector, parse_unit_type


@dataclass(frozen=True)
class MoveJob:
    """One caller's movements for the group commit: a single movement or a batch, each
    row (client id, the movement or why it is malformed)."""

    principal: Principal
    rows: list[tuple[str, Movement | RegistryError]]
    single: bool
    request_id: str | None = field(default_factory=current_request_id)
    """The caller's call, captured in its thread: the group saves from another."""


_SETTLEMENT = TransactionKind.SETTLEMENT  # once: an enum member's lookup is a call
_SETTLEMENT_REASON = "exchange trade"
"""``Trade.movement``'s reason: a constant, valid once and for all."""


class TradeMovements:
    """``Trade.movement`` for the trades of one batch, checking once what repeats.

    A trade's movement was a fifth of its settlement: every row checked its accounts'
    ids, parsed its unit type, built its selector and hashed its content through
    ``json.dumps``. Here an account id, a selector and the selector's canonical JSON
    are checked or made once per batch, and the fingerprint's canonical JSON is written
    from the fields (what ``commands.fingerprint`` makes of them, byte for byte:
    ``tests/unit/test_trade_movements.py``). A row that is anything but plainly valid
    goes through ``Trade.movement`` itself, which raises what it always raised."""

    def __init__(self) -> None:
        self._accounts: set[str] = set()
        self._selectors: dict[tuple[str, int | None, str | None], tuple[UnitSelector, str]] = {}

    def movement(self, trade: Trade) -> Movement:
        try:
            fast = self._movement(trade)
        except Exception:  # whatever it is, the full path says it as it always did
            fast = None
        return fast if fast is not None else trade.movement()

    def _movement(self, trade: Trade) -> Movement | None:
        trade_id, seller, buyer = trade.trade_id, trade.seller, trade.buyer
        quantity, vintage, project = trade.quantity, trade.vintage, trade.project
        if type(trade.unit_type) is not str or not (vintage is None or type(vintage) is int):
            return None
        if not (project is None or type(project) is str):
            return None
        if type(trade_id) is not str or not CLIENT_ID.match(trade_id):
            return None
        if seller == buyer or type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
            return None
        accounts = self._accounts
        for account in (seller, buyer):
            if account not in accounts:
                if type(account) is not str or not ACCOUNT_ID.match(account):
                    return None
                accounts.add(account)
        hold_id, trade_date = trade.hold_id, trade.trade_date
        if hold_id is not None and (type(hold_id) is not str or not CLIENT_ID.match(hold_id)):
            return None
        if trade_date is not None and type(trade_date) is not date:
            return None
        key = (trade.unit_type, vintage, project)
        made = self._selectors.get(key)
        if made is None:
            selector = UnitSelector(parse_unit_type(trade.unit_type), vintage, project)
            made = selector, _canonical(selector.as_dict())
            self._selectors[key] = made
        selector, selector_json = made
        canonical = (
            '{"compliance_year":null,"destination":'
            + _json_str(buyer)
            + ',"hold_id":'
            + ("null" if hold_id is None else _json_str(hold_id))
            + ',"kind":"SETTLEMENT","quantity":'
            + int.__repr__(quantity)
            + ',"reason":"exchange trade","reverses":null,"selector":'
            + selector_json
            + ',"source":'
            + _json_str(seller)
            + ',"trade_date":'
            + ("null" if trade_date is None else '"' + trade_date.isoformat() + '"')
            + ',"unit_class":null}'
        )
        movement = object.__new__(Movement)
        movement.__dict__.update(
            client_id=trade_id,
            kind=_SETTLEMENT,
            source=seller,
            destination=buyer,
            quantity=quantity,
            reason=_SETTLEMENT_REASON,
            selector=selector,
            unit_class=None,
            hold_id=hold_id,
            compliance_year=None,
            reverses=None,
            trade_date=trade_date,
            reference=None,
            override_restrictions=False,
            fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
        )
        return movement


def _canonical(content: dict[str, object]) -> str:
    """``commands.fingerprint``'s canonical JSON of ``content``."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)


REUSED_IDS_WINDOW_SECONDS = 10.0
"""After a group's save failed on an id already recorded (a client retrying, or reusing
an id for other content), groups look their ids up before saving for this long: a
failed save is rolled back and the whole group decided again (at 1 % of trades reusing
an id, that was 28 % of the throughput), the look-up costs ~4 µs a trade, and a
process whose clients reuse none pays nothing."""


class _BatchFailed(Exception):
    """A batch met an error that fails the whole call: decide the group without it."""


class Movements:
    """The movement use cases of one registry, and the group commit they share."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.lost_saves = 0
        """Group saves that failed and were decided again (a reused id, a lost race)."""
        self._look_up_ids_until = 0.0
        self._group: GroupCommit[MoveJob, list[TransactionResult | RegistryError]] = GroupCommit(
            self._move_group,
            limit=MAX_GROUP,
            weight=lambda job: len(job.rows),
            name="registry-group-commit",
            idle=store.catch_up,
        )

    def close(self) -> None:
        self._group.close()

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

    def transfer_units(
        self,
        principal: Principal,
        kind: TransactionKind,
        transaction_id: str,
        source: str,
        destination: str,
        selector: UnitSelector,
        quantity: int,
        reason: str,
        reference: str | None = None,
    ) -> TransactionResult:
        """A transfer outside the exchange (``ledger.TRANSFER_KINDS``): an operator's
        between one holder's accounts, or one a regulator's approved proposal orders."""
        if kind not in TRANSFER_KINDS:
            raise InvalidCommand(
                f"{kind} is not a transfer outside the exchange", reason="INVALID_TRANSFER_KIND"
            )
        return self._move(
            principal,
            Movement(
                transaction_id,
                kind,
                source,
                destination,
                quantity,
                reason,
                selector=selector,
                reference=reference or None,
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
        override_restrictions: bool = False,
    ) -> TransactionResult:
        """Undo a completed transaction: the same serial blocks go back where they came
        from. Refused (``SERIALS_FROZEN``, ``ORIGIN_DETAINED``) when a restriction covers
        them, unless ``override_restrictions`` (an approved proposal saying so explicitly;
        the transaction's details record it)."""
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
                override_restrictions=override_restrictions,
            ),
        )

    def settle_trades(self, principal: Principal, trades: Sequence[Trade]) -> list[TradeResult]:
        """Settle many trades in order, one result each, in one atomic save when possible.

        A trade refused for the ledger's state is recorded as refused and does not stop
        the others; a malformed trade is rejected and nothing of it is stored.
        """
        build = TradeMovements().movement
        rows = self._move_batch(
            principal, [(t.trade_id, partial(build, t)) for t in trades], "trades"
        )
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
        if requests:  # an empty batch is answered with no rows
            check_batch(len(requests), 0, field, field)
        rows: list[tuple[str, Movement | RegistryError]] = []
        for client_id, movement in requests:
            try:
                rows.append((client_id, movement()))
            except InvalidCommand as error:
                rows.append((client_id, error))
        outcomes = self._group.submit(MoveJob(principal, rows, single=False))
        return [
            RowResult.of(outcome)
            if isinstance(outcome, TransactionResult)
            else RowResult.rejected(client_id, outcome)
            for (client_id, _), outcome in zip(rows, outcomes, strict=True)
        ]

    def _move(self, principal: Principal, movement: Movement) -> TransactionResult:
        """One movement, saved with whatever other movements this process's callers
        asked for meanwhile (see ``_move_group``)."""
        outcome = self._group.submit(
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
        jobs = list(jobs)
        store = self._store

        def attempt(uow: UnitOfWork) -> dict[tuple[int, int], TransactionResult | RegistryError]:
            jobs.extend(self._group.take_more())  # who queued while it waited for the lock
            store.catch_up()
            if not looked[0] and time.monotonic() < self._look_up_ids_until:
                look_up_recorded()  # ids are being reused lately: find them before saving
            while True:
                try:
                    return self._apply_jobs(uow, jobs, failed, known, preloaded, absent)
                except _BatchFailed:
                    uow = UnitOfWork(store.app, optimistic=uow.optimistic)

        looked = [False]

        def look_up_recorded() -> int:
            """Add what is recorded under the group's ids to ``known``; how many more."""
            looked[0] = True
            before = len(known)
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
                        for client_id, txn in store.recorded_transactions(party, ids).items()
                    }
                )
            return len(known) - before

        def on_conflict() -> None:
            self.lost_saves += 1
            if look_up_recorded():  # an id already recorded made the save fail
                self._look_up_ids_until = time.monotonic() + REUSED_IDS_WINDOW_SECONDS

        # outside the lock (see preload): then these jobs' reads are cached, but for
        # those that did not exist (``absent``), read again in the attempt
        absent = store.preload(_group_reads(jobs, failed))
        preloaded = len(jobs) if absent is not None else 0
        outcomes = store.retrying(attempt, on_conflict, lock=store.group_lock)
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
        preloaded: int = 0,
        absent: Collection[UUID] | None = None,
    ) -> dict[tuple[int, int], TransactionResult | RegistryError]:
        """Decide the jobs in order on ``uow`` and save what they decided in one save
        (a batch that fails is noted in ``failed``, and ``_BatchFailed`` tells the
        caller to decide the group again without it). The first ``preloaded`` jobs'
        reads were cached by ``Store.preload``: a unit of work that trusts the cache
        does not look them up again (2,000 cache lookups for a batch of 1,000
        trades), except those that did not exist then (``absent``), read again in one
        query now that the lock is held (left to the lookups, each was a query: a
        batch of 1,000 allocations asked for 1,000 obligations not yet started, one at
        a time); one that reads fresh prefetches them all."""
        start = preloaded if uow.optimistic else 0
        reads = _group_reads(jobs, failed, start)
        uow.prefetch(chain(absent, reads) if start and absent else reads, self._store.load_many)
        clock = self._store.clock
        outcomes: dict[tuple[int, int], TransactionResult | RegistryError] = {}
        first: dict[tuple[str, str], tuple[int, int]] = {}
        repeats: list[tuple[int, int]] = []
        new: list[tuple[tuple[int, int], TransactionRecord]] = []
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
                    record = decide(uow, job.principal, movement, clock)
                    uow.stamp_step(job.request_id, record)
                    new.append(((j, r), record))
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
        if any(type(record) is Transaction.Refused for _, record in new):
            uow.verify_current()  # a refusal saves nothing it read: read it fresh
        position = _position(uow.save(*(record for _, record in new)))
        of_record = TransactionResult.of_record
        for at, record in new:
            outcomes[at] = of_record(record, position)
        for j, r in repeats:
            movement = jobs[j].rows[r][1]
            assert isinstance(movement, Movement)
            fj, fr = first[(jobs[j].principal.party, movement.client_id)]
            first_movement = jobs[fj].rows[fr][1]
            assert isinstance(first_movement, Movement)
            outcomes[(j, r)] = _repeat_of(outcomes[(fj, fr)], first_movement, movement)
        return outcomes


def _group_reads(
    jobs: Sequence[MoveJob], failed: dict[int, RegistryError], start: int = 0
) -> Iterator[UUID]:
    """What the group's movements read (``perform.reads``), a trade's two accounts
    told by their id strings: a batch of 1,000 trades names a few hundred accounts
    2,000 times, and each UUID hashes in Python where a string hashes once."""
    accounts: set[str] = set()
    for j, job in enumerate(jobs):
        if j < start or j in failed:
            continue
        for _, movement in job.rows:
            if type(movement) is not Movement:
                continue
            if movement.kind is _SETTLEMENT:  # no unit class, no compliance year
                for account in (movement.source, movement.destination):
                    if account is not None and account not in accounts:
                        accounts.add(account)
                        yield Account.id_for(account)
            else:
                yield from reads(movement)


def _replayed(txn: Transaction, movement: Movement) -> TransactionResult:
    if txn.fingerprint != movement.fingerprint:
        ref = f"{txn.party}:{txn.client_id}"
        raise TransactionExistsWithDifferentContent(
            f"transaction {ref} was recorded with different content", transaction=ref
        )
    return TransactionResult.of(txn, replayed=True)


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
