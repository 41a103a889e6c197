"""Authentication: a bearer token resolves to the principal every event records.

Tokens live in a token file, one per line: ``<token> <party> <name>`` (``#`` starts a
comment). The party scopes the caller's client ids (trade ids, transaction ids); the
name says who within the party. Roles and authorisation come later; for now a call
either carries a known token or is refused with ``UNAUTHENTICATED``.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from registry.domain.errors import InvalidCommand
from registry.domain.transactions import Principal
from services.errors import ApiError

OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})
"""Services anyone may call without credentials (probes and API discovery)."""

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The authenticated caller of the call being served on this thread."""
    return _principal.get()


def bind_principal(principal: Principal) -> contextvars.Token[Principal]:
    return _principal.set(principal)


def unbind_principal(token: contextvars.Token[Principal]) -> None:
    _principal.reset(token)


class TokenStore:
    """Bearer tokens and the principals they stand for."""

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        # Keyed by digest: one dict lookup per call whatever the number of tokens, and
        # the lookup never compares the secret itself byte by byte.
        self._tokens = {_digest(token): (token, principal) for token, principal in
                        tokens.items()}

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        tokens: dict[str, Principal] = {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 3 or len(fields[0]) < 16:
                raise InvalidCommand(
                    f"{path}:{number}: expected '<token of 16+ characters> <party> <name>'",
                    reason="INVALID_TOKEN_FILE")
            token, party, name = fields
            tokens[token] = Principal(party, name)
        return cls(tokens)

    def resolve(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        header = next((str(v) for k, v in metadata or () if k == "authorization"), "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS",
                           "send 'authorization: Bearer <token>' metadata")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS",
                           "the authorization metadata must be 'Bearer <token>'")
        presented = token.strip()
        known = self._tokens.get(_digest(presented))
        if known is not None and hmac.compare_digest(known[0].encode(), presented.encode()):
            return known[1]
        raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS",
                       "the bearer token is not valid")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def add_token(path: Path, party: str, name: str) -> str:
    """Append a new token for (party, name) to the token file (created 0600); return it."""
    principal = Principal(party, name)
    if not name or any(c.isspace() or c == "#" for c in name):
        raise InvalidCommand(f"principal name {name!r} must be one word",
                             reason="INVALID_PRINCIPAL_NAME")
    token = new_token()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(f"{token} {principal.party} {principal.name}\n")
    return token
