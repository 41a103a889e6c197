"""Access control as a pure aggregate: grants with their scope, tokens kept as salted
hashes and checked in constant time, certificates by fingerprint, revocations; and the
policy table covering every method of every service. No I/O."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from google.protobuf import descriptor_pool

from registry.domain.access import (
    AccessControl,
    AccessRefused,
    Role,
    check_accounts,
    check_principal,
    new_credential_id,
    new_token,
    parse_role,
)
from registry.domain.errors import InvalidCommand
from registry.domain.transactions import Principal
from services.errors import ApiError
from services.policy import POLICY, authorize
from services.server import SERVICE_NAMES

ADMIN = Principal("mee", "admin")
LI = Principal("mee", "regulator-li")
SH = Principal("shanghai-exchange", "settlement")
OP = Principal("huaneng", "operator")


def reason_of(call: Any, *args: Any) -> str:
    with pytest.raises((InvalidCommand, AccessRefused, ApiError)) as raised:
        call(*args)
    return str(raised.value.reason)


def acl_with(*grants: tuple[Principal, Role, tuple[str, ...]]) -> AccessControl:
    acl = AccessControl.start()
    for n, (principal, role, accounts) in enumerate(grants):
        acl.grant(f"g{n}", principal, role, check_accounts(role, accounts), ADMIN, "test")
    return acl


def test_a_token_is_kept_only_as_a_salted_hash_and_checked_exactly() -> None:
    acl = AccessControl.start()
    token = new_token(new_credential_id())
    credential_id = acl.issue_token(token, LI, ADMIN, "new regulator")
    stored = acl.credentials[credential_id]
    secret = token.split(".")[1]
    assert secret not in repr(acl.__dict__) and token not in repr(acl.__dict__)
    assert stored["hash"] == hashlib.sha256(bytes.fromhex(stored["salt"])
                                            + secret.encode()).hexdigest()
    assert acl.principal_for_token(token) == LI
    for wrong in (token[:-1] + ("A" if token[-1] != "A" else "B"), token + "x", secret,
                  f"{'0' * 16}.{secret}", "", "not a token"):
        assert acl.principal_for_token(wrong) is None, wrong
    again = AccessControl.start()   # the same token issued twice gets two salts
    again.issue_token(token, LI, ADMIN, "x")
    assert again.credentials[credential_id]["hash"] != stored["hash"]


def test_a_revoked_token_or_certificate_stops_resolving() -> None:
    acl = AccessControl.start()
    token = new_token(new_credential_id())
    credential_id = acl.issue_token(token, SH, ADMIN, "exchange")
    acl.register_certificate("c1", SH, "ab" * 32, "CN=exchange-sh", ADMIN, "mtls")
    assert acl.principal_for_certificate("ab" * 32) == SH
    acl.revoke_credential(credential_id, ADMIN, "leaked")
    acl.revoke_credential("c1", ADMIN, "rotated")
    assert acl.principal_for_token(token) is None
    assert acl.principal_for_certificate("ab" * 32) is None
    assert reason_of(acl.revoke_credential, credential_id, ADMIN, "twice") == \
        "ACCESS_CHANGE_REFUSED"
    assert [c.revoked for c in acl.all_credentials()] == [True, True]


def test_grants_are_scoped_retried_and_revoked() -> None:
    acl = AccessControl.start()
    assert acl.grant("g1", OP, Role.OPERATOR, ("PWR-0001",), ADMIN, "runs it")
    assert not acl.grant("g1", OP, Role.OPERATOR, ("PWR-0001",), ADMIN, "retry")
    assert reason_of(acl.grant, "g1", OP, Role.OPERATOR, ("PWR-0002",), ADMIN, "other") == \
        "ACCESS_CHANGE_REFUSED"
    [grant] = acl.grants_of(OP)
    assert grant.covers("PWR-0001") and not grant.covers("PWR-0002")
    acl.revoke_grant("g1", ADMIN, "left the company")
    assert acl.grants_of(OP) == []
    assert reason_of(acl.revoke_grant, "g1", ADMIN, "again") == "ACCESS_CHANGE_REFUSED"


@pytest.mark.parametrize(("role", "accounts", "reason"), [
    (Role.OPERATOR, (), "INVALID_GRANT_SCOPE"),             # scoped roles name accounts
    (Role.OPERATOR, ("*",), "INVALID_GRANT_SCOPE"),         # only an exchange gets all
    (Role.EXCHANGE, ("*", "PWR-0001"), "INVALID_GRANT_SCOPE"),
    (Role.REGULATOR, ("PWR-0001",), "INVALID_GRANT_SCOPE"),  # unscoped roles name none
    (Role.OPERATOR, ("pwr 1",), "INVALID_ACCOUNT_ID"),
])
def test_bad_grant_scopes_are_refused(role: Role, accounts: tuple[str, ...], reason: str
                                      ) -> None:
    assert reason_of(check_accounts, role, accounts) == reason


def test_names_and_roles_are_checked() -> None:
    assert reason_of(parse_role, "superuser") == "UNKNOWN_ROLE"
    assert reason_of(check_principal, "mee", "two words") == "INVALID_PRINCIPAL_NAME"
    assert reason_of(check_principal, "MEE", "li") == "INVALID_PARTY"
    acl = AccessControl.start()
    assert reason_of(acl.register_certificate, "c", SH, "XYZ", "", ADMIN, "r") == \
        "INVALID_FINGERPRINT"


def test_every_method_of_every_service_is_in_the_policy() -> None:
    pool = descriptor_pool.Default()
    methods = {f"{name}/{method.name}" for name in SERVICE_NAMES
               for method in pool.FindServiceByName(name).methods}
    assert methods == set(POLICY)


def test_the_policy_denies_by_role_then_by_account() -> None:
    class Request:
        account_id = "PWR-0002"
    acl = acl_with((OP, Role.OPERATOR, ("PWR-0001",)), (LI, Role.REGULATOR, ()),
                   (SH, Role.EXCHANGE, ("*",)))
    surrender = "/registry.v1.AccountService/SurrenderUnits"
    assert reason_of(authorize, surrender, Request(), OP, acl) == "ACCOUNT_NOT_IN_SCOPE"
    Request.account_id = "PWR-0001"
    authorize(surrender, Request(), OP, acl)
    assert reason_of(authorize, surrender, Request(), LI, acl) == "ROLE_NOT_GRANTED"
    assert reason_of(authorize, "/registry.v1.AccountService/Nope", Request(), LI, acl) == \
        "METHOD_NOT_ALLOWED"
    listing = "/registry.v1.AccountService/ListAccounts"
    assert reason_of(authorize, listing, Request(), OP, acl) == "ROLE_NOT_GRANTED"
    authorize(listing, Request(), SH, acl)   # an exchange linked to every account
