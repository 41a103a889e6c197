"""Who may do what: principals, their role grants and their credentials, as events.

One aggregate, ``AccessControl``, holds the registry's whole access state: every grant
of a role to a principal (with the accounts it covers), every bearer token (as a
salted hash, never the token) and every client certificate (by fingerprint). Each
change is an event naming who made it and why, so "who could move these units on that
day, and who let them" is answered from the log like everything else.

One aggregate, because authenticating a call must see every revocation at once:
the server compares one aggregate version per call (one indexed query) instead of
trusting a cache.

Roles (see ``services/policy.py`` for what each may call):

- ``exchange``: settlement on the accounts linked to it (its grant's accounts);
- ``operator``: its own accounts only: read, surrender, cancel;
- ``regulator``: administration, proposals and approvals, every read; a regulator
  grant may be scoped to provinces (a provincial ecology and environment department):
  it then records verified emissions of, and reads, only the accounts of companies in
  those provinces, and does no national act (``services/policy.py``, ``PROVINCIAL``);
- ``auditor``: every read, no write;
- ``admin``: principal management only, no unit movement.

Separation of duties (what one insider alone cannot do):

- an administrator holds no other role, and no principal is granted anything by
  itself (as proposer or approver);
- the roles that move units or approve their movement (``FOUR_EYES_ROLES``) take
  effect only when a second administrator approves the grant (a ``ROLE_GRANT``
  proposal, ``registry.application.access``); ``RoleGranted`` records both;
- a scoped grant cannot name a national account: the registry's own accounts move only
  by regulators' four-eyes actions;
- approving needs a grant not made by the proposer and older than the proposal
  (``check_approver``), so a principal made for the occasion cannot approve;
- no administrator's grant is revoked if that leaves fewer than two (access changes
  take two), and never the last one, nor the last administrator's last credential;
- party ``system`` is the registry's own (bootstrap, tests): no grant or credential
  names it, so no caller can ever be it.

Tokens read ``<credential id>.<secret>``: the id finds the credential without
comparing secrets, and the secret is checked against ``sha256(salt || secret)`` in
constant time. The secrets are 256 random bits, so a fast salted hash is enough (a
slow password hash protects guessable secrets, which these are not).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.accounts import NATIONAL_ACCOUNTS, check_account_id
from registry.domain.errors import InvalidCommand, Refused
from registry.domain.ids import NAMESPACE, check_client_id, has_control_characters
from registry.domain.reasons import MAX_REASON, check_reason
from registry.domain.transactions import Principal


class Role(StrEnum):
    EXCHANGE = "exchange"
    OPERATOR = "operator"
    REGULATOR = "regulator"
    AUDITOR = "auditor"
    ADMIN = "admin"


SCOPED_ROLES = frozenset({Role.EXCHANGE, Role.OPERATOR})
"""Roles that act on named accounts only; the others act on every account."""
FOUR_EYES_ROLES = frozenset({Role.REGULATOR, Role.EXCHANGE, Role.OPERATOR, Role.ADMIN})
"""Grants that take effect only when a second administrator approves them: the roles
that move units or approve their movement, and admin itself (else one administrator
would make a second, made-up one to approve its own grants)."""
RESERVED_PARTY = "system"
"""The registry's own party: the bootstrap and in-process provisioning act as it; no
grant or credential may name it, so no API caller is ever it."""
NATIONAL_ACCOUNT_IDS = frozenset(NATIONAL_ACCOUNTS.values())
ALL_ACCOUNTS = "*"
MAX_GRANT_ACCOUNTS = 10_000
PRINCIPAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
CREDENTIAL_ID = re.compile(r"^[0-9a-f]{16}$")
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
TOKEN = re.compile(r"^([0-9a-f]{16})\.([A-Za-z0-9_-]{32,128})$")
MAX_GRANT_PROVINCES = 34
"""China's provincial-level divisions: a grant naming more names one twice or a typo."""
MAX_PROVINCE = 64
"""As an account holder's province (``registry.domain.accounts``)."""


class AccessRefused(Refused):
    """An access-control change the current state does not allow."""

    reason = "ACCESS_CHANGE_REFUSED"


class SeparationOfDuties(Refused):
    """One principal would hold two duties that must be two people's: an administrator
    with another role, a grant to oneself, an approval by a principal the proposer made
    (or made after the proposal)."""

    reason = "SEPARATION_OF_DUTIES"


class LastAdministrator(Refused):
    """The change would leave no administrator able to call the registry."""

    reason = "LAST_ADMINISTRATOR"


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidCommand(
            f"role {value!r} must be one of {', '.join(Role)}", reason="UNKNOWN_ROLE", field="role"
        ) from None


def check_principal(party: str, name: str) -> Principal:
    """A principal a grant or credential may name: never one of party ``system``."""
    if not isinstance(name, str) or not PRINCIPAL_NAME.match(name):
        raise InvalidCommand(
            f"principal name {name!r} must be 1-64 of letters, digits and '._@-'",
            reason="INVALID_PRINCIPAL_NAME",
            field="name",
        )
    principal = Principal(party, name)
    _not_reserved(principal)
    return principal


def check_accounts(role: Role, accounts: Iterable[str]) -> tuple[str, ...]:
    """A scoped role names its accounts (or ``*`` for all of them, an exchange linked to
    every account); the other roles cover every account and name none."""
    given = tuple(dict.fromkeys(accounts))
    if role not in SCOPED_ROLES:
        if given not in ((), (ALL_ACCOUNTS,)):
            raise InvalidCommand(
                f"the {role} role covers every account: name none",
                reason="INVALID_GRANT_SCOPE",
                field="account_ids",
            )
        return (ALL_ACCOUNTS,)
    if not given:
        raise InvalidCommand(
            f"an {role} grant names the accounts it covers (or '*')",
            reason="INVALID_GRANT_SCOPE",
            field="account_ids",
        )
    if len(given) > MAX_GRANT_ACCOUNTS:
        raise InvalidCommand(
            f"at most {MAX_GRANT_ACCOUNTS} accounts per grant",
            reason="INVALID_GRANT_SCOPE",
            field="account_ids",
        )
    if ALL_ACCOUNTS in given:
        if role is not Role.EXCHANGE or len(given) > 1:
            raise InvalidCommand(
                "only an exchange may be linked to every account ('*' alone)",
                reason="INVALID_GRANT_SCOPE",
                field="account_ids",
            )
        return given
    for account in given:
        check_account_id(account)
        if account in NATIONAL_ACCOUNT_IDS:
            raise InvalidCommand(
                f"{account} is a national account: its units move only by "
                "regulators' four-eyes actions, never under a grant",
                reason="INVALID_GRANT_SCOPE",
                field="account_ids",
            )
    return tuple(sorted(given))


def province_key(province: str) -> str:
    """How a grant's province is matched with an account holder's: trimmed, case-folded
    ("Shandong" == "shandong "); the text is otherwise what the holder record says."""
    return province.strip().casefold()


def check_provinces(role: Role, provinces: Iterable[str]) -> tuple[str, ...]:
    """A regulator grant may name the provinces it covers (a provincial department);
    none: national. No other role is provincial."""
    given = tuple(dict.fromkeys(p.strip() if isinstance(p, str) else p for p in provinces))
    if not given:
        return ()
    if role is not Role.REGULATOR:
        raise InvalidCommand(
            f"only a regulator grant is scoped to provinces, not an {role} grant",
            reason="INVALID_GRANT_SCOPE",
            field="provinces",
        )
    if len(given) > MAX_GRANT_PROVINCES:
        raise InvalidCommand(
            f"at most {MAX_GRANT_PROVINCES} provinces per grant",
            reason="INVALID_GRANT_SCOPE",
            field="provinces",
        )
    for province in given:
        if (
            not isinstance(province, str)
            or not province
            or len(province) > MAX_PROVINCE
            or has_control_characters(province)
        ):
            raise InvalidCommand(
                f"province {province!r} must be 1-{MAX_PROVINCE} characters without "
                "control characters",
                reason="INVALID_PROVINCE",
                field="provinces",
            )
    keys = [province_key(p) for p in given]
    if len(set(keys)) < len(keys):
        raise InvalidCommand(
            "a province is named twice (names match case-insensitively)",
            reason="INVALID_GRANT_SCOPE",
            field="provinces",
        )
    return tuple(sorted(given))


def check_access_reason(reason: str) -> str:
    """Said once, kept forever, printed in listings and logs: required, and refused in
    the words access changes have always used."""
    return check_reason(
        reason, message=f"say why, in 1-{MAX_REASON} characters without control characters"
    )


def _not_reserved(principal: Principal) -> None:
    if principal.party == RESERVED_PARTY:
        raise InvalidCommand(
            f"party {RESERVED_PARTY!r} is the registry's own: no grant or credential may name it",
            reason="RESERVED_PARTY",
            field="party",
        )


# == secrets =======================================================================


def new_credential_id() -> str:
    return secrets.token_hex(8)


def new_token(credential_id: str) -> str:
    """A bearer token: its credential id, a dot, 256 random bits."""
    return f"{credential_id}.{secrets.token_urlsafe(32)}"


def token_hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def salted(token: str) -> tuple[str, str, str]:
    """(credential id, salt, hash) to record for a new token; the token is not kept."""
    found = TOKEN.match(token)
    assert found, "tokens come from new_token"
    salt = secrets.token_hex(16)
    return found.group(1), salt, token_hash(salt, found.group(2))


def split_token(token: str) -> tuple[str, str] | None:
    """(credential id, secret) of a well-formed token, else None."""
    found = TOKEN.match(token)
    return (found.group(1), found.group(2)) if found else None


# == the aggregate =================================================================


@dataclass(frozen=True)
class Grant:
    grant_id: str
    principal: Principal
    role: Role
    accounts: tuple[str, ...]
    granted_by: str
    reason: str
    approved_by: str = ""
    """The second administrator who approved it ("" for a grant made without four
    eyes: before they applied, or by the registry's own bootstrap)."""
    at: datetime | None = None
    """When it took effect, by the registry's clock."""
    provinces: tuple[str, ...] = ()
    """A regulator grant of a provincial department: the provinces whose companies it
    supervises. Empty: national (every grant written before provinces existed)."""

    @property
    def all_accounts(self) -> bool:
        return self.accounts == (ALL_ACCOUNTS,)

    @property
    def provincial(self) -> bool:
        return bool(self.provinces)

    def covers_province(self, province: str | None) -> bool:
        """Whether an account of a holder in ``province`` is in this grant's
        jurisdiction: always for a national grant; for a provincial one, only a
        province it names (an account without one is no province's)."""
        if not self.provinces:
            return True
        return province is not None and province_key(province) in {
            province_key(p) for p in self.provinces
        }

    def covers(self, account_id: str) -> bool:
        return self.all_accounts or account_id in self.accounts


@dataclass(frozen=True)
class Credential:
    credential_id: str
    kind: str  # "token" or "certificate"
    principal: Principal
    issued_by: str
    revoked: bool
    fingerprint: str = ""
    subject: str = ""


class AccessControl(Aggregate):
    """The registry's principals, grants and credentials (one per registry)."""

    TOPIC = "registry.AccessControl"

    def __init__(self) -> None:
        # Primitive, JSON-friendly state; events replace the dicts, never mutate them in
        # place, so a copy handed to a reader stays what it was.
        self.grants: dict[str, dict[str, Any]] = {}
        self.credentials: dict[str, dict[str, Any]] = {}
        self.fingerprints: dict[str, str] = {}
        """Active certificate fingerprint -> credential id."""
        self.revoked_grants: dict[str, dict[str, Any]] = {}
        """Revoked grants by id: an id is never used again, so a grant id names one grant
        of one principal for the whole history."""

    @staticmethod
    def id_for() -> UUID:
        return uuid5(NAMESPACE, "access-control")

    @classmethod
    def start(cls) -> AccessControl:
        return cls._create(cls.Started, id=cls.id_for())

    class Created(Aggregate.Created):  # the library's own, unused: named for its topic
        TOPIC = "registry.AccessControl.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.AccessControl.Started"

    class RoleGranted(Aggregate.Event):
        """v2 adds who approved it and when it took effect (the registry's clock); v3
        the provinces of a provincial regulator grant."""

        TOPIC = "registry.AccessControl.RoleGranted"
        class_version = 3
        grant_id: str
        party: str
        name: str
        role: str
        accounts: list[str]
        by: str
        reason: str
        approved_by: str
        proposal: str
        at: datetime
        provinces: list[str]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """A grant recorded before four eyes: nobody approved it, and it took effect
            when it was recorded."""
            state["approved_by"] = ""
            state["proposal"] = ""
            state["at"] = state["timestamp"]

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            """A grant recorded before provincial regulators: national."""
            state["provinces"] = []

        def apply(self, acl: AccessControl) -> None:
            acl.grants = {
                **acl.grants,
                self.grant_id: {
                    "party": self.party,
                    "name": self.name,
                    "role": self.role,
                    "accounts": list(self.accounts),
                    "by": self.by,
                    "reason": self.reason,
                    "approved_by": self.approved_by,
                    "proposal": self.proposal,
                    "at": self.at,
                    "provinces": list(self.provinces),
                },
            }

    class GrantRevoked(Aggregate.Event):
        TOPIC = "registry.AccessControl.GrantRevoked"
        grant_id: str
        by: str
        reason: str

        def apply(self, acl: AccessControl) -> None:
            revoked = acl.grants.get(self.grant_id, {})
            acl.grants = {k: v for k, v in acl.grants.items() if k != self.grant_id}
            acl.revoked_grants = {**acl.revoked_grants, self.grant_id: revoked}

    class TokenIssued(Aggregate.Event):
        TOPIC = "registry.AccessControl.TokenIssued"
        credential_id: str
        party: str
        name: str
        salt: str
        token_hash: str
        by: str
        reason: str

        def apply(self, acl: AccessControl) -> None:
            acl.credentials = {
                **acl.credentials,
                self.credential_id: {
                    "kind": "token",
                    "party": self.party,
                    "name": self.name,
                    "salt": self.salt,
                    "hash": self.token_hash,
                    "by": self.by,
                    "revoked": False,
                },
            }

    class CertificateRegistered(Aggregate.Event):
        TOPIC = "registry.AccessControl.CertificateRegistered"
        credential_id: str
        party: str
        name: str
        fingerprint: str
        subject: str
        by: str
        reason: str

        def apply(self, acl: AccessControl) -> None:
            acl.credentials = {
                **acl.credentials,
                self.credential_id: {
                    "kind": "certificate",
                    "party": self.party,
                    "name": self.name,
                    "fingerprint": self.fingerprint,
                    "subject": self.subject,
                    "by": self.by,
                    "revoked": False,
                },
            }
            acl.fingerprints = {**acl.fingerprints, self.fingerprint: self.credential_id}

    class CredentialRevoked(Aggregate.Event):
        TOPIC = "registry.AccessControl.CredentialRevoked"
        credential_id: str
        by: str
        reason: str

        def apply(self, acl: AccessControl) -> None:
            record = acl.credentials[self.credential_id]
            acl.credentials = {**acl.credentials, self.credential_id: {**record, "revoked": True}}
            acl.fingerprints = {
                f: c for f, c in acl.fingerprints.items() if c != self.credential_id
            }

    # -- commands (guards first, then one event) --------------------------------------

    def grant(
        self,
        grant_id: str,
        principal: Principal,
        role: Role,
        accounts: tuple[str, ...],
        by: Principal,
        reason: str,
        now: datetime,
        approved_by: Principal | None = None,
        proposal: str = "",
        provinces: tuple[str, ...] = (),
    ) -> bool:
        """Grant ``role`` over ``accounts`` (a regulator: in ``provinces``, or national);
        False when this very grant exists (a retry). Whether it needed a second
        administrator is the application's to check; the rules that hold for every grant
        are checked here."""
        if self.is_granted(grant_id, principal, role, accounts, provinces):
            return False
        self.check_grantable(grant_id, principal, role, by, approved_by)
        self.trigger_event(
            self.RoleGranted,
            grant_id=grant_id,
            party=principal.party,
            name=principal.name,
            role=role.value,
            accounts=list(accounts),
            by=str(by),
            reason=reason,
            approved_by=str(approved_by) if approved_by else "",
            proposal=proposal,
            at=now,
            provinces=list(provinces),
        )
        return True

    def is_granted(
        self,
        grant_id: str,
        principal: Principal,
        role: Role,
        accounts: tuple[str, ...],
        provinces: tuple[str, ...] = (),
    ) -> bool:
        """True if exactly this grant is active (a retry); refused if the id names
        another grant, active or revoked."""
        check_client_id(grant_id, "grant id")
        existing = self.grants.get(grant_id)
        if existing is None:
            if grant_id in self.revoked_grants:
                raise AccessRefused(
                    f"grant id {grant_id} was used for a grant since "
                    "revoked; a grant id is never used again",
                    grant=grant_id,
                )
            return False
        if (
            existing["party"],
            existing["name"],
            existing["role"],
            tuple(existing["accounts"]),
            tuple(existing.get("provinces", ())),
        ) != (principal.party, principal.name, role.value, accounts, provinces):
            raise AccessRefused(f"grant {grant_id} exists with other content", grant=grant_id)
        return True

    def check_grantable(
        self,
        grant_id: str,
        principal: Principal,
        role: Role,
        by: Principal,
        approved_by: Principal | None = None,
    ) -> None:
        """Separation of duties: nobody grants to itself; an administrator holds no
        other role."""
        _not_reserved(principal)
        if principal in (by, approved_by):
            raise SeparationOfDuties(
                f"{principal} cannot grant itself a role; another administrator proposes it",
                grant=grant_id,
                principal=str(principal),
            )
        held = {grant.role for grant in self.grants_of(principal)}
        if role is Role.ADMIN and held - {Role.ADMIN}:
            raise SeparationOfDuties(
                f"{principal} holds {', '.join(sorted(held - {Role.ADMIN}))}: an "
                "administrator holds no other role",
                grant=grant_id,
                principal=str(principal),
            )
        if role is not Role.ADMIN and Role.ADMIN in held:
            raise SeparationOfDuties(
                f"{principal} is an administrator, which holds no other role",
                grant=grant_id,
                principal=str(principal),
            )

    def revoke_grant(self, grant_id: str, by: Principal, reason: str) -> None:
        grant = self.grants.get(grant_id)
        if grant is None:
            raise AccessRefused(f"no active grant {grant_id}", grant=grant_id)
        if grant["role"] == Role.ADMIN.value:
            # two administrators are what four eyes on access need: one revoking the
            # other would leave grants nobody could ever approve again
            left = self._usable_admins(without_grant=grant_id)
            if not left or (len(left) < 2 <= len(self._usable_admins())):
                raise LastAdministrator(
                    f"revoking grant {grant_id} would leave {len(left)} administrator(s); "
                    "access changes take two: grant a successor first",
                    grant=grant_id,
                )
        self.trigger_event(self.GrantRevoked, grant_id=grant_id, by=str(by), reason=reason)

    def _usable_admins(
        self, without_grant: str = "", without_credential: str = ""
    ) -> set[Principal]:
        """Administrators who could still call the registry: an admin grant and an
        active credential, leaving out one grant or credential."""
        admins = {
            Principal(g["party"], g["name"])
            for gid, g in self.grants.items()
            if g["role"] == Role.ADMIN.value and gid != without_grant
        }
        return {
            Principal(c["party"], c["name"])
            for cid, c in self.credentials.items()
            if not c["revoked"] and cid != without_credential
        } & admins

    def check_approver(
        self, approver: Principal, role: Role, proposer: str, proposed_at: datetime | None
    ) -> None:
        """Four eyes mean two people: the approver must hold ``role`` under a grant the
        proposer had no hand in (neither proposed nor approved it) that took effect no
        later than the proposal. A principal made (or re-made) once the proposal was
        waiting, or by the proposer, is refused."""
        grants = [g for g in self.grants_of(approver) if g.role is role]
        if not grants:
            raise SeparationOfDuties(
                f"{approver} holds no {role} grant to approve with", principal=str(approver)
            )
        for grant in grants:
            if proposer in (grant.granted_by, grant.approved_by):
                continue
            if proposed_at is not None and grant.at is not None and grant.at > proposed_at:
                continue
            return
        raise SeparationOfDuties(
            f"{approver}'s {role} grant was made by the proposer {proposer} or after the "
            "proposal: another approver must decide",
            principal=str(approver),
            proposer=proposer,
        )

    def issue_token(
        self, token: str, principal: Principal, by: Principal, reason: str, replacing: bool = False
    ) -> str:
        """A new token; ``replacing``: it replaces one revoked in the same save (a
        rotation)."""
        _not_reserved(principal)
        if not replacing:
            self._check_single_credential(principal, "token", by)
        credential_id, salt, digest = salted(token)
        if credential_id in self.credentials:  # 64 random bits: never, but never twice
            raise AccessRefused("credential id collision; issue again")
        self.trigger_event(
            self.TokenIssued,
            credential_id=credential_id,
            party=principal.party,
            name=principal.name,
            salt=salt,
            token_hash=digest,
            by=str(by),
            reason=reason,
        )
        return credential_id

    def register_certificate(
        self,
        credential_id: str,
        principal: Principal,
        fingerprint: str,
        subject: str,
        by: Principal,
        reason: str,
    ) -> None:
        _not_reserved(principal)
        self._check_single_credential(principal, "certificate", by)
        if not FINGERPRINT.match(fingerprint):
            raise InvalidCommand(
                "a certificate fingerprint is the sha256 of its DER bytes, 64 lowercase hex digits",
                reason="INVALID_FINGERPRINT",
                field="fingerprint",
            )
        if fingerprint in self.fingerprints:
            raise AccessRefused(
                "this certificate is already registered (credential "
                f"{self.fingerprints[fingerprint]})",
                credential=self.fingerprints[fingerprint],
            )
        self.trigger_event(
            self.CertificateRegistered,
            credential_id=credential_id,
            party=principal.party,
            name=principal.name,
            fingerprint=fingerprint,
            subject=subject[:500],
            by=str(by),
            reason=reason,
        )

    def _check_single_credential(self, principal: Principal, kind: str, by: Principal) -> None:
        """A principal holding a four-eyes role has at most one active token and one
        active certificate: an administrator cannot give itself a silent second
        credential of another administrator or of two regulators and act as them. A
        new one replaces the old (``RotateToken``, or revoke then issue), so the holder's
        next call fails and the change is seen. In-process provisioning is exempt."""
        if by.party == RESERVED_PARTY:
            return
        if not any(g.role in FOUR_EYES_ROLES for g in self.grants_of(principal)):
            return
        active = [
            cid
            for cid, c in self.credentials.items()
            if (c["party"], c["name"]) == (principal.party, principal.name)
            and c["kind"] == kind
            and not c["revoked"]
        ]
        if active:
            raise SeparationOfDuties(
                f"{principal} holds a four-eyes role and has an active {kind} "
                f"({active[0]}): replace it (RotateToken, or revoke it first) rather than "
                "add a second",
                principal=str(principal),
                credential=active[0],
            )

    def revoke_credential(self, credential_id: str, by: Principal, reason: str) -> None:
        record = self.credentials.get(credential_id)
        if record is None or record["revoked"]:
            raise AccessRefused(f"no active credential {credential_id}", credential=credential_id)
        if self._usable_admins() and not self._usable_admins(without_credential=credential_id):
            raise LastAdministrator(
                f"credential {credential_id} is the last administrator's last: rotate it, "
                "or give another administrator a credential first",
                credential=credential_id,
            )
        self.trigger_event(
            self.CredentialRevoked, credential_id=credential_id, by=str(by), reason=reason
        )

    # -- queries ------------------------------------------------------------------------

    def principal_for_token(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; None for anything else."""
        parts = split_token(token)
        record = self.credentials.get(parts[0]) if parts else None
        if parts is None or record is None or record["kind"] != "token" or record["revoked"]:
            return None
        if not hmac.compare_digest(token_hash(record["salt"], parts[1]), record["hash"]):
            return None
        return Principal(record["party"], record["name"])

    def principal_for_certificate(self, fingerprint: str) -> Principal | None:
        credential_id = self.fingerprints.get(fingerprint)
        if credential_id is None:
            return None
        record = self.credentials[credential_id]
        return Principal(record["party"], record["name"])

    def grants_of(self, principal: Principal) -> list[Grant]:
        return [grant for grant in self.all_grants() if grant.principal == principal]

    def all_grants(self) -> list[Grant]:
        return [
            Grant(
                grant_id,
                Principal(g["party"], g["name"]),
                Role(g["role"]),
                tuple(g["accounts"]),
                g["by"],
                g["reason"],
                g.get("approved_by", ""),
                g.get("at"),
                tuple(g.get("provinces", ())),
            )
            for grant_id, g in sorted(self.grants.items())
        ]

    def provinces_of(self, principal: Principal) -> tuple[str, ...]:
        """The jurisdiction ``principal`` acts in as a regulator: the provinces of its
        regulator grants when every one is provincial; empty when it is national (or
        holds no regulator grant: the policy decides whether it may act at all)."""
        grants = [g for g in self.grants_of(principal) if g.role is Role.REGULATOR]
        if not grants or any(not g.provincial for g in grants):
            return ()
        return tuple(sorted({p for g in grants for p in g.provinces}))

    def all_credentials(self) -> list[Credential]:
        return [
            Credential(
                credential_id,
                c["kind"],
                Principal(c["party"], c["name"]),
                c["by"],
                c["revoked"],
                c.get("fingerprint", ""),
                c.get("subject", ""),
            )
            for credential_id, c in sorted(self.credentials.items())
        ]

    def credential(self, credential_id: str) -> Mapping[str, Any] | None:
        return self.credentials.get(credential_id)
