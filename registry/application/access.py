"""Access control use cases: grant and revoke roles, issue, rotate and revoke tokens,
register client certificates; and the always-current view calls are checked against.

Every change is saved on the one ``AccessControl`` aggregate with who made it and why.
``current()`` answers from memory after one indexed query for events newer than the
version it holds, so a revocation saved by any process takes effect on the next call
everywhere.

Four eyes on access: a grant of a role in ``FOUR_EYES_ROLES`` (regulator, exchange,
operator, admin) by an administrator is recorded as a ``ROLE_GRANT`` proposal (the same
``Proposal`` aggregate as regulators' actions, under party ``system``, id = the grant
id). A *different* administrator approves it by sending the same grant (id, principal,
role, accounts); the approval and the grant are one atomic save, and the grant records
both names. ``revoke_grant`` on a pending grant rejects (or withdraws) it. Auditor grants,
revocations and credentials take one administrator (a revocation must be immediate).

Only code that runs with the store itself, as party ``system`` (``registry access
init``, the embedded first start, tests and benchmarks), grants directly: no credential
can name that party, so no API caller can.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from copy import copy
from dataclasses import dataclass
from typing import Any

from registry.application.four_eyes import FourEyes
from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.application.unit_of_work import saved_position as _position
from registry.domain.access import (
    FOUR_EYES_ROLES,
    RESERVED_PARTY,
    AccessControl,
    AccessRefused,
    Role,
    SeparationOfDuties,
    check_access_reason,
    check_accounts,
    check_provinces,
    new_credential_id,
    new_token,
    parse_role,
)
from registry.domain.ids import check_client_id
from registry.domain.proposals import (
    ACCESS_SCOPE,
    Proposal,
    ProposalKind,
    ProposalStatus,
    ProposalView,
)
from registry.domain.transactions import Principal
from registry.persistence.aggregates import replay


@dataclass(frozen=True)
class IssuedToken:
    """A new bearer token: shown once, to hand over; the registry keeps only its hash."""

    credential_id: str
    token: str
    position: int | None


@dataclass(frozen=True)
class AccessChange:
    """What an access change did: the id it concerns, and whether it was a replay."""

    id: str
    position: int | None
    replayed: bool = False
    pending: bool = False
    """A four-eyes grant recorded as a proposal, waiting for a second administrator."""
    proposed_by: str = ""
    approved_by: str = ""


@dataclass(frozen=True)
class FirstPrincipal:
    """One principal the genesis of a registry's access created, with its token."""

    principal: Principal
    role: Role
    token: IssuedToken


class Access:
    """The access-control use cases of one registry."""

    def __init__(self, store: Store, proposals: FourEyes) -> None:
        self._store = store
        self._proposals = proposals
        self._lock = threading.Lock()
        self._acl: AccessControl | None = None

    # -- changes ------------------------------------------------------------------------

    def grant_role(
        self,
        by: Principal,
        grant_id: str,
        principal: Principal,
        role: str,
        accounts: Iterable[str],
        reason: str,
        provinces: Iterable[str] = (),
    ) -> AccessChange:
        """Grant a role. A four-eyes role granted by an administrator is a proposal the
        first time and takes effect when a different administrator sends the same grant;
        party ``system`` (in-process provisioning) grants directly. A regulator grant
        naming ``provinces`` is a provincial department's (none: national)."""
        parsed = parse_role(role)
        scope = check_accounts(parsed, accounts)
        jurisdiction = check_provinces(parsed, provinces)
        check_access_reason(reason)
        check_client_id(grant_id, "grant id")
        direct = by.party == RESERVED_PARTY or parsed not in FOUR_EYES_ROLES
        store = self._store

        def attempt(uow: UnitOfWork) -> AccessChange:
            acl = self._acl_for_change(uow)
            if direct:
                if (
                    grant_id not in acl.grants
                    and uow.find(Proposal.id_for(ACCESS_SCOPE, grant_id), Proposal) is not None
                ):
                    raise AccessRefused(
                        f"grant id {grant_id} is taken by a proposed grant", grant=grant_id
                    )
                if not acl.grant(
                    grant_id,
                    principal,
                    parsed,
                    scope,
                    by,
                    reason,
                    store.clock(),
                    provinces=jurisdiction,
                ):
                    return AccessChange(grant_id, None, replayed=True)
                return AccessChange(grant_id, _position(uow.save()))
            return self._four_eyes_grant(
                uow, acl, by, grant_id, principal, parsed, scope, reason, jurisdiction
            )

        return store.retrying(attempt)

    def _four_eyes_grant(
        self,
        uow: UnitOfWork,
        acl: AccessControl,
        by: Principal,
        grant_id: str,
        principal: Principal,
        role: Role,
        scope: tuple[str, ...],
        reason: str,
        provinces: tuple[str, ...] = (),
    ) -> AccessChange:
        if acl.is_granted(grant_id, principal, role, scope, provinces):
            return AccessChange(grant_id, None, replayed=True)
        acl.check_grantable(grant_id, principal, role, by)
        if Role.ADMIN not in {g.role for g in acl.grants_of(by)}:
            raise SeparationOfDuties(
                f"{by} is no administrator: only administrators propose and approve grants",
                principal=str(by),
            )
        payload = grant_payload(grant_id, principal, role, scope, provinces)
        now = self._store.clock()
        proposal = uow.find(Proposal.id_for(ACCESS_SCOPE, grant_id), Proposal)
        if proposal is None:
            uow.add(
                Proposal.propose(
                    proposal_id=grant_id,
                    kind=ProposalKind.ROLE_GRANT,
                    payload=payload,
                    reason=reason,
                    principal=by,
                    now=now,
                    scope=ACCESS_SCOPE,
                )
            )
            return AccessChange(grant_id, _position(uow.save()), pending=True, proposed_by=str(by))
        proposal.ensure_same_content(ProposalKind.ROLE_GRANT, payload)
        proposal.ensure_pending(now)
        if proposal.proposer == str(by):  # the proposer again: a retry, still waiting
            return AccessChange(
                grant_id, None, replayed=True, pending=True, proposed_by=proposal.proposer
            )
        acl.check_approver(by, Role.ADMIN, proposal.proposer, proposal.created_at)
        proposer = Principal(*proposal.proposer.split("/", 1))
        if Role.ADMIN not in {g.role for g in acl.grants_of(proposer)}:
            raise SeparationOfDuties(
                f"{proposer} proposed grant {grant_id} but is no longer "
                "an administrator: propose it again",
                principal=str(proposer),
            )
        proposal.approve(by, now)
        acl.grant(
            grant_id,
            principal,
            role,
            scope,
            proposer,
            proposal.reason,
            now,
            approved_by=by,
            proposal=proposal.ref,
            provinces=provinces,
        )
        proposal.mark_executed(f"grant {grant_id}", now)
        return AccessChange(
            grant_id, _position(uow.save()), proposed_by=proposal.proposer, approved_by=str(by)
        )

    def revoke_grant(self, by: Principal, grant_id: str, reason: str) -> AccessChange:
        """Withdraw an active grant at once (one administrator: taking power away must
        not wait); on a grant still waiting for approval, reject the proposal."""
        check_access_reason(reason)
        store = self._store

        def attempt(uow: UnitOfWork) -> AccessChange:
            acl = self._acl_for_change(uow)
            if grant_id not in acl.grants:
                check_client_id(grant_id, "grant id")
                proposal = uow.find(Proposal.id_for(ACCESS_SCOPE, grant_id), Proposal)
                now = store.clock()
                if proposal is not None and proposal.status_at(now) is ProposalStatus.PENDING:
                    proposal.reject(by, reason, now)
                    return AccessChange(
                        grant_id, _position(uow.save()), proposed_by=proposal.proposer
                    )
            acl.revoke_grant(grant_id, by, reason)
            return AccessChange(grant_id, _position(uow.save()))

        return store.retrying(attempt)

    def pending_grants(self) -> list[ProposalView]:
        """Grants proposed by one administrator, waiting for a second."""
        return [
            view
            for view in self._proposals.list_proposals(ProposalStatus.PENDING.value)
            if view.kind is ProposalKind.ROLE_GRANT
        ]

    def issue_token(self, by: Principal, principal: Principal, reason: str) -> IssuedToken:
        check_access_reason(reason)
        token = new_token(new_credential_id())

        def attempt(uow: UnitOfWork) -> IssuedToken:
            acl = self._acl_for_change(uow)
            credential_id = acl.issue_token(token, principal, by, reason)
            return IssuedToken(credential_id, token, _position(uow.save()))

        return self._store.retrying(attempt)

    def rotate_token(self, by: Principal, credential_id: str, reason: str) -> IssuedToken:
        """A new token for the same principal, and the old one revoked, in one save: no
        moment with neither, none with both."""
        check_access_reason(reason)
        token = new_token(new_credential_id())

        def attempt(uow: UnitOfWork) -> IssuedToken:
            acl = self._acl_for_change(uow)
            old = acl.credential(credential_id)
            if old is None or old["kind"] != "token" or old["revoked"]:
                raise AccessRefused(
                    f"no active token {credential_id} to rotate", credential=credential_id
                )
            principal = Principal(old["party"], old["name"])
            # the new one first, so the last administrator always keeps one
            new_id = acl.issue_token(token, principal, by, reason, replacing=True)
            acl.revoke_credential(credential_id, by, reason)
            return IssuedToken(new_id, token, _position(uow.save()))

        return self._store.retrying(attempt)

    def register_certificate(
        self, by: Principal, principal: Principal, fingerprint: str, subject: str, reason: str
    ) -> AccessChange:
        check_access_reason(reason)
        credential_id = new_credential_id()

        def attempt(uow: UnitOfWork) -> AccessChange:
            acl = self._acl_for_change(uow)
            acl.register_certificate(
                credential_id, principal, fingerprint.lower(), subject, by, reason
            )
            return AccessChange(credential_id, _position(uow.save()))

        return self._store.retrying(attempt)

    def revoke_credential(self, by: Principal, credential_id: str, reason: str) -> AccessChange:
        check_access_reason(reason)

        def attempt(uow: UnitOfWork) -> AccessChange:
            acl = self._acl_for_change(uow)
            acl.revoke_credential(credential_id, by, reason)
            return AccessChange(credential_id, _position(uow.save()))

        return self._store.retrying(attempt)

    def genesis(
        self, principals: Sequence[tuple[Principal, Role]], reason: str
    ) -> list[FirstPrincipal] | None:
        """The first principals of a new registry, each role over every account and one
        token per principal, in ONE save by ``system/bootstrap``: the recorded founding
        of its access, before anyone can call it (administrators, and the first
        regulators or auditors, which a lone administrator could not grant alone). None
        when the registry already has grants, or ever had (nothing is changed): after
        the founding, every four-eyes grant takes two administrators."""
        check_access_reason(reason)
        if not principals:
            raise ValueError("a genesis names at least one principal")
        tokens = {p: new_token(new_credential_id()) for p, _ in principals}
        system = Principal(RESERVED_PARTY, "bootstrap")
        store = self._store

        def attempt(uow: UnitOfWork) -> list[FirstPrincipal] | None:
            acl = self._acl_for_change(uow)
            if acl.grants or acl.revoked_grants:
                return None
            now = store.clock()
            for principal, role in principals:
                acl.grant(
                    f"bootstrap-{principal.party}-{principal.name}-{role}",
                    principal,
                    role,
                    check_accounts(role, ()),
                    system,
                    reason,
                    now,
                )
            ids = {p: acl.issue_token(t, p, system, reason) for p, t in tokens.items()}
            position = _position(uow.save())
            return [
                FirstPrincipal(p, role, IssuedToken(ids[p], tokens[p], position))
                for p, role in principals
            ]

        return store.retrying(attempt)

    # -- the view calls are checked against -----------------------------------------

    def current(self, latest_version: Callable[[], int] | None = None) -> AccessControl:
        """The access state as committed now: the held copy brought up to date with the
        events any process saved since. ``latest_version`` (the aggregate's stored
        version, from a cheaper read connection) saves the store's own read when
        nothing changed, which is almost always."""
        held = self._acl  # read without the lock: calls check at once, in parallel
        after = held.version if held is not None else 0
        if latest_version is not None and held is not None and latest_version() == after:
            return held
        stored = self._store.app.recorder.select_events(AccessControl.id_for(), gt=after)
        if not stored:
            return held if held is not None else _EMPTY
        with self._lock:  # one caller applies what is new; the others see it applied
            held = self._acl
            after = held.version if held is not None else 0
            newer = [event for event in stored if event.originator_version > after]
            if newer:
                self._acl = replay(copy(held), map(self._store.app.mapper.to_domain_event, newer))
            return self._acl if self._acl is not None else _EMPTY

    def _acl_for_change(self, uow: UnitOfWork) -> AccessControl:
        found = uow.find(AccessControl.id_for(), AccessControl)
        return found if found is not None else uow.add(AccessControl.start())


_EMPTY = AccessControl.start()
"""The state of a registry nobody was ever granted anything in."""


def grant_payload(
    grant_id: str,
    principal: Principal,
    role: Role,
    scope: tuple[str, ...],
    provinces: tuple[str, ...] = (),
) -> dict[str, Any]:
    """What a ROLE_GRANT proposal grants: the approver must send exactly this (the
    reason is the proposer's, and not part of what is approved). ``provinces`` only when
    there are some: a national grant's payload is what it was before provinces existed,
    so a grant proposed by the previous version is approved by sending it again."""
    payload: dict[str, Any] = {
        "grant_id": grant_id,
        "party": principal.party,
        "name": principal.name,
        "role": role.value,
        "accounts": list(scope),
    }
    if provinces:
        payload["provinces"] = list(provinces)
    return payload
