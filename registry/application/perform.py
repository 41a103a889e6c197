"""Deciding one movement on a unit of work: every guard first, then the changes to the
accounts, holds, counters and obligations it touches, and its transaction record
(completed, or refused with why).

A guard that fails after a change would leave half a movement in the unit of work, so
each kind checks everything it can before it changes anything; ``decide`` is called
once per movement of a group (the settlement path: keep it lean).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from registry.application.commands import Movement
from registry.application.compliance import CarryOverCheck, carry_over_give_back, year_rules
from registry.application.restrictions import (
    check_blocks_unrestricted,
    check_issuance,
    check_restrictions,
)
from registry.application.unit_of_work import UnitOfWork
from registry.domain.accounts import NATIONAL_ACCOUNTS, Account, AccountType
from registry.domain.errors import (
    ComplianceYearClosed,
    NotReversible,
    Refused,
    UnknownAccount,
    UnknownHold,
    UnknownTransaction,
)
from registry.domain.ledger import (
    SAME_HOLDER_TRANSFERS,
    allowances_by_vintage,
    check_account_types,
    counts_towards_year,
    return_carries_debt,
    return_covered,
)
from registry.domain.obligations import MAX_YEAR, MIN_YEAR, ComplianceObligation
from registry.domain.projects import Project, check_issuable, check_owner_account
from registry.domain.rules import ComplianceYear
from registry.domain.transactions import (
    Principal,
    Transaction,
    TransactionKind,
    TransactionRecord,
)
from registry.domain.units import Holding, SerialBlock, UnitType

RECORDABLE = (Refused, UnknownAccount, UnknownHold, UnknownTransaction)
"""Errors about the ledger's state: the transaction is recorded as refused."""

Moved = tuple[str | None, str, tuple[SerialBlock, ...]]
"""(source, destination, blocks) of a movement carried out."""


def decide(
    uow: UnitOfWork, principal: Principal, movement: Movement, clock: Callable[[], datetime]
) -> TransactionRecord:
    """Evaluate one movement on the unit of work: a completed or a refused record (the
    event a ``Transaction`` is created by, made without the aggregate: save it as it is).
    """
    party = principal.party
    txn_id = Transaction.id_for(party, movement.client_id)
    record: dict[str, Any] = {
        "party": party,
        "client_id": movement.client_id,
        "kind": movement.kind,
        "reason": movement.reason,
        "principal": principal,
        "fingerprint": movement.fingerprint,
        "details": _details(movement),
    }
    uow.begin_step()
    try:
        source, destination, blocks = _perform(
            uow, party, txn_id, movement, clock, record["details"]
        )
    except RECORDABLE as error:
        if uow.step_changed():
            raise RuntimeError(
                f"{movement.kind} {movement.client_id} changed state before refusing "
                f"({error.reason}); guards must run before any change"
            ) from error
        return Transaction.refused_record(
            source=movement.source, destination=movement.destination, error=error, **record
        )
    return Transaction.completed_record(
        source=source, destination=destination, blocks=list(blocks), **record
    )


def _details(movement: Movement) -> dict[str, Any]:
    """``movement.details()``; a trade's (the one kind a batch of thousands carries)
    without building its whole content first, same keys in the same order (the
    stored record's JSON, and so the hash chain, depend on it)."""
    if movement.kind is not _SETTLEMENT or movement.selector is None:
        return movement.details()
    details: dict[str, Any] = {
        "quantity": movement.quantity,
        "selector": movement.selector.as_dict(),
    }
    if movement.hold_id is not None:
        details["hold_id"] = movement.hold_id
    if movement.trade_date is not None:
        details["trade_date"] = movement.trade_date.isoformat()
    return details


def reads(movement: Movement) -> Iterator[UUID]:
    """The accounts and obligation a movement reads, as far as it tells (to prefetch)."""
    if movement.unit_class is not None and movement.unit_class.unit_type is UnitType.CCER:
        yield Project.id_for(movement.unit_class.project)
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


def _perform(
    uow: UnitOfWork,
    party: str,
    txn_id: UUID,
    movement: Movement,
    clock: Callable[[], datetime],
    details: dict[str, Any],
) -> Moved:
    """Check every guard, then change the aggregates (and note in ``details`` what the
    record must keep that only performing decides)."""
    if movement.kind is _SETTLEMENT and movement.hold_id is None:
        return _perform_trade(uow, txn_id, movement)
    if movement.kind is TransactionKind.ISSUANCE:
        return _perform_issuance(uow, txn_id, movement)
    if movement.kind is TransactionKind.REVERSAL:
        return _perform_reversal(uow, txn_id, movement)
    assert movement.source and movement.destination and movement.selector
    assert movement.quantity is not None
    source = uow.account(movement.source)
    destination = uow.account(movement.destination)
    check_account_types(movement.kind, source.account_type, destination.account_type)
    if movement.kind in SAME_HOLDER_TRANSFERS:
        source.ensure_same_holder(destination)
    source.ensure_can_send()
    destination.ensure_can_receive()
    if movement.hold_id is not None:
        now = clock()
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
        pool = check_restrictions(uow, source, movement.kind, movement.selector, movement.quantity)
        if movement.kind is TransactionKind.SURRENDER:
            return _perform_surrender(uow, txn_id, movement, source, destination, pool, clock)
        if (
            movement.kind is TransactionKind.ALLOCATION
            and destination.account_type is AccountType.COMPLIANCE
        ):
            return _perform_allocation(uow, txn_id, movement, source, destination, pool, details)
        if movement.kind is TransactionKind.ALLOCATION_RETURN:
            return _perform_return(uow, txn_id, movement, source, destination, pool)
        blocks = source.debit(txn_id, movement.selector, movement.quantity, pool)
    destination.credit(txn_id, blocks)
    return source.account_id, destination.account_id, blocks


_SETTLEMENT = TransactionKind.SETTLEMENT
"""Looked up once: an enum member is a descriptor, each ``TransactionKind.X`` a call."""
_TRADEABLE: dict[tuple[str, str], bool] = {}
"""(source type, destination type) pairs ``check_account_types`` let a settlement
through, by the accounts' type names."""


def _perform_trade(uow: UnitOfWork, txn_id: UUID, movement: Movement) -> Moved:
    """``_perform`` for a settlement without a hold, the movement a batch of thousands
    carries: the same guards in the same order, asked without the branches of the
    other kinds, and the account types' check remembered for each pair of types."""
    assert movement.source and movement.destination and movement.selector
    assert movement.quantity is not None
    source = uow.account(movement.source)
    destination = uow.account(movement.destination)
    types = (source.type_name, destination.type_name)
    if types not in _TRADEABLE:
        check_account_types(_SETTLEMENT, source.account_type, destination.account_type)
        _TRADEABLE[types] = True
    source.ensure_can_send()
    destination.ensure_can_receive()
    pool = check_restrictions(uow, source, _SETTLEMENT, movement.selector, movement.quantity)
    blocks = source.debit(txn_id, movement.selector, movement.quantity, pool)
    destination.credit(txn_id, blocks)
    return source.account_id, destination.account_id, blocks


def _perform_return(
    uow: UnitOfWork,
    txn_id: UUID,
    movement: Movement,
    source: Account,
    destination: Account,
    pool: Holding | None,
) -> Moved:
    """A true-up return: what the account holds of the vintage goes back; the rest
    it cannot cover is carried as a debt into the next year's obligation (deducted
    from the next allocation). The year's allocation counts the full return."""
    assert movement.selector is not None and movement.quantity is not None
    year = movement.selector.vintage
    holding = source.available if pool is None else pool
    covered = return_covered(movement.selector, movement.quantity, holding)
    blocks: tuple[SerialBlock, ...] = ()
    if covered:
        blocks = source.debit(txn_id, movement.selector, covered, pool)
        destination.credit(txn_id, blocks)
    if return_carries_debt(movement.selector):
        assert year is not None
        uow.obligation(source.account_id, year).record_allocation(txn_id, -movement.quantity)
        if covered < movement.quantity:
            uow.obligation(source.account_id, year + 1).carry_debt(
                year, movement.quantity - covered
            )
    return source.account_id, destination.account_id, blocks


def _perform_surrender(
    uow: UnitOfWork,
    txn_id: UUID,
    movement: Movement,
    source: Account,
    destination: Account,
    pool: Holding | None,
    clock: Callable[[], datetime],
) -> Moved:
    """Check what would be taken against the year's rules for the account's sector
    (vintages, CCER cap, advance use, a closed year: after closing, only a noticed
    shortfall inside its correction deadline takes a late surrender), then move it."""
    assert movement.compliance_year is not None and movement.selector is not None
    assert movement.quantity is not None
    year = movement.compliance_year
    rules, closed = year_rules(uow, year, source)
    existing = uow.find(ComplianceObligation.id_for(source.account_id, year), ComplianceObligation)
    replacing = existing is not None and existing.accepts_replacement(clock().date())
    if closed and not replacing:  # a noticed shortfall takes a late surrender until its
        if existing is None:  # deadline; invalidated units are replaced until theirs
            raise ComplianceYearClosed(f"compliance year {year} is closed", year=year)
        existing.ensure_accepts_late_surrender(clock().date())
    # A first surrender for the year starts its obligation, but only once every
    # guard has passed: a refusal changes nothing.
    obligation = existing or ComplianceObligation.start(source.account_id, year)
    would = source.would_debit(movement.selector, movement.quantity, pool)
    carry = CarryOverCheck.of(uow, rules, source, year, would)  # NET_SALES: read, not written
    advance = obligation.check_surrender(rules, would, carry.net_sales, carry.used)
    blocks = source.debit(txn_id, movement.selector, movement.quantity, pool)
    destination.credit(txn_id, blocks)
    if existing is None:
        uow.add(obligation)
    record = obligation.record_late_surrender if closed else obligation.record_surrender
    record(txn_id, movement.selector.unit_type.value, movement.quantity, advance)
    carry.record(uow, source.account_id, txn_id, year)
    if obligation.replacement_remaining:
        obligation.record_replacement(txn_id, movement.quantity)
    return source.account_id, destination.account_id, blocks


def _perform_allocation(
    uow: UnitOfWork,
    txn_id: UUID,
    movement: Movement,
    source: Account,
    destination: Account,
    pool: Holding | None,
    details: dict[str, Any],
) -> Moved:
    """Free allocation to a compliance account, counted towards the year of its
    vintage; a shortfall carried from the year before is deducted first (the
    deducted units stay where they are, and the transaction records how many). With no
    vintage asked, the year it counted towards is recorded as ``compliance_year``: an
    allocation the debt took whole moves no blocks to tell it, and its reversal must
    owe that debt again."""
    assert movement.selector is not None and movement.quantity is not None
    year = movement.selector.vintage
    if year is None:  # the oldest matching block is what is taken first
        year = source.would_debit(movement.selector, 1, pool)[0].unit_class.vintage
    counted = counts_towards_year(movement.selector, year)
    existing = (
        uow.find(ComplianceObligation.id_for(destination.account_id, year), ComplianceObligation)
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
        if movement.selector.vintage is None:
            details["compliance_year"] = year
        obligation = uow.obligation(destination.account_id, year)
        if deducted:
            obligation.deduct_debt(txn_id, deducted)
        obligation.record_allocation(txn_id, movement.quantity)
    for vintage, quantity in allowances_by_vintage(blocks).items():
        if vintage != year:
            uow.obligation(destination.account_id, vintage).record_allocation(txn_id, quantity)
    return source.account_id, destination.account_id, blocks


def _perform_issuance(uow: UnitOfWork, txn_id: UUID, movement: Movement) -> Moved:
    """Allowances are created in the national ISSUANCE account; CCER only for a
    registered, non-suspended project (``registry.domain.projects``), straight into
    its owner's PROJECT account."""
    unit_class = movement.unit_class
    assert unit_class is not None and movement.quantity is not None
    if unit_class.unit_type is UnitType.CCER:
        project = check_issuable(uow.find(Project.id_for(unit_class.project), Project), unit_class)
        receiver = uow.account(project.owner_account)
        check_owner_account(receiver.account_id, receiver.account_type)
    else:
        receiver = uow.account(NATIONAL_ACCOUNTS[AccountType.ISSUANCE])
    receiver.ensure_can_receive()
    check_issuance(uow, unit_class, movement.quantity)
    block = uow.counter(unit_class).issue(movement.quantity, txn_id)
    receiver.credit(txn_id, [block])
    return None, receiver.account_id, (block,)


def _perform_reversal(uow: UnitOfWork, txn_id: UUID, movement: Movement) -> Moved:
    assert movement.reverses is not None
    original = uow.transaction(*movement.reverses)
    original.ensure_reversible()
    assert original.source is not None and original.destination is not None
    source = uow.account(original.destination)
    destination = uow.account(original.source)
    source.ensure_can_send()
    destination.ensure_can_receive()
    if not movement.override_restrictions:  # an approved proposal may say so, recorded
        check_blocks_unrestricted(uow, source.account_id, TransactionKind.REVERSAL, original.blocks)
    undo = _obligation_undo(uow, original)  # its guards run before anything changes
    blocks = source.debit_blocks(txn_id, original.blocks)
    destination.credit(txn_id, blocks)
    original.mark_reversed(txn_id)
    for step in undo:
        step(txn_id)
    return source.account_id, destination.account_id, blocks


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
    by_vintage = allowances_by_vintage(original.blocks)

    def obligation(account_id: str | None, year: int) -> ComplianceObligation:
        found = uow.find(ComplianceObligation.id_for(str(account_id), year), ComplianceObligation)
        assert found is not None, f"{original.client_id} recorded on {account_id} {year}"
        return found

    if kind is TransactionKind.SURRENDER:
        year = int(original.details["compliance_year"])
        surrendered = obligation(original.source, year)
        surrendered.ensure_fixed()
        unit_type = original.blocks[0].unit_class.unit_type.value
        advance = by_vintage.get(year + 1, 0)
        give_back = carry_over_give_back(uow, str(original.source), original.id)
        return [
            lambda t: surrendered.reverse_surrender(t, unit_type, original.quantity, advance),
            *([give_back] if give_back else []),
        ]
    if kind is TransactionKind.ALLOCATION and counted:
        vintage = (
            selector.get("vintage")
            or original.details.get("compliance_year")
            or (original.blocks[0].unit_class.vintage if original.blocks else None)
        )
        if vintage is None and requested:
            # recorded before allocations kept their year: the debt took it whole, and
            # which year's debt it paid is not on record (docs/compliance.md)
            raise NotReversible(
                f"{original.party}:{original.client_id} was paid wholly by a carried debt "
                "before the registry recorded which year's: reversing it could not owe "
                "that debt again",
                transaction=f"{original.party}:{original.client_id}",
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
        others: Sequence[tuple[ComplianceObligation, int]] = [
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
