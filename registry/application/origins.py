"""Origin detention with rebuttal, after the detention is imposed (``restrictions``):
a holder's rebuttal, a holder cleared on it, and the confirmation that forfeits what
is still detained (docs/origins.md).

Confirmation is one atomic save: the detention's ``Confirmed`` event, a ``FORFEITURE``
transaction per account moving its detained units to ``CN-CANCELLATION`` (a regulatory
cancellation carrying the detention's reference), and, for units of the origin already
surrendered, a ``SurrenderInvalidated`` on the company's obligation of that year: they
stop counting, and the same tonnes are owed again by a deadline. Either all of it is
stored or none, so no window opens in which confirmed units could move or count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from registry.application.restrictions import every_account, restriction_index
from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.application.unit_of_work import saved_position as _position
from registry.domain.accounts import NATIONAL_ACCOUNTS, Account, AccountType
from registry.domain.block_freezes import BlockFreeze
from registry.domain.enforcement import DEFAULT_CORRECTION_DAYS, MAX_CORRECTION_DAYS
from registry.domain.errors import InvalidCommand, UnknownDetention
from registry.domain.holds import Hold
from registry.domain.ids import check_client_id
from registry.domain.ledger import check_account_types
from registry.domain.origin_detentions import DetainedHolder, Origin, OriginDetention
from registry.domain.restriction_guards import check_block_freezes, detained_blocks
from registry.domain.transactions import Principal, Transaction, TransactionKind
from registry.domain.units import SerialBlock

RETIRED = frozenset({AccountType.SURRENDER, AccountType.CANCELLATION})
"""Retired units are not forfeited: surrendered ones are invalidated on confirmation
(their company replaces them), cancelled ones are gone already."""

DEFAULT_REPLACEMENT_DAYS = DEFAULT_CORRECTION_DAYS
"""Days a company has to replace invalidated surrendered units, unless the confirming
proposal says otherwise: the registry's default correction period (``close-year``),
since no rule fixes one for invalidated offsets (a parameter: ``replacement_days``)."""


def check_replacement_days(days: int | None) -> int:
    """1..365 days; None: ``DEFAULT_REPLACEMENT_DAYS``."""
    if days is None:
        return DEFAULT_REPLACEMENT_DAYS
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_CORRECTION_DAYS:
        raise InvalidCommand(
            f"replacement_days must be 1..{MAX_CORRECTION_DAYS}, got {days!r}",
            reason="INVALID_REPLACEMENT_DAYS",
            field="replacement_days",
        )
    return days


@dataclass(frozen=True)
class RebuttalResult:
    holder: DetainedHolder
    reference: str
    """The detention's reference."""
    replayed: bool = False
    position: int | None = None


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation did: units forfeited per account, tonnes invalidated per
    (company, year)."""

    origin: str
    forfeited: dict[str, int]
    invalidated: dict[tuple[str, int], int]

    @classmethod
    def of(cls, detention: OriginDetention) -> Confirmation:
        """As the detention's ``Confirmed`` event recorded it (a retry answers the same)."""
        return cls(
            detention.origin.key,
            dict(detention.forfeited),
            {(str(c), int(y)): int(q) for c, y, q in detention.invalidated},
        )

    def summary(self) -> str:
        return (
            f"origin {self.origin} confirmed: {sum(self.forfeited.values())} units "
            f"forfeited in {len(self.forfeited)} accounts, "
            f"{sum(self.invalidated.values())} t surrendered invalidated"
        )


class Origins:
    """The rebuttal and confirmation use cases of one registry."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def submit_rebuttal(
        self,
        principal: Principal,
        origin: str,
        account_id: str,
        rebuttal_id: str,
        statement: str,
        evidence: Sequence[str],
    ) -> RebuttalResult:
        """A notified holder's rebuttal, before its deadline: its statement and the
        SHA-256 digests of its evidence. The same rebuttal again is a replay."""
        parsed = Origin.parse(origin)
        check_client_id(rebuttal_id, "rebuttal id")
        store = self._store

        def attempt(uow: UnitOfWork) -> RebuttalResult:
            detention = _detention(uow, parsed)
            submitted = detention.submit_rebuttal(
                account_id=account_id,
                rebuttal_id=rebuttal_id,
                statement=statement,
                evidence=evidence,
                principal=principal,
                at=store.clock(),
            )
            position = _position(uow.save()) if submitted else None
            holder = detention.holder(account_id)
            assert holder is not None
            return RebuttalResult(holder, detention.reference, not submitted, position)

        return store.retrying(attempt)

    def clear_holder(
        self,
        principal: Principal,
        origin: str,
        account_id: str,
        evidence: str,
        reason: str,
        proposal: str = "",
    ) -> str:
        """Clear one holder's units of the origin on its rebuttal (an approved
        proposal): the serials it holds of the origin now move again."""
        parsed = Origin.parse(origin)
        store = self._store

        def attempt(uow: UnitOfWork) -> str:
            detention = _detention(uow, parsed)
            account = uow.account(account_id)
            if detention.clear_holder(
                account_id=account_id,
                blocks=account.all_blocks,
                evidence=evidence,
                reason=reason,
                principal=principal,
                at=store.clock(),
                proposal=proposal,
            ):
                uow.save()
            return f"{account_id} cleared of the detention of {parsed} on {evidence}"

        return store.retrying(attempt)

    def confirm(
        self,
        principal: Principal,
        origin: str,
        reason: str,
        proposal: str = "",
        replacement_days: int | None = None,
    ) -> Confirmation:
        """Confirm the detention and forfeit, in one save, every unit it still holds:
        cancelled in every account, invalidated where already surrendered."""
        parsed = Origin.parse(origin)
        days = check_replacement_days(replacement_days)
        store = self._store

        def attempt(uow: UnitOfWork) -> Confirmation:
            detention = _detention(uow, parsed)
            index = restriction_index(uow)
            now = store.clock()
            if detention.is_confirmed:  # a retry: what it did is recorded
                return Confirmation.of(detention)
            detention.ensure_confirmable(now)  # before the scan: nothing to forfeit yet
            only_this = dict.fromkeys(detention.projects, detention)
            plan: list[tuple[Account, list[SerialBlock]]] = []
            for account in every_account(uow, store):
                if account.account_type in RETIRED:
                    continue
                taken = detained_blocks(account.all_blocks, only_this)
                if taken:
                    freezes = index.freezes.get(account.account_id, [])
                    _check_forfeitable(uow, freezes, account, taken)
                    plan.append((account, taken))
            surrendered = uow.account(NATIONAL_ACCOUNTS[AccountType.SURRENDER])
            invalid = detained_blocks(surrendered.available, only_this)
            sources = _surrenders_of(store, uow, surrendered, invalid) if invalid else {}
            invalidated: dict[tuple[str, int], int] = {}
            for (_, company, year), quantity in sources.items():
                invalidated[(company, year)] = invalidated.get((company, year), 0) + quantity
            detention.confirm(
                reason=reason,
                principal=principal,
                at=now,
                proposal=proposal,
                forfeited={a.account_id: sum(b.quantity for b in t) for a, t in plan},
                invalidated=[(c, y, q) for (c, y), q in sorted(invalidated.items())],
            )
            index.index_origin(parsed, False)
            cancellation = uow.account(NATIONAL_ACCOUNTS[AccountType.CANCELLATION])
            for account, taken in plan:
                client_id = _forfeiture_id(uow, principal.party, detention, account.account_id)
                txn_id = Transaction.id_for(principal.party, client_id)
                _release_holds(uow, account, taken, principal, detention.reference)
                moved = account.debit_blocks(txn_id, taken)
                cancellation.credit(txn_id, moved)
                uow.add(
                    Transaction.complete(
                        party=principal.party,
                        client_id=client_id,
                        kind=TransactionKind.FORFEITURE,
                        source=account.account_id,
                        destination=cancellation.account_id,
                        blocks=list(moved),
                        reason=f"forfeited: detention {detention.reference} of {parsed} confirmed",
                        principal=principal,
                        fingerprint="",
                        details={
                            "detention": detention.reference,
                            "origin": parsed.key,
                            "proposal": proposal,
                        },
                    )
                )
            deadline = (now + timedelta(days=days)).date()
            for (txn_uuid, company, year), quantity in sources.items():
                uow.obligation(company, year).invalidate_surrender(
                    txn_uuid, "CCER", quantity, detention.reference, deadline
                )
            uow.save()
            return Confirmation.of(detention)

        return store.retrying(attempt)


def _forfeiture_id(uow: UnitOfWork, party: str, detention: OriginDetention, account_id: str) -> str:
    """``FORFEIT-<reference>-<account>`` (the reference as an id may spell it); should
    another origin's detention have used the same reference, its id is prefixed with
    this detention's id."""
    reference = re.sub(r"[^A-Za-z0-9._:-]", "_", detention.reference)
    client_id = f"FORFEIT-{reference}-{account_id}"[:128]
    if uow.find(Transaction.id_for(party, client_id), Transaction) is None:
        return client_id
    return f"FORFEIT-{detention.id.hex[:12]}-{reference}-{account_id}"[:128]


def _detention(uow: UnitOfWork, origin: Origin) -> OriginDetention:
    detention = uow.find(OriginDetention.id_for_origin(origin), OriginDetention)
    if detention is None:
        raise UnknownDetention(f"no detention of {origin}", origin=origin.key)
    return detention


def _check_forfeitable(
    uow: UnitOfWork, freeze_ids: list[str], account: Account, taken: Sequence[SerialBlock]
) -> None:
    """Forfeiture does not override a court: frozen serials, or a frozen account, stop
    the whole confirmation (nothing is stored) naming the order, until released."""
    account.ensure_can_send()
    check_account_types(TransactionKind.FORFEITURE, account.account_type, AccountType.CANCELLATION)
    freezes = [f for f in (uow.find(BlockFreeze.id_for(i), BlockFreeze) for i in freeze_ids) if f]
    check_block_freezes(taken, source_account=account.account_id, block_freezes=freezes)


def _release_holds(
    uow: UnitOfWork,
    account: Account,
    taken: Sequence[SerialBlock],
    principal: Principal,
    reference: str,
) -> None:
    """An exchange hold placed before the detention on units it holds is released, so
    the units can be forfeited (a hold on detained units could never settle anyway)."""
    for key, blocks in dict(account.held).items():
        if not any(b.overlaps(t) for b in blocks for t in taken):
            continue
        hold = uow.find(UUID(key), Hold)
        if hold is not None:
            hold.release(principal, f"units forfeited under detention {reference}")
        account.release_hold(UUID(key))


def _surrenders_of(
    store: Store, uow: UnitOfWork, surrendered: Account, blocks: Sequence[SerialBlock]
) -> dict[tuple[UUID, str, int], int]:
    """Which surrender put each of ``blocks`` into CN-SURRENDER: (transaction, company,
    year) -> units. Read from the surrender account's own events (each credit names its
    transaction), the latest credit of a serial winning (a reversed surrender's serials
    may have been surrendered again)."""
    owner: list[tuple[SerialBlock, UUID]] = []
    for event in store.app.repository.event_store.get(surrendered.id):
        blocks_of = getattr(event, "blocks", None)
        txn = getattr(event, "transaction_id", None)
        if blocks_of is None or txn is None or not isinstance(event, Account.Credited):
            continue
        for block in blocks_of:
            hits = [
                SerialBlock(b.unit_class, max(b.first, block.first), min(b.last, block.last))
                for b in blocks
                if b.overlaps(block)
            ]
            for hit in hits:
                kept: list[tuple[SerialBlock, UUID]] = []
                for part, owner_txn in owner:
                    rest = _minus(part, hit) if part.overlaps(hit) else [part]
                    kept.extend((r, owner_txn) for r in rest)
                owner = [*kept, (hit, txn)]
    found: dict[tuple[UUID, str, int], int] = {}
    for part, txn in owner:
        record = uow.find(txn, Transaction)
        if record is None or record.kind is not TransactionKind.SURRENDER or record.source is None:
            continue
        key = (txn, record.source, int(record.details["compliance_year"]))
        found[key] = found.get(key, 0) + part.quantity
    return found


def _minus(block: SerialBlock, cut: SerialBlock) -> list[SerialBlock]:
    """``block`` without the serials of ``cut`` (0, 1 or 2 pieces)."""
    pieces = []
    if block.first < cut.first:
        pieces.append(SerialBlock(block.unit_class, block.first, cut.first - 1))
    if cut.last < block.last:
        pieces.append(SerialBlock(block.unit_class, cut.last + 1, block.last))
    return pieces
