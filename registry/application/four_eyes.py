"""Four eyes: regulator actions that take effect only when a different regulator approves.

A regulator proposes an action (an issuance, an allocation table, a reversal, a
cancellation, a freeze, a rule change, a table of verified emissions, the closing of a
compliance year, a transfer between holders ordered by a court, a merger or split, or
correcting an exchange's error) with a payload of its parameters; nothing
happens until another regulator approves it. Approval then carries the action out
through the registry's ordinary use case, under the approver's name, and records the
outcome on the proposal: what it produced, or the refusal it met. Every step is an
event with who and when.

Two people, not two names: an approval is refused when the approver's regulator grant
was made (proposed or approved) by the proposer, or took effect after the proposal was
made (``AccessControl.check_approver``), so nobody can mint a second regulator for the
occasion. The check applies wherever access is managed (a registry with grants: every
served one); a registry used as a library, with no access state, has none to check.
Access changes (``ROLE_GRANT``) are administrators' and go through
``registry.application.access``; regulators can neither propose nor decide them here.

The payload is checked when it is proposed, so a malformed action is refused at once
and an approver only ever approves something that can be carried out. Carrying out
is idempotent (the action's own ids make a repeat a replay), so an approval whose
outcome was not recorded (a crash in between) is completed by approving again.

The proposer's and the approver's jurisdictions (the provinces of a provincial
regulator, none for a national one: ``AccessControl.provinces_of``) are recorded on the
proposal. Whether a provincial regulator may propose or decide a proposal at all is the
policy's (``services/policy.py``: only verified emissions of its provinces' companies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from registry.application.accounts import Accounts
from registry.application.commands import (
    AllocationRow,
    EmissionsRow,
    Movement,
    check_batch,
    check_emissions,
    check_quantity,
    check_reason,
)
from registry.application.compliance import Compliance
from registry.application.enforcement import Enforcement
from registry.application.movements import Movements
from registry.application.origins import Origins, check_replacement_days
from registry.application.projects import ProjectResult, Projects, StatusChange
from registry.application.restrictions import Restrictions
from registry.application.results import EmissionsRowStatus, RowOutcome, TransactionResult
from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.application.unit_of_work import saved_position as _position
from registry.domain.access import AccessControl, Role, SeparationOfDuties, province_key
from registry.domain.accounts import check_account_id
from registry.domain.enforcement import Fine, check_correction_days
from registry.domain.errors import (
    InvalidCommand,
    RegistryError,
    UnknownProposal,
    error_for_reason,
)
from registry.domain.ids import check_client_id, check_party
from registry.domain.obligations import check_year
from registry.domain.origin_detentions import Origin, check_rebuttal_days
from registry.domain.projects import ProjectDetails, check_project_id
from registry.domain.proposals import (
    ACCESS_KINDS,
    DEFAULT_VALIDITY_SECONDS,
    Proposal,
    ProposalKind,
    ProposalStatus,
    ProposalView,
    check_payload,
    parse_proposal_kind,
)
from registry.domain.reasons import check_reason as check_restriction_reason
from registry.domain.restrictions import (
    blocks_from_rows,
    check_blocks,
    check_evidence,
    check_reference,
)
from registry.domain.rules import ComplianceRules, UnitLine, check_rule_key, unit_line_violations
from registry.domain.transactions import Principal, TransactionKind
from registry.domain.units import UnitClass, UnitSelector, parse_unit_type

Action = Callable[[Principal], str]
"""Carries an approved proposal out as the approver; returns what it produced."""


@dataclass(frozen=True)
class ProposalResult:
    proposal: ProposalView
    replayed: bool = False
    position: int | None = None


@dataclass(frozen=True)
class Actions:
    """The use cases an approved proposal carries out."""

    movements: Movements
    accounts: Accounts
    compliance: Compliance
    restrictions: Restrictions
    enforcement: Enforcement
    origins: Origins
    projects: Projects


class FourEyes:
    """The proposal use cases of one registry. ``access`` is the access state as
    committed now (``Access.current``): who may approve."""

    def __init__(self, store: Store, actions: Actions, access: Callable[[], AccessControl]) -> None:
        self._store = store
        self._actions = actions
        self._access = access

    def propose(
        self,
        principal: Principal,
        proposal_id: str,
        kind: str,
        payload: Mapping[str, Any],
        reason: str,
        validity_seconds: int = DEFAULT_VALIDITY_SECONDS,
    ) -> ProposalResult:
        """Record a pending proposal; the same proposal again is a replay, the same id
        with other content is refused."""
        parsed = parse_proposal_kind(kind)
        _not_access(parsed)
        normal = check_payload(payload)
        try:
            self._action(parsed, normal)  # a payload that could not be carried out: refused now
        except InvalidCommand as error:
            raise _in_payload(error) from None
        store = self._store

        def attempt(uow: UnitOfWork) -> ProposalResult:
            existing = uow.find(Proposal.id_for(principal.party, proposal_id), Proposal)
            if existing is not None:
                existing.ensure_same_content(parsed, normal)
                return ProposalResult(existing.view(store.clock()), replayed=True)
            proposal = uow.add(
                Proposal.propose(
                    proposal_id=proposal_id,
                    kind=parsed,
                    payload=normal,
                    reason=reason,
                    principal=principal,
                    now=store.clock(),
                    validity_seconds=validity_seconds,
                    provinces=self._access().provinces_of(principal),
                )
            )
            return ProposalResult(proposal.view(), position=_position(uow.save()))

        return store.retrying(attempt)

    def approve(self, principal: Principal, party: str, proposal_id: str) -> ProposalResult:
        """Approve as a second regulator and carry the action out; approving again (the
        same approver) answers the outcome, completing it if it was never recorded."""
        store = self._store

        def decide(uow: UnitOfWork) -> tuple[Proposal, int | None]:
            proposal = self._proposal(uow, party, proposal_id)
            _not_access(proposal.kind)
            acl = self._access()
            if proposal.status is ProposalStatus.PENDING and acl.grants:
                acl.check_approver(
                    principal, Role.REGULATOR, proposal.proposer, proposal.created_at
                )
            approved = proposal.approve(principal, store.clock(), acl.provinces_of(principal))
            return proposal, _position(uow.save()) if approved else None

        proposal, position = store.retrying(decide)
        if proposal.status is not ProposalStatus.APPROVED:  # its outcome is recorded
            return ProposalResult(proposal.view(), replayed=position is None)
        try:  # the approval is recorded: whatever carrying it out meets (a refusal, an
            # id taken meanwhile by other content, ...) is its outcome, not a failed call;
            # only a lost race (retryable) is left for approving again to complete
            produced, failure = self._action(proposal.kind, proposal.payload)(principal), None
        except RegistryError as error:
            if error.retryable:
                raise
            produced, failure = "", error

        def record(uow: UnitOfWork) -> ProposalResult:
            current = self._proposal(uow, party, proposal_id)
            now = store.clock()
            changed = (
                current.mark_failed(failure, now)
                if failure is not None
                else current.mark_executed(produced, now)
            )
            return ProposalResult(
                current.view(), position=_position(uow.save()) if changed else position
            )

        return store.retrying(record)

    def reject(
        self, principal: Principal, party: str, proposal_id: str, reason: str
    ) -> ProposalResult:
        """Reject (or, by its proposer, withdraw) a pending proposal: it never takes effect."""
        store = self._store

        def attempt(uow: UnitOfWork) -> ProposalResult:
            proposal = self._proposal(uow, party, proposal_id)
            _not_access(proposal.kind)
            rejected = proposal.reject(
                principal, reason, store.clock(), self._access().provinces_of(principal)
            )
            position = _position(uow.save()) if rejected else None
            return ProposalResult(proposal.view(), replayed=not rejected, position=position)

        return store.retrying(attempt)

    def expire_due(self, among: Iterable[UUID] | None = None) -> list[ProposalView]:
        """Record every pending proposal past its validity as expired: of ``among``
        (proposal ids, the housekeeping's index of those still pending) if given, else
        of every proposal in the log (one scan of it by topic)."""
        store = self._store
        expired = []
        for proposal in self._all(among):
            if proposal.status is ProposalStatus.PENDING and proposal.is_due(store.clock()):

                def attempt(uow: UnitOfWork, p: Proposal = proposal) -> ProposalView:
                    current = self._proposal(uow, p.party, p.proposal_id)
                    if current.expire(store.clock()):
                        uow.save()
                    return current.view()

                expired.append(store.retrying(attempt))
        return expired

    def get(self, party: str, proposal_id: str) -> ProposalView:
        return self._proposal(UnitOfWork(self._store.app), party, proposal_id).view(
            self._store.clock()
        )

    def list_proposals(self, status: str = "", province: str = "") -> list[ProposalView]:
        """Every proposal (of one status, if given; proposed, approved or rejected by a
        regulator of ``province`` in its jurisdiction then, if given), oldest first: the
        audit of what one province's department did through four eyes."""
        now = self._store.clock()
        views = [p.view(now) for p in self._all()]
        return [
            v
            for v in views
            if (not status or v.status.value == status) and (not province or acted_in(v, province))
        ]

    # -- plumbing -------------------------------------------------------------------

    def _all(self, among: Iterable[UUID] | None = None) -> list[Proposal]:
        store = self._store
        uow = UnitOfWork(store.app)
        ids = list(store.originators(Proposal.Proposed.TOPIC) if among is None else among)
        uow.prefetch(ids, store.load_many)
        return [p for p in (uow.find(i, Proposal) for i in ids) if p is not None]

    @staticmethod
    def _proposal(uow: UnitOfWork, party: str, proposal_id: str) -> Proposal:
        proposal = uow.find(Proposal.id_for(party, proposal_id), Proposal)
        if proposal is None:
            raise UnknownProposal(
                f"no proposal {party}:{proposal_id}", proposal=f"{party}:{proposal_id}"
            )
        return proposal

    def _action(self, kind: ProposalKind, payload: Mapping[str, Any]) -> Action:
        """The use case an approved proposal runs, built (and so checked) from its
        payload; a bad payload is an INVALID_PAYLOAD naming the field."""
        return _BUILDERS[kind](self._actions, _Payload(payload))


def acted_in(view: ProposalView, province: str) -> bool:
    """Whether the proposer, the approver or the rejecter acted as a regulator of
    ``province`` (case-insensitively, as grants are matched against holders' provinces)."""
    wanted = province_key(province)
    return any(
        province_key(p) == wanted
        for p in (*view.proposer_provinces, *view.approver_provinces, *view.rejecter_provinces)
    )


def _not_access(kind: ProposalKind) -> None:
    """Regulators' proposals move the ledger; administrators' change who may: neither
    decides the other's."""
    if kind in ACCESS_KINDS:
        raise SeparationOfDuties(
            f"a {kind} proposal is an access change: administrators propose and approve it "
            "with AccessService.GrantRole and reject it with RevokeGrant",
            kind=kind,
        )


class _Payload:
    """Typed access to a proposal's payload, each missing or ill-typed field named."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def text(self, name: str, default: str | None = None) -> str:
        value = self._data.get(name, default)
        if not isinstance(value, str) or (default is None and not value):
            raise _bad(name, "text")
        return value

    def number(self, name: str, optional: bool = False) -> int:
        value = self._data.get(name)
        if value is None and optional:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(name, "a whole number")
        return value

    def items(self, name: str) -> list[Any]:
        value = self._data.get(name)
        if not isinstance(value, list) or not value:
            raise _bad(name, "a non-empty list")
        return value

    def flag(self, name: str) -> bool:
        value = self._data.get(name, False)
        if not isinstance(value, bool):
            raise _bad(name, "true or false")
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value = self._data.get(name)
        if not isinstance(value, dict):
            raise _bad(name, "an object")
        return value

    def rows(self, name: str) -> list[_Payload]:
        value = self._data.get(name)
        if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
            raise _bad(name, "a non-empty list of objects")
        return [_Payload(row) for row in value]


PAYLOAD_FIELDS = {
    "UNKNOWN_UNIT_TYPE": "unit_type",
    "INVALID_VINTAGE": "vintage",
    "MISSING_PROJECT": "project",
    "UNEXPECTED_PROJECT": "project",
    "INVALID_PROJECT": "project",
    "INVALID_QUANTITY": "quantity",
    "QUANTITY_NOT_POSITIVE": "quantity",
    "QUANTITY_TOO_LARGE": "quantity",
    "INVALID_REASON": "reason",
    "INVALID_ACCOUNT_ID": "account_id",
    "INVALID_COMPLIANCE_YEAR": "year",
    "INVALID_SECTOR": "sector",
}
"""The payload key a check is about, when the check does not name it."""
PAYLOAD_LABELS = {"reversed transaction id": "original_transaction_id"}


def _in_payload(error: InvalidCommand) -> InvalidCommand:
    """A check of the payload's values names its field inside the payload
    (``payload.unit_type``, ``payload.transaction_id``), not a request field."""

    def inside(label: str) -> str:
        if label == "payload" or label.startswith("payload."):
            return label
        return f"payload.{PAYLOAD_LABELS.get(label, label.replace(' ', '_'))}"

    if error.violations:  # INVALID_RULE: named as SetComplianceRules names them
        return error  # (rules.ccer_cap_bps), which tests/integration pin
    label = error.metadata.get("field", "") or PAYLOAD_FIELDS.get(error.reason, "")
    error.metadata["field"] = inside(label) if label else "payload"
    return error


def _bad(name: str, what: str) -> InvalidCommand:
    return InvalidCommand(
        f"payload field {name!r} must be {what}", reason="INVALID_PAYLOAD", field=f"payload.{name}"
    )


def _selector(p: _Payload) -> UnitSelector:
    vintage = p.number("vintage", optional=True) or None
    project = p.text("project", "") or None
    return UnitSelector(parse_unit_type(p.text("unit_type")), vintage, project)


def _completed(result: TransactionResult) -> str:
    """A movement's outcome as a proposal's result, or the refusal it met."""
    if not result.ok:
        raise error_for_reason(
            result.refusal_reason, result.refusal_message, **result.refusal_metadata
        )
    return f"{result.party}:{result.transaction_id}"


def _issuance(actions: Actions, p: _Payload) -> Action:
    unit_class = UnitClass(
        parse_unit_type(p.text("unit_type")), p.number("vintage"), p.text("project", "")
    )
    txn, quantity, reason = p.text("transaction_id"), p.number("quantity"), p.text("reason", "")
    check_client_id(txn, "transaction id")
    check_quantity(quantity)
    check_reason(reason)
    return lambda who: _completed(
        actions.movements.issue_units(who, txn, unit_class, quantity, reason)
    )


def _reversal(actions: Actions, p: _Payload) -> Action:
    txn, party = p.text("transaction_id"), p.text("original_party")
    original, reason = p.text("original_transaction_id"), p.text("reason", "")
    check_client_id(txn, "transaction id")
    check_party(party, "original party")
    check_client_id(original, "reversed transaction id")
    check_reason(reason)
    override = p.flag("override_restrictions")
    return lambda who: _completed(
        actions.movements.reverse(who, txn, party, original, reason, override)
    )


def _cancellation(actions: Actions, p: _Payload) -> Action:
    txn, account, quantity = p.text("transaction_id"), p.text("account_id"), p.number("quantity")
    selector, reason = _selector(p), p.text("reason", "")
    check_client_id(txn, "transaction id")
    check_account_id(account)
    check_quantity(quantity)
    check_reason(reason)
    return lambda who: _completed(
        actions.movements.cancel(who, txn, account, selector, quantity, reason)
    )


def _account_state(freeze: bool) -> Callable[[Actions, _Payload], Action]:
    def build(actions: Actions, p: _Payload) -> Action:
        account, reason = p.text("account_id"), p.text("reason")
        request = p.text("request_id")
        check_account_id(account)
        check_reason(reason)
        check_client_id(request, "request id")
        change = actions.accounts.freeze_account if freeze else actions.accounts.unfreeze_account

        def act(who: Principal) -> str:
            result = change(who, account, reason, request_id=request)
            return f"{result.account.account_id} {result.account.state}"

        return act

    return build


def _rule_change(actions: Actions, p: _Payload) -> Action:
    year, sector = p.number("year"), p.text("sector")
    check_year(year)
    check_rule_key(sector)
    rules = ComplianceRules.from_dict(p.mapping("rules")).check(year)
    reason = check_reason(p.text("reason", ""))

    def act(who: Principal) -> str:
        view = actions.compliance.set_compliance_rules(who, year, sector, rules, reason)
        return f"rules {year} {sector} version {view.version}"

    return act


def _fine(actions: Actions, p: _Payload) -> Action:
    account, year = p.text("account_id"), p.number("year")
    multiple, price = p.text("multiple"), p.text("reference_price")
    reason = check_reason(p.text("reason", ""))
    check_account_id(account)
    check_year(year)
    Fine.of(multiple, price, 0)

    def act(who: Principal) -> str:
        fine = actions.enforcement.record_fine(who, account, year, multiple, price, reason)
        return f"fine {account} {year} {fine.amount} CNY"

    return act


def _deduction(actions: Actions, p: _Payload) -> Action:
    year, reason = p.number("year"), check_reason(p.text("reason", ""))
    check_year(year)

    def act(who: Principal) -> str:
        run = actions.enforcement.enforce_deductions(who, year, reason)
        return f"deducted {run.deducted_tonnes} t from {run.deducted} accounts' {year + 1}"

    return act


def _allocation_table(actions: Actions, p: _Payload) -> Action:
    rows = [
        AllocationRow(
            r.text("transaction_id"),
            r.text("account_id"),
            r.text("unit_type"),
            r.number("quantity"),
            r.text("reason", ""),
            r.number("vintage", optional=True) or None,
            r.text("source", "") or None,
            returned=r.flag("return"),
        )
        for r in p.rows("rows")
    ]
    for index, row in enumerate(rows):
        try:
            row.movement()
        except InvalidCommand as error:
            raise InvalidCommand(
                f"payload rows[{index}]: {error.message}",
                reason="INVALID_PAYLOAD",
                field=f"payload.rows[{index}]",
            ) from None

    def act(who: Principal) -> str:
        results = actions.movements.allocate_many(who, rows)
        done = sum(
            r.outcome in (RowOutcome.COMPLETED, RowOutcome.ALREADY_COMPLETED) for r in results
        )
        return f"{done} of {len(results)} allocation rows completed"

    return act


def _verified_emissions(actions: Actions, p: _Payload) -> Action:
    """A whole table of verified figures, recorded all or none on approval. A row's
    reason may be left out for the table's ``reason`` (one verification campaign), which
    keeps 10,000 rows well inside the payload limit."""
    default = p.text("reason", "")
    rows = []
    for index, r in enumerate(p.rows("rows")):
        try:
            row = EmissionsRow(
                r.text("account_id"),
                r.number("compliance_year"),
                r.number("verified_emissions"),
                r.text("reason", default),
                _unit_lines(r),
            )
            check_account_id(row.account_id)
            check_year(row.compliance_year)
            check_emissions(row.verified_emissions)
            check_reason(row.reason)
            for problem in unit_line_violations(row.verified_emissions, row.unit_lines):
                raise InvalidCommand(problem.description, reason=problem.reason)
        except InvalidCommand as error:
            raise InvalidCommand(
                f"payload rows[{index}]: {error.message}",
                reason="INVALID_PAYLOAD",
                field=f"payload.rows[{index}]",
            ) from None
        rows.append(row)
    check_batch(len(rows), 0, "payload.rows", "emissions rows given")

    def act(who: Principal) -> str:
        recorded = actions.compliance.record_verified_emissions(who, rows)
        changed = sum(r.status is EmissionsRowStatus.RECORDED for r in recorded.results)
        return f"{changed} of {len(rows)} verified emissions rows recorded"

    return act


def _unit_lines(r: _Payload) -> tuple[UnitLine, ...]:
    """A payload row's unit lines (absent: none), named as in ``VerifiedEmissionsUnitLine``."""
    if r._data.get("unit_lines") is None:
        return ()
    return tuple(
        UnitLine(
            line.text("unit_category"),
            line.text("unit_id", ""),
            line.number("verified_emissions"),
            line.number("allocated"),
        )
        for line in r.rows("unit_lines")
    )


def _year_closing(actions: Actions, p: _Payload) -> Action:
    year, reason = p.number("year"), p.text("reason")
    days = p.number("correction_days", optional=True) or None  # absent: the default
    check_year(year)
    check_reason(reason)
    check_correction_days(days)

    def act(who: Principal) -> str:
        closing = actions.compliance.close_compliance_year(who, year, reason, days)
        return (
            f"year {year} closed: {closing.obligations_closed} obligations, "
            f"{closing.shortfalls} short by {closing.shortfall_tonnes} t"
        )

    return act


def _block_freeze(actions: Actions, p: _Payload) -> Action:
    freeze_id, account, order = p.text("freeze_id"), p.text("account_id"), p.text("order_reference")
    reason = p.text("reason")
    check_client_id(freeze_id, "freeze id")
    check_account_id(account)
    check_reference(order, "order_reference")
    check_restriction_reason(reason)
    try:
        blocks = blocks_from_rows(p.items("blocks"))
        check_blocks(blocks)
    except InvalidCommand as error:
        raise InvalidCommand(
            f"payload blocks: {error.message}", reason="INVALID_PAYLOAD", field="payload.blocks"
        ) from None
    return lambda who: actions.restrictions.freeze_blocks(
        who, freeze_id, account, blocks, order, reason
    )


def _block_release(actions: Actions, p: _Payload) -> Action:
    freeze_id, reason, evidence = p.text("freeze_id"), p.text("reason"), p.text("evidence")
    check_client_id(freeze_id, "freeze id")
    check_restriction_reason(reason)
    check_evidence(evidence)
    return lambda who: actions.restrictions.release_blocks(who, freeze_id, reason, evidence)


def _origin(p: _Payload) -> str:
    """The origin a detention proposal names: ``origin`` (``PROJECT:P-1``,
    ``UNIT_CLASS:CCER/2024/P-1``), or ``project`` as before origins had kinds."""
    origin = p.text("origin", "")
    text = origin or p.text("project")
    Origin.parse(text, "origin" if origin else "project")
    return text


def _detention(actions: Actions, p: _Payload) -> Action:
    origin, reference, reason = _origin(p), p.text("reference"), p.text("reason")
    days = p.number("rebuttal_days", optional=True) or None
    check_rebuttal_days(days)
    check_reference(reference)
    check_restriction_reason(reason)
    return lambda who: actions.restrictions.detain_origin(
        who, origin, reference, reason, rebuttal_days=days
    )


def _clearance(actions: Actions, p: _Payload) -> Action:
    origin, evidence, reason = _origin(p), p.text("evidence"), p.text("reason")
    check_evidence(evidence)
    check_restriction_reason(reason)
    return lambda who: actions.restrictions.clear_origin(who, origin, evidence, reason)


def _holder_clearance(actions: Actions, p: _Payload) -> Action:
    origin, account = _origin(p), p.text("account_id")
    evidence, reason = p.text("evidence"), p.text("reason")
    check_account_id(account)
    check_evidence(evidence)
    check_restriction_reason(reason)
    return lambda who: actions.origins.clear_holder(who, origin, account, evidence, reason)


def _confirmation(actions: Actions, p: _Payload) -> Action:
    origin, reason = _origin(p), p.text("reason")
    days = p.number("replacement_days", optional=True) or None
    check_replacement_days(days)
    check_restriction_reason(reason)
    return lambda who: actions.origins.confirm(who, origin, reason, replacement_days=days).summary()


def _ordered_transfer(kind: TransactionKind) -> Callable[[Actions, _Payload], Action]:
    """A transfer between holders a regulator orders (court order, merger, split,
    exchange error correction): both accounts, the units, a reason and its reference."""

    def build(actions: Actions, p: _Payload) -> Action:
        txn, quantity = p.text("transaction_id"), p.number("quantity")
        source, destination = p.text("source_account"), p.text("destination_account")
        reason, reference = p.text("reason"), p.text("reference")
        selector = _selector(p)
        check_client_id(txn, "transaction id")
        for name, account in (("source_account", source), ("destination_account", destination)):
            try:
                check_account_id(account)
            except InvalidCommand as error:
                error.metadata["field"] = name
                raise
        check_quantity(quantity)
        check_restriction_reason(reason)
        check_reference(reference)
        Movement(txn, kind, source, destination, quantity, reason, selector, reference=reference)
        return lambda who: _completed(
            actions.movements.transfer_units(
                who, kind, txn, source, destination, selector, quantity, reason, reference
            )
        )

    return build


def _halt(halted: bool) -> Callable[[Actions, _Payload], Action]:
    def build(actions: Actions, p: _Payload) -> Action:
        reason = check_restriction_reason(p.text("reason"))
        return lambda who: actions.restrictions.halt_market(who, reason, halted)

    return build


def _project_change(p: _Payload) -> tuple[str, StatusChange]:
    project_id, reason, reference = p.text("project_id"), p.text("reason"), p.text("reference")
    check_project_id(project_id)
    check_restriction_reason(reason)
    check_reference(reference)
    return project_id, StatusChange(reason, reference)


def _project_details(p: _Payload) -> ProjectDetails:
    names = ("owner_account", "province", "methodology", "sector", "verifier", "developer")
    values = {name: p.text(name) for name in names}
    return ProjectDetails.from_dict(
        {
            **values,
            "crediting_start": p.text("crediting_start"),
            "crediting_end": p.text("crediting_end"),
        }
    )


def _project_registration(actions: Actions, p: _Payload) -> Action:
    project_id, change = _project_change(p)
    details = _project_details(p)
    return lambda who: _project_done(actions.projects.register(who, project_id, details, change))


def _project_update(actions: Actions, p: _Payload) -> Action:
    project_id, change = _project_change(p)
    details = _project_details(p)
    return lambda who: _project_done(
        actions.projects.change_details(who, project_id, details, change)
    )


StatusStep = Callable[[Projects, Principal, str, StatusChange], ProjectResult]


def _project_status(step: StatusStep) -> Callable[[Actions, _Payload], Action]:
    def build(actions: Actions, p: _Payload) -> Action:
        project_id, change = _project_change(p)
        return lambda who: _project_done(step(actions.projects, who, project_id, change))

    return build


def _project_done(result: ProjectResult) -> str:
    return f"project {result.project.project_id} {result.project.status}"


_BUILDERS: dict[ProposalKind, Callable[[Actions, _Payload], Action]] = {
    ProposalKind.BLOCK_FREEZE: _block_freeze,
    ProposalKind.BLOCK_RELEASE: _block_release,
    ProposalKind.ORIGIN_DETENTION: _detention,
    ProposalKind.ORIGIN_CLEARANCE: _clearance,
    ProposalKind.MARKET_HALT: _halt(True),
    ProposalKind.MARKET_RESUMPTION: _halt(False),
    ProposalKind.ISSUANCE: _issuance,
    ProposalKind.ALLOCATION_TABLE: _allocation_table,
    ProposalKind.REVERSAL: _reversal,
    ProposalKind.REGULATOR_CANCELLATION: _cancellation,
    ProposalKind.ACCOUNT_FREEZE: _account_state(freeze=True),
    ProposalKind.ACCOUNT_UNFREEZE: _account_state(freeze=False),
    ProposalKind.RULE_CHANGE: _rule_change,
    ProposalKind.VERIFIED_EMISSIONS: _verified_emissions,
    ProposalKind.YEAR_CLOSING: _year_closing,
    ProposalKind.COMPLIANCE_FINE: _fine,
    ProposalKind.DEDUCTION: _deduction,
    ProposalKind.COURT_ORDER_TRANSFER: _ordered_transfer(TransactionKind.COURT_ORDER_TRANSFER),
    ProposalKind.MERGER_TRANSFER: _ordered_transfer(TransactionKind.MERGER_TRANSFER),
    ProposalKind.SPLIT_TRANSFER: _ordered_transfer(TransactionKind.SPLIT_TRANSFER),
    ProposalKind.EXCHANGE_CORRECTION: _ordered_transfer(TransactionKind.EXCHANGE_CORRECTION),
    ProposalKind.ORIGIN_HOLDER_CLEARANCE: _holder_clearance,
    ProposalKind.ORIGIN_CONFIRMATION: _confirmation,
    ProposalKind.PROJECT_REGISTRATION: _project_registration,
    ProposalKind.PROJECT_CHANGE: _project_update,
    ProposalKind.PROJECT_SUSPENSION: _project_status(Projects.suspend),
    ProposalKind.PROJECT_REINSTATEMENT: _project_status(Projects.reinstate),
    ProposalKind.PROJECT_DEREGISTRATION: _project_status(Projects.deregister),
}
