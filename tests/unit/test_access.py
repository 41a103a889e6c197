"""Access control as a pure aggregate: grants with their scope, tokens kept as salted
hashes and checked in constant time, certificates by fingerprint, revocations; and the
policy table covering every method of every service. No I/O."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import descriptor_pool

from registry.domain.access import (
    AccessControl,
    AccessRefused,
    LastAdministrator,
    Role,
    SeparationOfDuties,
    check_access_reason,
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
NOW = datetime(2026, 6, 15, 9, 30, tzinfo=UTC)


def reason_of(call: Any, *args: Any) -> str:
    with pytest.raises(
        (InvalidCommand, AccessRefused, SeparationOfDuties, LastAdministrator, ApiError)
    ) as raised:
        call(*args)
    return str(raised.value.reason)


def acl_with(*grants: tuple[Principal, Role, tuple[str, ...]]) -> AccessControl:
    acl = AccessControl.start()
    for n, (principal, role, accounts) in enumerate(grants):
        acl.grant(
            f"g{n}",
            principal,
            role,
            check_accounts(role, accounts),
            Principal("system", "tests"),
            "test",
            NOW,
        )
    return acl


def test_a_token_is_kept_only_as_a_salted_hash_and_checked_exactly() -> None:
    acl = AccessControl.start()
    token = new_token(new_credential_id())
    credential_id = acl.issue_token(token, LI, ADMIN, "new regulator")
    stored = acl.credentials[credential_id]
    secret = token.split(".")[1]
    assert secret not in repr(acl.__dict__) and token not in repr(acl.__dict__)
    assert (
        stored["hash"]
        == hashlib.sha256(bytes.fromhex(stored["salt"]) + secret.encode()).hexdigest()
    )
    assert acl.principal_for_token(token) == LI
    for wrong in (
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token + "x",
        secret,
        f"{'0' * 16}.{secret}",
        "",
        "not a token",
    ):
        assert acl.principal_for_token(wrong) is None, wrong
    again = AccessControl.start()  # the same token issued twice gets two salts
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
    assert (
        reason_of(acl.revoke_credential, credential_id, ADMIN, "twice") == "ACCESS_CHANGE_REFUSED"
    )
    assert [c.revoked for c in acl.all_credentials()] == [True, True]


def test_grants_are_scoped_retried_and_revoked() -> None:
    acl = AccessControl.start()
    assert acl.grant("g1", OP, Role.OPERATOR, ("PWR-0001",), ADMIN, "runs it", NOW)
    assert not acl.grant("g1", OP, Role.OPERATOR, ("PWR-0001",), ADMIN, "retry", NOW)
    assert (
        reason_of(acl.grant, "g1", OP, Role.OPERATOR, ("PWR-0002",), ADMIN, "other", NOW)
        == "ACCESS_CHANGE_REFUSED"
    )
    [grant] = acl.grants_of(OP)
    assert grant.covers("PWR-0001") and not grant.covers("PWR-0002")
    acl.revoke_grant("g1", ADMIN, "left the company")
    assert acl.grants_of(OP) == []
    assert reason_of(acl.revoke_grant, "g1", ADMIN, "again") == "ACCESS_CHANGE_REFUSED"


@pytest.mark.parametrize(
    ("role", "accounts", "reason"),
    [
        (Role.OPERATOR, (), "INVALID_GRANT_SCOPE"),  # scoped roles name accounts
        (Role.OPERATOR, ("*",), "INVALID_GRANT_SCOPE"),  # only an exchange gets all
        (Role.EXCHANGE, ("*", "PWR-0001"), "INVALID_GRANT_SCOPE"),
        (Role.REGULATOR, ("PWR-0001",), "INVALID_GRANT_SCOPE"),  # unscoped roles name none
        (Role.OPERATOR, ("pwr 1",), "INVALID_ACCOUNT_ID"),
        (Role.OPERATOR, ("CN-ISSUANCE",), "INVALID_GRANT_SCOPE"),  # national accounts move
        (Role.EXCHANGE, ("PWR-0001", "CN-SURRENDER"), "INVALID_GRANT_SCOPE"),  # only by four
        (Role.OPERATOR, ("CN-CANCELLATION",), "INVALID_GRANT_SCOPE"),  # eyes
    ],
)
def test_bad_grant_scopes_are_refused(role: Role, accounts: tuple[str, ...], reason: str) -> None:
    assert reason_of(check_accounts, role, accounts) == reason


def test_names_and_roles_are_checked() -> None:
    assert reason_of(parse_role, "superuser") == "UNKNOWN_ROLE"
    assert reason_of(check_principal, "mee", "two words") == "INVALID_PRINCIPAL_NAME"
    assert reason_of(check_principal, "MEE", "li") == "INVALID_PARTY"
    acl = AccessControl.start()
    assert (
        reason_of(acl.register_certificate, "c", SH, "XYZ", "", ADMIN, "r") == "INVALID_FINGERPRINT"
    )


def test_every_method_of_every_service_is_in_the_policy() -> None:
    pool = descriptor_pool.Default()
    methods = {
        f"{name}/{method.name}"
        for name in SERVICE_NAMES
        for method in pool.FindServiceByName(name).methods
    }
    assert methods == set(POLICY)


def test_the_policy_denies_by_role_then_by_account() -> None:
    class Request:
        account_id = "PWR-0002"

    acl = acl_with(
        (OP, Role.OPERATOR, ("PWR-0001",)), (LI, Role.REGULATOR, ()), (SH, Role.EXCHANGE, ("*",))
    )
    surrender = "/registry.v1.AccountService/SurrenderUnits"
    assert reason_of(authorize, surrender, Request(), OP, acl) == "ACCOUNT_NOT_IN_SCOPE"
    Request.account_id = "PWR-0001"
    authorize(surrender, Request(), OP, acl)
    assert reason_of(authorize, surrender, Request(), LI, acl) == "ROLE_NOT_GRANTED"
    assert (
        reason_of(authorize, "/registry.v1.AccountService/Nope", Request(), LI, acl)
        == "METHOD_NOT_ALLOWED"
    )
    listing = "/registry.v1.AccountService/ListAccounts"
    assert reason_of(authorize, listing, Request(), OP, acl) == "ROLE_NOT_GRANTED"
    authorize(listing, Request(), SH, acl)  # an exchange linked to every account


def test_a_revoked_grant_id_is_never_used_again() -> None:
    """Issue 15 item 10: a revoked grant's id could be granted again to another
    principal, so one id named two grants in the history."""
    acl = AccessControl.start()
    acl.grant("g1", OP, Role.OPERATOR, ("PWR-0001",), ADMIN, "runs it", NOW)
    acl.revoke_grant("g1", ADMIN, "left")
    assert (
        reason_of(acl.grant, "g1", SH, Role.EXCHANGE, ("*",), ADMIN, "reuse", NOW)
        == "ACCESS_CHANGE_REFUSED"
    )
    assert (
        reason_of(acl.grant, "g1", OP, Role.OPERATOR, ("PWR-0001",), ADMIN, "again", NOW)
        == "ACCESS_CHANGE_REFUSED"
    )


@pytest.mark.parametrize(
    "reason", ["line\x00nul", "bell\x07", "esc\x1b[31mred", "c1\x85", "del\x7f"]
)
def test_access_reasons_refuse_control_characters(reason: str) -> None:
    """Issue 15 item 10: reasons are printed in listings and logs; a control character
    (an ANSI escape, a NUL) was stored as given."""
    assert reason_of(check_access_reason, reason) == "INVALID_REASON"
    check_access_reason("two lines:\nfine, and a\ttab")


def test_party_system_names_no_grant_or_credential() -> None:
    """Issue 15 item 10: party ``system`` is the registry's own (bootstrap, tests); a
    principal of it could be granted roles and tokens."""
    system = Principal("system", "bootstrap")
    assert reason_of(check_principal, "system", "bootstrap") == "RESERVED_PARTY"
    acl = AccessControl.start()
    assert (
        reason_of(acl.grant, "g", system, Role.AUDITOR, ("*",), ADMIN, "r", NOW) == "RESERVED_PARTY"
    )
    assert (
        reason_of(acl.issue_token, new_token(new_credential_id()), system, ADMIN, "r")
        == "RESERVED_PARTY"
    )
    assert (
        reason_of(acl.register_certificate, "c", system, "ab" * 32, "", ADMIN, "r")
        == "RESERVED_PARTY"
    )


def test_an_administrator_holds_no_other_role_and_grants_nothing_to_itself() -> None:
    acl = acl_with((ADMIN, Role.ADMIN, ()), (LI, Role.REGULATOR, ()))
    assert (
        reason_of(acl.grant, "x1", ADMIN, Role.EXCHANGE, ("*",), LI, "r", NOW)
        == "SEPARATION_OF_DUTIES"
    )
    assert (
        reason_of(acl.grant, "x2", LI, Role.ADMIN, ("*",), OP, "r", NOW) == "SEPARATION_OF_DUTIES"
    )
    assert (
        reason_of(acl.grant, "x3", OP, Role.OPERATOR, ("PWR-0001",), OP, "r", NOW)
        == "SEPARATION_OF_DUTIES"
    )
    assert (
        reason_of(acl.grant, "x4", OP, Role.OPERATOR, ("PWR-0001",), ADMIN, "r", NOW, OP)
        == "SEPARATION_OF_DUTIES"
    )  # nor approves its own grant
    assert acl.grant("x5", LI, Role.AUDITOR, ("*",), ADMIN, "r", NOW)  # two non-admin roles


def test_an_approver_s_grant_must_predate_the_proposal_and_not_be_the_proposer_s() -> None:
    acl = AccessControl.start()
    wang = Principal("mee", "regulator-wang")
    acl.grant("li", LI, Role.REGULATOR, ("*",), ADMIN, "r", NOW)
    acl.grant("wang", wang, Role.REGULATOR, ("*",), ADMIN, "r", NOW, OP)
    acl.check_approver(wang, Role.REGULATOR, str(LI), NOW)  # made before, by others
    assert (
        reason_of(acl.check_approver, wang, Role.REGULATOR, str(LI), NOW - timedelta(seconds=1))
        == "SEPARATION_OF_DUTIES"
    )  # made after
    assert (
        reason_of(acl.check_approver, wang, Role.REGULATOR, str(OP), NOW) == "SEPARATION_OF_DUTIES"
    )  # the proposer approved the approver's grant
    assert (
        reason_of(acl.check_approver, OP, Role.REGULATOR, str(LI), NOW) == "SEPARATION_OF_DUTIES"
    )  # no regulator grant at all


def test_the_last_administrator_keeps_its_grant_and_a_credential() -> None:
    acl = acl_with((ADMIN, Role.ADMIN, ()))
    token = acl.issue_token(new_token(new_credential_id()), ADMIN, ADMIN, "mine")
    assert reason_of(acl.revoke_grant, "g0", ADMIN, "leaving") == "LAST_ADMINISTRATOR"
    assert reason_of(acl.revoke_credential, token, ADMIN, "oops") == "LAST_ADMINISTRATOR"
    second, third = Principal("mee", "admin-2"), Principal("mee", "admin-3")
    acl.grant("g1", second, Role.ADMIN, ("*",), LI, "r", NOW, OP)
    acl.issue_token(new_token(new_credential_id()), second, ADMIN, "r")
    # of two, neither revokes the other: access changes would need two forever after
    assert reason_of(acl.revoke_grant, "g1", ADMIN, "ousted") == "LAST_ADMINISTRATOR"
    acl.grant("g2", third, Role.ADMIN, ("*",), LI, "successor", NOW, OP)
    acl.issue_token(new_token(new_credential_id()), third, ADMIN, "r")
    acl.revoke_grant("g1", ADMIN, "left")  # a successor first: then one may go
    acl.revoke_credential(token, third, "lost laptop")  # admin-3 can still call
    acl.revoke_grant("g0", third, "left")  # mee/admin had no credential left
    assert reason_of(acl.revoke_grant, "g2", third, "leaving") == "LAST_ADMINISTRATOR"


def test_a_privileged_principal_gets_no_silent_second_credential() -> None:
    """An administrator issuing an extra token for the other administrator (or for two
    regulators) would hold their identities and approve its own proposals."""
    acl = acl_with((ADMIN, Role.ADMIN, ()), (LI, Role.REGULATOR, ()))
    second = Principal("mee", "admin-2")
    acl.grant("a2", second, Role.ADMIN, ("*",), LI, "r", NOW, OP)
    first = acl.issue_token(new_token(new_credential_id()), LI, ADMIN, "first")
    assert (
        reason_of(acl.issue_token, new_token(new_credential_id()), LI, ADMIN, "extra")
        == "SEPARATION_OF_DUTIES"
    )
    acl.issue_token(new_token(new_credential_id()), second, ADMIN, "first")
    assert (
        reason_of(acl.issue_token, new_token(new_credential_id()), second, ADMIN, "extra")
        == "SEPARATION_OF_DUTIES"
    )
    acl.register_certificate("c1", LI, "ab" * 32, "CN=li", ADMIN, "mtls")  # one of each
    assert (
        reason_of(acl.register_certificate, "c2", LI, "cd" * 32, "CN=x", ADMIN, "x")
        == "SEPARATION_OF_DUTIES"
    )
    # a replacement is allowed: the old one stops, so the holder sees it
    acl.issue_token(new_token(new_credential_id()), LI, ADMIN, "rotated", replacing=True)
    acl.revoke_credential(first, ADMIN, "rotated")
    # principals without a four-eyes role, and in-process provisioning, are not limited
    for _ in range(2):
        acl.issue_token(new_token(new_credential_id()), OP, ADMIN, "no role yet")
        acl.issue_token(new_token(new_credential_id()), LI, Principal("system", "t"), "x")
