"""The digest chain over the event log, as pure functions (no I/O).

Each stored event is reduced to canonical bytes: its log position (notification id),
originator id, originator version, topic and state, the state exactly as stored
(compressed or encrypted bytes included, never decoded: the chain must not depend on
how today's code reads yesterday's events). Every field is length-prefixed, so no two
different events share canonical bytes. The chain is

    digest(0) = GENESIS
    digest(n) = sha256(digest(n-1) || canonical bytes of the n-th event in log order)

so the digest at a position commits to every event up to it, their order included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from uuid import UUID

DIGEST_SIZE = 32
EVENT_LABEL = b"carbon-registry/ledger/event/v1"
"""Leads the canonical bytes: a later encoding gets a new label, never a collision."""

GENESIS = hashlib.sha256(b"carbon-registry/ledger/genesis/v1").digest()
"""The digest before the first event: fixed, so every verifier starts from the same."""

_LENGTH_BYTES = 8
_INT_BYTES = 8
_UUID_TAG = b"U"
_TEXT_TAG = b"S"


@dataclass(frozen=True, slots=True)
class StoredLogEvent:
    """One event as the store holds it, with its position in the log.

    ``originator_id`` is a UUID, or the store's text for it (hex on SQLite, dashed on
    PostgreSQL): both spellings of one UUID give the same canonical bytes. None stands
    for a NULL, which the registry never writes but a tampered row may hold."""

    position: int
    originator_id: UUID | str | None
    originator_version: int | None
    topic: str | None
    state: bytes | None
    authenticator: bytes | None = None
    """The writer's HMAC of the event (``authentication``): not part of the canonical
    bytes, so the chain over events stored before authenticators is unchanged."""


_ABSENT = b"\xff" * _LENGTH_BYTES
"""Stands for a NULL field: a length no field can have, so NULL differs from empty."""


def _field(value: bytes | None) -> bytes:
    if value is None:
        return _ABSENT
    return len(value).to_bytes(_LENGTH_BYTES, "big") + value


def _int(value: int | None) -> bytes | None:
    return None if value is None else value.to_bytes(_INT_BYTES, "big", signed=True)


def originator_bytes(originator_id: UUID | str | None) -> bytes | None:
    """A UUID as its 16 bytes, whatever its spelling; anything else (which the registry
    never writes, but a tampered row may hold) as tagged UTF-8 text, never equal to one."""
    if originator_id is None:
        return None
    if isinstance(originator_id, UUID):
        return _UUID_TAG + originator_id.bytes
    try:
        return _UUID_TAG + UUID(originator_id).bytes
    except ValueError:
        return _TEXT_TAG + originator_id.encode("utf-8", "surrogatepass")


def canonical_bytes(event: StoredLogEvent) -> bytes:
    """The event's bytes for hashing: label, then each field length-prefixed."""
    return b"".join(
        map(
            _field,
            (
                EVENT_LABEL,
                _int(event.position),
                originator_bytes(event.originator_id),
                _int(event.originator_version),
                None if event.topic is None else event.topic.encode("utf-8", "surrogatepass"),
                None if event.state is None else bytes(event.state),
            ),
        )
    )


def event_hash(event: StoredLogEvent) -> bytes:
    """sha256 of the canonical bytes alone: tells a changed event from a changed chain."""
    return hashlib.sha256(canonical_bytes(event)).digest()


def link(previous_digest: bytes, event: StoredLogEvent) -> bytes:
    """The chain digest after ``event``: sha256(previous || canonical bytes)."""
    if len(previous_digest) != DIGEST_SIZE:
        raise ValueError(f"a chain digest has {DIGEST_SIZE} bytes, not {len(previous_digest)}")
    return hashlib.sha256(previous_digest + canonical_bytes(event)).digest()


def hash_and_link(previous_digest: bytes, event: StoredLogEvent) -> tuple[bytes, bytes]:
    """(``event_hash(event)``, ``link(previous_digest, event)``), encoding the event once."""
    if len(previous_digest) != DIGEST_SIZE:
        raise ValueError(f"a chain digest has {DIGEST_SIZE} bytes, not {len(previous_digest)}")
    canonical = canonical_bytes(event)
    return hashlib.sha256(canonical).digest(), hashlib.sha256(previous_digest + canonical).digest()


def chain(
    events: Iterable[StoredLogEvent], start: bytes = GENESIS
) -> Iterator[tuple[StoredLogEvent, bytes]]:
    """Each event with the chain digest after it, from ``start`` (lazily: any length)."""
    digest = start
    for event in events:
        digest = link(digest, event)
        yield event, digest


def chain_digest(events: Iterable[StoredLogEvent], start: bytes = GENESIS) -> bytes:
    """The digest after the last of ``events`` (``start`` when there are none)."""
    digest = start
    for event in events:
        digest = link(digest, event)
    return digest
