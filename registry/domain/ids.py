"""Deterministic aggregate ids: the event store's primary key is our idempotency guard."""

from __future__ import annotations

import re
from uuid import UUID

from registry.domain.errors import InvalidCommand

NAMESPACE = UUID("6f1d3c2e-2b8a-5d0e-9b57-0c6b1a7f4e21")
"""Namespace of every uuid5 the registry derives. Changing it orphans all history."""

CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
PARTY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")


def check_client_id(value: str, field: str = "client id") -> str:
    """Client-chosen ids: 1-128 of letters, digits and ``. _ : -``."""
    if not isinstance(value, str) or not value:
        raise InvalidCommand(f"{field} is missing", reason="MISSING_ID", field=field)
    if not CLIENT_ID.match(value):
        raise InvalidCommand(
            f"{field} {value!r} must be 1-128 of letters, digits and '._:-'",
            reason="INVALID_ID",
            field=field,
        )
    return value


def has_control_characters(text: str, *, line_breaks: bool = False) -> bool:
    """Whether ``text`` holds a control character (C0, DEL, C1), tab and line breaks
    aside where ``line_breaks``. Stored text must not: PostgreSQL's text columns (the
    read models) cannot hold NUL, and the others only garble reports and logs."""
    allowed = "\t\n\r" if line_breaks else ""
    return any((c < " " or "\x7f" <= c <= "\x9f") and c not in allowed for c in text)


def check_party(value: str, field: str = "party") -> str:
    """The submitting party scopes client ids (one exchange's ids never collide with another's)."""
    if not isinstance(value, str) or not PARTY.match(value):
        raise InvalidCommand(
            f"{field} {value!r} must be 1-64 of a-z, 0-9 and '._-'",
            reason="INVALID_PARTY",
            field=field,
        )
    return value
