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
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from registry.domain.access import SCOPED_ROLES, AccessControl, Grant, Role
from registry.domain.accounts import ACCOUNT_ID
from registry.domain.proposals import ProposalKind
from registry.domain.transactions import Principal
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


def _rules(service: str, rules: Mapping[str, Rule]) -> dict[str, Rule]:
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
        "RecordComplianceFine": ProposalKind.COMPLIANCE_FINE,
        "EnforceDeductions": ProposalKind.DEDUCTION,
    }.items()
}
"""The calls that, when four eyes are required (``REGISTRY_FOUR_EYES``), are refused
with ``PROPOSAL_REQUIRED``: the same action goes through ``ProposeAction`` with this
kind, for a second regulator to approve. (Restrictions and regulator cancellations have
no direct call: they exist only as proposals.)"""


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


def authorize(method: str, request: Any, principal: Principal, acl: AccessControl) -> Scope:
    """Return the grants under which ``principal`` may make this call; else
    PERMISSION_DENIED with the reason: METHOD_NOT_ALLOWED (no rule), ROLE_NOT_GRANTED,
    ACCOUNT_NOT_IN_SCOPE."""
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
