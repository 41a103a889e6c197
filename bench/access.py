"""Callers for the benchmarks: principals granted their roles directly in the store
(as ``registry access init`` does) before the server starts, so a bench needs no
administrator round trips. The server sees them on their first call."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from registry.bootstrap import build_registry
from registry.domain.transactions import Principal
from registry.settings import Settings

Grants = Iterable[tuple[str, Iterable[str]]]
"""(role, accounts) pairs: accounts () for the unscoped roles, ("*",) for an exchange
linked to every account."""


def seed_principals(url: str, principals: Mapping[str, tuple[Principal, Grants]]) -> dict[str, str]:
    """Grant each principal its roles and issue it a token: name -> token."""
    registry = build_registry(Settings(url))
    system = Principal("system", "bench")
    try:
        tokens = {}
        for name, (principal, grants) in principals.items():
            for role, accounts in grants:
                registry.access.grant_role(
                    system,
                    f"bench-{name}-{role}",
                    principal,
                    role,
                    tuple(accounts),
                    "benchmark caller",
                )
            tokens[name] = registry.access.issue_token(system, principal, "benchmark").token
        return tokens
    finally:
        registry.close()
