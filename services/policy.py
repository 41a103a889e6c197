"""Who may call what, in one table: method x role x account scope.

Every call passes ``authorize`` (from the interceptor) before any servicer code runs.
A method absent from the table is refused: a new method is closed until someone
decides who may call it (``tests/unit/test_policy.py`` checks every method is listed).

Scoped roles (exchange, operator) act only on the accounts their grants name; a
request that names accounts must name only those. A request that ranges over every
account (ListAccounts, ListPositions without ``account_ids``) needs an unscoped
grant. Methods keyed by the caller's own ids (a hold, a trade) look the id up under
the caller's party, and only then know the accounts: the servicer checks those with
``found_in_scope``, answering an out-of-scope hold or trade exactly as an unknown id
(another desk's hold in the same party is not revealed to exist).

Provincial regulators (a regulator grant naming provinces: a provincial ecology and
environment department, which verifies the emissions of the companies in its province,
MEE Measures 2020 Arts. 25-26, Interim Regulations 2024 Arts. 11-12) may call only the
methods of ``PROVINCIAL``, and only on accounts whose holder is in one of its provinces
(looked up through a ``Jurisdiction``); anything else is a national act, refused with
PERMISSION_DENIED ``NATIONAL_ACT``, an account elsewhere with ``ACCOUNT_NOT_IN_PROVINCE``.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from registry.domain.access import SCOPED_ROLES, AccessControl, Grant, Role
from registry.domain.accounts import ACCOUNT_ID
from registry.domain.proposals import ProposalKind, ProposalView
from registry.domain.transactions import Principal
from registry.v1 import administration_service_pb2 as admin_pb
from services.errors import ApiError

R = Role
READERS = frozenset({R.REGULATOR, R.AUDITOR})
Accounts = Callable[[Any], list[str]]


@dataclass(frozen=True)
class Rule:
    """The roles that may call a method, and what accounts a request acts on: None for
    no account (or the caller's own ids); ``EVERY`` when it ranges over all of them."""

    roles: frozenset[Role]
    accounts: Accounts | None = None
    after_lookup: bool = False
    """The request names an id (a hold, a trade) whose accounts the servicer checks
    once it has found it (``found_in_scope``)."""


def _field(name: str) -> Accounts:
    return lambda request: [getattr(request, name)]


def _trades(request: Any) -> list[str]:
    return [a for t in request.trades for a in (t.seller_account, t.buyer_account)]


def _listed(request: Any) -> list[str]:
    return list(request.account_ids) or [EVERY]


EVERY = "*"
"""Stands for "every account" in what a request acts on."""


def _every(request: Any) -> list[str]:
    return [EVERY]


ACCOUNT = _field("account_id")
S, A, ADM, AUD = (
    "registry.v1.SettlementService",
    "registry.v1.AccountService",
    "registry.v1.AdministrationService",
    "registry.v1.AuditService",
)
ACC = "registry.v1.AccessService"


T = TypeVar("T")


def _rules(service: str, rules: Mapping[str, T]) -> dict[str, T]:
    return {f"{service}/{method}": rule for method, rule in rules.items()}


POLICY: dict[str, Rule] = {
    **_rules(
        S,
        {
            "PlaceHold": Rule(frozenset({R.EXCHANGE}), ACCOUNT),
            "ReleaseHold": Rule(frozenset({R.EXCHANGE}), after_lookup=True),
            "GetHold": Rule(frozenset({R.EXCHANGE}), after_lookup=True),
            "SettleTrades": Rule(frozenset({R.EXCHANGE}), _trades),
            # the caller's party's own transaction by its id, on an account of its grants
            "GetTrade": Rule(frozenset({R.EXCHANGE, R.OPERATOR}) | READERS, after_lookup=True),
            "ListPositions": Rule(frozenset({R.EXCHANGE}) | READERS, _listed),
        },
    ),
    **_rules(
        A,
        {
            "GetAccount": Rule(frozenset({R.OPERATOR, R.EXCHANGE}) | READERS, ACCOUNT),
            "ListAccounts": Rule(frozenset({R.EXCHANGE}) | READERS, _every),
            "GetBalances": Rule(frozenset({R.OPERATOR, R.EXCHANGE}) | READERS, ACCOUNT),
            "ListTransactions": Rule(frozenset({R.OPERATOR}) | READERS, ACCOUNT),
            "SurrenderUnits": Rule(frozenset({R.OPERATOR}), ACCOUNT),
            "CancelUnits": Rule(frozenset({R.OPERATOR}), ACCOUNT),
            "GetComplianceStatus": Rule(frozenset({R.OPERATOR}) | READERS, ACCOUNT),
            # the source is what the operator acts on; the destination must be the same
            # holder's (DIFFERENT_HOLDER otherwise, the ledger's check)
            "TransferUnits": Rule(frozenset({R.OPERATOR}), _field("source_account_id")),
            "SubmitRebuttal": Rule(frozenset({R.OPERATOR}), ACCOUNT),
        },
    ),
    **_rules(
        ADM,
        {
            method: Rule(frozenset({R.REGULATOR}))
            for method in (
                "OpenAccount",
                "FreezeAccount",
                "UnfreezeAccount",
                "CloseAccount",
                "IssueUnits",
                "AllocateUnits",
                "ReverseTransaction",
                "RecordVerifiedEmissions",
                "SetComplianceRules",
                "CloseComplianceYear",
                "ProposeAction",
                "ApproveProposal",
                "RejectProposal",
                "ExpireProposals",
            )
        },
    ),
    **_rules(
        ADM,
        {
            method: Rule(READERS)
            for method in ("GetComplianceRules", "GetProposal", "ListProposals")
        },
    ),
    **_rules(
        ADM,
        {
            method: Rule(frozenset({R.REGULATOR}))
            for method in ("RecordComplianceFine", "EnforceDeductions")
        },
    ),
    **_rules(
        ADM,
        {
            method: Rule(frozenset({R.REGULATOR}))
            for method in (
                "RegisterProject",
                "UpdateProject",
                "SuspendProject",
                "ReinstateProject",
                "DeregisterProject",
            )
        },
    ),
    **_rules(ADM, {method: Rule(READERS) for method in ("GetProject", "ListProjects")}),
    **_rules(
        AUD,
        {
            method: Rule(READERS)
            for method in (
                "StreamEvents",
                "GetAccountHistory",
                "GetBalancesAsOf",
                "TraceSerial",
                "GetSupply",
                "GetComplianceReport",
            )
        },
    ),
    **_rules(AUD, {"GetLedgerDigest": Rule(READERS | {R.EXCHANGE, R.OPERATOR})}),
    # an operator: the restrictions touching its accounts (the servicer filters by scope)
    **_rules(AUD, {"ListRestrictions": Rule(READERS | {R.OPERATOR}, after_lookup=True)}),
    **_rules(
        ACC,
        {
            method: Rule(frozenset({R.ADMIN}))
            for method in (
                "GrantRole",
                "RevokeGrant",
                "IssueToken",
                "RotateToken",
                "RevokeCredential",
                "RegisterCertificate",
                "ListPrincipals",
            )
        },
    ),
}


FOUR_EYES: dict[str, ProposalKind] = {
    f"{ADM}/{method}": kind
    for method, kind in {
        "FreezeAccount": ProposalKind.ACCOUNT_FREEZE,
        "UnfreezeAccount": ProposalKind.ACCOUNT_UNFREEZE,
        "IssueUnits": ProposalKind.ISSUANCE,
        "AllocateUnits": ProposalKind.ALLOCATION_TABLE,
        "ReverseTransaction": ProposalKind.REVERSAL,
        "SetComplianceRules": ProposalKind.RULE_CHANGE,
        "RecordVerifiedEmissions": ProposalKind.VERIFIED_EMISSIONS,
        "CloseComplianceYear": ProposalKind.YEAR_CLOSING,
        "RecordComplianceFine": ProposalKind.COMPLIANCE_FINE,
        "EnforceDeductions": ProposalKind.DEDUCTION,
        "RegisterProject": ProposalKind.PROJECT_REGISTRATION,
        "UpdateProject": ProposalKind.PROJECT_CHANGE,
        "SuspendProject": ProposalKind.PROJECT_SUSPENSION,
        "ReinstateProject": ProposalKind.PROJECT_REINSTATEMENT,
        "DeregisterProject": ProposalKind.PROJECT_DEREGISTRATION,
    }.items()
}
"""The calls that, when four eyes are required (``REGISTRY_FOUR_EYES``), are refused
with ``PROPOSAL_REQUIRED``: the same action goes through ``ProposeAction`` with this
kind, for a second regulator to approve. (Restrictions, regulator cancellations and
transfers between holders have no direct call: they exist only as proposals.)"""


class Jurisdiction(Protocol):
    """What authorising a provincial regulator must look up: where accounts' holders
    are, and what a proposal it would decide does. Authoritative (the write model, not
    the read models, which may lag behind an account just opened)."""

    def provinces_of(self, account_ids: Sequence[str]) -> Mapping[str, str | None]:
        """Each account's holder province; None for an unknown account or none given."""
        ...

    def proposal(self, party: str, proposal_id: str) -> ProposalView | None: ...


ProvincialAccounts = Callable[[Any, "Jurisdiction | None"], list[str]]
"""The accounts a provincial regulator's request acts on (raising NATIONAL_ACT for a
request that is a national act whatever its accounts)."""


def _account(request: Any, _: Jurisdiction | None) -> list[str]:
    return [request.account_id]


def _none(request: Any, _: Jurisdiction | None) -> list[str]:
    return []


def _emission_rows(request: Any, _: Jurisdiction | None) -> list[str]:
    return [row.account_id for row in request.rows]


def _payload_accounts(payload: Any) -> list[str]:
    """The accounts of a VERIFIED_EMISSIONS payload's rows (what is not one is left to
    the servicer's INVALID_PAYLOAD)."""
    rows = payload.get("rows") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        return []
    return [
        row["account_id"]
        for row in rows
        if isinstance(row, dict) and isinstance(row.get("account_id"), str)
    ]


def _provincial_kind(kind: str) -> None:
    if kind != ProposalKind.VERIFIED_EMISSIONS:
        raise NationalAct(f"a {kind} proposal")


def _proposed(request: Any, _: Jurisdiction | None) -> list[str]:
    if request.kind not in admin_pb.ProposalKind.values() or not request.kind:
        return []  # no kind, or an unknown one: the servicer's precise INVALID_ARGUMENT
    kind = admin_pb.ProposalKind.Name(request.kind).removeprefix("PROPOSAL_KIND_")
    _provincial_kind(kind)
    try:
        return _payload_accounts(json.loads(request.payload_json or "{}"))
    except (ValueError, RecursionError):
        return []  # the servicer answers INVALID_PAYLOAD


def _decided(request: Any, jurisdiction: Jurisdiction | None) -> list[str]:
    """Approving or rejecting: a proposal's content never changes once proposed, so what
    is looked up now is what the decision acts on. An unknown one is the servicer's
    NOT_FOUND."""
    if jurisdiction is None:
        raise NationalAct("deciding a proposal (its content cannot be looked up here)")
    view = jurisdiction.proposal(request.party, request.proposal_id)
    if view is None:
        return []
    _provincial_kind(view.kind)
    return _payload_accounts(view.payload)


PROVINCIAL: dict[str, ProvincialAccounts] = {
    **_rules(
        A,
        dict.fromkeys(
            ("GetAccount", "GetBalances", "ListTransactions", "GetComplianceStatus"), _account
        ),
    ),
    **_rules(AUD, {"GetAccountHistory": _account}),
    **_rules(
        ADM,
        {
            "RecordVerifiedEmissions": _emission_rows,
            "ProposeAction": _proposed,
            "ApproveProposal": _decided,
            "RejectProposal": _decided,
            "GetProposal": _none,
            "ListProposals": _none,
            "GetComplianceRules": _none,
        },
    ),
}
"""What a provincial regulator may call, and the accounts each request acts on (all of
them in its provinces). Verifying emissions is the provincial departments' (Measures
2020 Art. 26; Interim Regulations Art. 12), so they record verified emissions, propose
and decide ``VERIFIED_EMISSIONS`` tables of their companies, and read those companies'
accounts and compliance status. Everything else is national: issuance, allocation,
rules, closing a year, freezes, reversals, restrictions, and approving any other
proposal (the national carbon market's acts, MEE's)."""


class NationalAct(Exception):
    """Raised by a ``PROVINCIAL`` entry for a request no provincial regulator may make."""


@dataclass(frozen=True)
class Scope:
    """The grants a call is authorised under: which accounts it may act on."""

    grants: tuple[Grant, ...]

    def covers(self, account: str) -> bool:
        return any(g.covers(account) for g in self.grants)


_scope: contextvars.ContextVar[Scope] = contextvars.ContextVar("scope")


def bind_scope(scope: Scope) -> contextvars.Token[Scope]:
    return _scope.set(scope)


def unbind_scope(token: contextvars.Token[Scope]) -> None:
    _scope.reset(token)


def found_in_scope(accounts: Iterable[str | None]) -> bool:
    """Whether the call's grants cover any of the accounts of what it looked up (a hold's
    account; a transaction's source or destination: a movement is on both). Outside a
    served call nothing is bound and this fails (closed), never answering True."""
    scope = _scope.get()
    if any(g.all_accounts for g in scope.grants):  # regulators, auditors, `*` exchanges
        return True
    return any(scope.covers(a) for a in accounts if a)


def authorize(
    method: str,
    request: Any,
    principal: Principal,
    acl: AccessControl,
    jurisdiction: Jurisdiction | None = None,
) -> Scope:
    """Return the grants under which ``principal`` may make this call; else
    PERMISSION_DENIED with the reason: METHOD_NOT_ALLOWED (no rule), ROLE_NOT_GRANTED,
    ACCOUNT_NOT_IN_SCOPE; for a provincial regulator NATIONAL_ACT and
    ACCOUNT_NOT_IN_PROVINCE (``jurisdiction`` looks its accounts up)."""
    key = method.lstrip("/")
    rule = POLICY.get(key)
    if rule is None:
        raise _denied("METHOD_NOT_ALLOWED", f"{key} is not open to any role")
    grants = [g for g in acl.grants_of(principal) if g.role in rule.roles]
    if not grants:
        roles = ", ".join(sorted(rule.roles))
        raise _denied(
            "ROLE_NOT_GRANTED",
            f"{principal} has no role that may call {key.rsplit('/', 1)[-1]} ({roles})",
            principal=str(principal),
        )
    scope = Scope(tuple(grants))
    if all(g.provincial for g in grants):  # only provincial regulator grants apply
        return _provincial(key, request, principal, scope, jurisdiction)
    if rule.accounts is None or any(g.all_accounts for g in grants):
        return scope
    for account in _named(rule.accounts(request)):
        if account == EVERY:
            raise _denied(
                "ACCOUNT_NOT_IN_SCOPE",
                f"{principal} may act on named accounts "
                "only: name them (this call would cover every account)",
                principal=str(principal),
            )
        if not any(g.covers(account) for g in grants):
            raise _denied(
                "ACCOUNT_NOT_IN_SCOPE",
                f"{principal} may not act on account {account}",
                principal=str(principal),
                account=account,
            )
    return scope


def _provincial(
    key: str,
    request: Any,
    principal: Principal,
    scope: Scope,
    jurisdiction: Jurisdiction | None,
) -> Scope:
    """A provincial regulator: a method of ``PROVINCIAL``, on accounts of its provinces."""
    provinces = ", ".join(sorted({p for g in scope.grants for p in g.provinces}))
    name = key.rsplit("/", 1)[-1]
    accounts_of = PROVINCIAL.get(key)
    try:
        if accounts_of is None:
            raise NationalAct(name)
        accounts = _named(accounts_of(request, jurisdiction))
    except NationalAct as act:
        raise _denied(
            "NATIONAL_ACT",
            f"{principal} is a provincial regulator ({provinces}): {act} is the national "
            "regulator's act",
            principal=str(principal),
            provinces=provinces,
        ) from None
    where = jurisdiction.provinces_of(accounts) if jurisdiction and accounts else {}
    for account in accounts:
        if not any(g.covers_province(where.get(account)) for g in scope.grants):
            raise _denied(
                "ACCOUNT_NOT_IN_PROVINCE",
                f"{principal} supervises the companies of {provinces}: account {account} "
                "is not one of them",
                principal=str(principal),
                account=account,
                provinces=provinces,
            )
    return scope


def _named(accounts: Iterable[str]) -> list[str]:
    """The accounts a request names, each once, in order. Blank or malformed ids are
    dropped: no account has them, so the servicer refuses them with the precise
    INVALID_ARGUMENT, and scope is not what is wrong."""
    return list(dict.fromkeys(a for a in accounts if a == EVERY or ACCOUNT_ID.match(a)))


def _denied(reason: str, message: str, **metadata: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, reason, message, metadata)


def policy_table() -> str:
    """The policy as the README's markdown table (a test keeps the two equal)."""
    roles = list(Role)
    lines = [
        "| method | " + " | ".join(r.value for r in roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for method, rule in POLICY.items():
        cells = [_cell(rule, role) for role in roles]
        service, name = method.removeprefix("registry.v1.").split("/")
        lines.append(f"| `{service}.{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(rule: Rule, role: Role) -> str:
    if role not in rule.roles:
        return "-"
    if role not in SCOPED_ROLES or (rule.accounts is None and not rule.after_lookup):
        return "yes"
    if rule.after_lookup:
        return "own accounts (by id)"
    return "`*` grant only" if rule.accounts is _every else "own accounts"
