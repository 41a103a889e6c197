"""Authentication: a call's credentials resolve to the principal every event records.

Credentials are events (``registry.domain.access``): bearer tokens, kept as salted
hashes, and client certificates (mutual TLS), kept by fingerprint. Each call is checked
against the access state as committed now (``Access.current``: one query), so a token
revoked by any process stops working on its next call.

``REGISTRY_AUTH`` says what a call must present:

- ``token`` (default): ``authorization: Bearer <token>``;
- ``mtls``: a client certificate registered to a principal (needs TLS with a client CA);
- ``token+mtls``: both, naming the same principal.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from enum import StrEnum

import grpc

from registry.application import Registry
from registry.application.access import Access
from registry.domain.access import AccessControl
from registry.domain.errors import InvalidCommand, NotFound
from registry.domain.proposals import ProposalView
from registry.domain.transactions import Principal
from services.errors import ApiError
from services.policy import Jurisdiction
from services.tls import peer_certificate_fingerprint

OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
"""Services anyone may call without credentials (probes and API discovery)."""

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The authenticated caller of the call being served on this thread."""
    return _principal.get()


def bind_principal(principal: Principal) -> contextvars.Token[Principal]:
    return _principal.set(principal)


def unbind_principal(token: contextvars.Token[Principal]) -> None:
    _principal.reset(token)


class AuthMode(StrEnum):
    TOKEN = "token"
    MTLS = "mtls"
    BOTH = "token+mtls"

    @property
    def needs_token(self) -> bool:
        return self is not AuthMode.MTLS

    @property
    def needs_certificate(self) -> bool:
        return self is not AuthMode.TOKEN


class RegistryJurisdiction:
    """Where accounts' holders are and what proposals do, from the write model (an
    account opened a moment ago is found): what authorising a provincial regulator
    looks up (``services.policy.Jurisdiction``)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def provinces_of(self, account_ids: Sequence[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for account_id in dict.fromkeys(account_ids):
            try:
                holder = self._registry.get_account(account_id).holder
            except (NotFound, InvalidCommand):
                found[account_id] = None
                continue
            found[account_id] = holder.get("province") or None
        return found

    def proposal(self, party: str, proposal_id: str) -> ProposalView | None:
        try:
            return self._registry.proposals.get(party, proposal_id)
        except (NotFound, InvalidCommand):
            return None


class Authenticator:
    """Resolves a call's credentials against the current access state."""

    def __init__(
        self,
        access: Access,
        mode: AuthMode = AuthMode.TOKEN,
        latest_version: Callable[[], int] | None = None,
        jurisdiction: Jurisdiction | None = None,
    ) -> None:
        self.access = access
        self.mode = mode
        self.latest_version = latest_version
        """The access aggregate's stored version, read cheaply (see Access.current)."""
        self.jurisdiction = jurisdiction
        """Provincial regulators' look-ups (none: they are refused what needs one)."""

    def resolve(
        self, metadata: Sequence[tuple[str, str | bytes]] | None, context: grpc.ServicerContext
    ) -> tuple[Principal, AccessControl]:
        """The caller and the access state it was resolved against (which authorisation
        then uses too, so both see the same moment)."""
        acl = self.access.current(self.latest_version)
        by_token = self._token_principal(acl, metadata) if self.mode.needs_token else None
        by_certificate = (
            self._certificate_principal(acl, context) if self.mode.needs_certificate else None
        )
        if by_token is not None and by_certificate is not None and by_token != by_certificate:
            raise _unauthenticated(
                "CREDENTIALS_MISMATCH",
                "the bearer token and the client certificate belong to different principals",
            )
        principal = by_token or by_certificate
        assert principal is not None
        return principal, acl

    @staticmethod
    def _token_principal(
        acl: AccessControl, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> Principal:
        header = next((str(v) for k, v in metadata or () if k == "authorization"), "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise _unauthenticated(
                "MISSING_CREDENTIALS", "send 'authorization: Bearer <token>' metadata"
            )
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated(
                "INVALID_CREDENTIALS", "the authorization metadata must be 'Bearer <token>'"
            )
        principal = acl.principal_for_token(token.strip())
        if principal is None:
            raise _unauthenticated(
                "INVALID_CREDENTIALS", "the bearer token is not valid (unknown or revoked)"
            )
        return principal

    @staticmethod
    def _certificate_principal(acl: AccessControl, context: grpc.ServicerContext) -> Principal:
        peer = peer_certificate_fingerprint(context)
        if peer is None:
            raise _unauthenticated(
                "MISSING_CERTIFICATE", "this registry requires a client certificate (mutual TLS)"
            )
        found = peer[0]
        principal = acl.principal_for_certificate(found)
        if principal is None:
            raise _unauthenticated(
                "UNKNOWN_CERTIFICATE",
                "the client certificate is not registered to a principal, or was revoked",
                fingerprint=found,
            )
        return principal


def _unauthenticated(reason: str, message: str, **metadata: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, reason, message, metadata)
