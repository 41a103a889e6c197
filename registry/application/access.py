"""Access control use cases: grant and revoke roles, issue, rotate and revoke tokens,
register client certificates; and the always-current view calls are checked against.

Every change is saved on the one ``AccessControl`` aggregate with who made it and why.
``current()`` answers from memory after one indexed query for events newer than the
version it holds, so a revocation saved by any process takes effect on the next call
everywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from copy import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.application.unit_of_work import UnitOfWork, replay
from registry.application.unit_of_work import saved_position as _position
from registry.domain.access import (
    AccessControl,
    AccessRefused,
    Role,
    check_access_reason,
    check_accounts,
    new_credential_id,
    new_token,
    parse_role,
)
from registry.domain.transactions import Principal

if TYPE_CHECKING:
    from registry.application.registry import Registry


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


class Access:
    """The access-control use cases of one registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._acl: AccessControl | None = None

    # -- changes ------------------------------------------------------------------------

    def grant_role(self, by: Principal, grant_id: str, principal: Principal, role: str,
                   accounts: Iterable[str], reason: str) -> AccessChange:
        parsed = parse_role(role)
        scope = check_accounts(parsed, accounts)
        check_access_reason(reason)

        def attempt(uow: UnitOfWork) -> AccessChange:
            acl = self._acl_for_change(uow)
            if not acl.grant(grant_id, principal, parsed, scope, by, reason):
                return AccessChange(grant_id, None, replayed=True)
            return AccessChange(grant_id, _position(uow.save()))

        return self._registry._retrying(attempt)

    def revoke_grant(self, by: Principal, grant_id: str, reason: str) -> AccessChange:
        check_access_reason(reason)

        def attempt(uow: UnitOfWork) -> AccessChange:
            acl = self._acl_for_change(uow)
            acl.revoke_grant(grant_id, by, reason)
            return AccessChange(grant_id, _position(uow.save()))

        return self._registry._retrying(attempt)

    def issue_token(self, by: Principal, principal: Principal, reason: str) -> IssuedToken:
        check_access_reason(reason)
        token = new_token(new_credential_id())

        def attempt(uow: UnitOfWork) -> IssuedToken:
            acl = self._acl_for_change(uow)
            credential_id = acl.issue_token(token, principal, by, reason)
            return IssuedToken(credential_id, token, _position(uow.save()))

        return self._registry._retrying(attempt)

    def rotate_token(self, by: Principal, credential_id: str, reason: str) -> IssuedToken:
        """A new token for the same principal, and the old one revoked, in one save: no
        moment with neither, none with both."""
        check_access_reason(reason)
        token = new_token(new_credential_id())

        def attempt(uow: UnitOfWork) -> IssuedToken:
            acl = self._acl_for_change(uow)
            old = acl.credential(credential_id)
            if old is None or old["kind"] != "token" or old["revoked"]:
                raise AccessRefused(f"no active token {credential_id} to rotate",
                                    credential=credential_id)
            principal = Principal(old["party"], old["name"])
            acl.revoke_credential(credential_id, by, reason)
            new_id = acl.issue_token(token, principal, by, reason)
            return IssuedToken(new_id, token, _position(uow.save()))

        return self._registry._retrying(attempt)

    def register_certificate(self, by: Principal, principal: Principal, fingerprint: str,
                             subject: str, reason: str) -> AccessChange:
        check_access_reason(reason)
        credential_id = new_credential_id()

        def attempt(uow: UnitOfWork) -> AccessChange:
            acl = self._acl_for_change(uow)
            acl.register_certificate(credential_id, principal, fingerprint.lower(), subject,
                                     by, reason)
            return AccessChange(credential_id, _position(uow.save()))

        return self._registry._retrying(attempt)

    def revoke_credential(self, by: Principal, credential_id: str, reason: str
                          ) -> AccessChange:
        check_access_reason(reason)

        def attempt(uow: UnitOfWork) -> AccessChange:
            acl = self._acl_for_change(uow)
            acl.revoke_credential(credential_id, by, reason)
            return AccessChange(credential_id, _position(uow.save()))

        return self._registry._retrying(attempt)

    def bootstrap(self, principal: Principal, roles: Iterable[Role], reason: str
                  ) -> IssuedToken | None:
        """The first principal of a new registry, with ``roles`` over every account and
        a token; None when the registry already has grants (nothing is changed)."""
        token = new_token(new_credential_id())
        system = Principal("system", "bootstrap")

        def attempt(uow: UnitOfWork) -> IssuedToken | None:
            acl = self._acl_for_change(uow)
            if acl.grants:
                return None
            for role in roles:
                acl.grant(f"bootstrap-{principal.party}-{principal.name}-{role}", principal,
                          role, check_accounts(role, ()), system, reason)
            credential_id = acl.issue_token(token, principal, system, reason)
            return IssuedToken(credential_id, token, _position(uow.save()))

        return self._registry._retrying(attempt)

    # -- the view calls are checked against -----------------------------------------

    def current(self, latest_version: Callable[[], int] | None = None) -> AccessControl:
        """The access state as committed now: the held copy brought up to date with the
        events any process saved since. ``latest_version`` (the aggregate's stored
        version, from a cheaper read connection) saves the store's own read when
        nothing changed, which is almost always."""
        held = self._acl   # read without the lock: calls check at once, in parallel
        after = held.version if held is not None else 0
        if latest_version is not None and held is not None and latest_version() == after:
            return held
        stored = self._registry.recorder.select_events(AccessControl.id_for(), gt=after)
        if not stored:
            return held if held is not None else _EMPTY
        with self._lock:   # one caller applies what is new; the others see it applied
            held = self._acl
            after = held.version if held is not None else 0
            newer = [event for event in stored if event.originator_version > after]
            if newer:
                self._acl = replay(copy(held), map(self._registry.mapper.to_domain_event,
                                                   newer))
            return self._acl if self._acl is not None else _EMPTY

    def _acl_for_change(self, uow: UnitOfWork) -> AccessControl:
        found = uow.find(AccessControl.id_for(), AccessControl)
        return found if found is not None else uow.add(AccessControl.start())


_EMPTY = AccessControl.start()
"""The state of a registry nobody was ever granted anything in."""
