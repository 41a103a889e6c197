"""Callers for the benchmarks: principals granted their roles directly in the store
(as ``registry access init`` does) before the server starts, so a bench needs no
administrator round trips. The server sees them on their first call."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from registry.bootstrap import build_registry
from registry.domain.access import MAX_GRANT_ACCOUNTS
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
                for grant_id, scope in grant_scopes(f"bench-{name}-{role}", tuple(accounts)):
                    registry.access.grant_role(
                        system, grant_id, principal, role, scope, "benchmark caller"
                    )
            tokens[name] = registry.access.issue_token(system, principal, "benchmark").token
        return tokens
    finally:
        registry.close()


def grant_scopes(grant_id: str, accounts: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(grant id, accounts) of the grants that give ``accounts``: one grant holds at
    most ``MAX_GRANT_ACCOUNTS`` (10,000), so the 37,000 companies of a 10x year take
    four, ``ID``, ``ID-2``, ``ID-3``, ``ID-4``."""
    if len(accounts) <= MAX_GRANT_ACCOUNTS:
        return [(grant_id, accounts)]
    return [
        (grant_id if start == 0 else f"{grant_id}-{start // MAX_GRANT_ACCOUNTS + 1}", chunk)
        for start in range(0, len(accounts), MAX_GRANT_ACCOUNTS)
        if (chunk := accounts[start : start + MAX_GRANT_ACCOUNTS])
    ]
