"""The event log as the chain reads it: ``StoredLogEvent``s in position order.

The rows come from ``registry.persistence.eventlog`` with their authenticators, the
state never decoded, in batches (a million events stream through in bounded memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

from sqlalchemy import Connection

from registry.integrity.chain import StoredLogEvent
from registry.persistence.eventlog import DEFAULT_BATCH, EventLog, Row


def read_log(
    log: EventLog, conn: Connection, after: int, limit: int, upto: int | None = None
) -> list[StoredLogEvent]:
    """Up to ``limit`` events after position ``after`` (and at most ``upto``)."""
    return [_event(row) for row in log.rows(conn, after, limit, upto=upto, authenticator=True)]


def stream_log(
    log: EventLog,
    conn: Connection,
    after: int = 0,
    upto: int | None = None,
    batch: int = DEFAULT_BATCH,
) -> Iterator[StoredLogEvent]:
    """Every event after ``after`` (to ``upto``), fetched ``batch`` at a time."""
    for rows in log.batches(conn, after, upto, batch, authenticator=True):
        yield from [_event(row) for row in rows]


def _event(row: Row) -> StoredLogEvent:
    """A row as an event. The registry writes a UUID, an integer, text and bytes; a row
    changed by hand (SQLite keeps whatever type it is given) is kept distinguishable
    from the original rather than refused, so the verifier can name it."""
    position, originator, version, topic, state, tag = row
    if originator is not None and not isinstance(originator, (UUID, str)):
        originator = repr(originator)
    if version is not None and not isinstance(version, int):
        version = None
    if topic is not None and not isinstance(topic, str):
        topic = repr(topic)
    if isinstance(state, str):
        state = state.encode("utf-8", "surrogatepass")
    elif state is not None and not isinstance(state, (bytes, bytearray, memoryview)):
        state = repr(state).encode()
    if tag is not None and not isinstance(tag, (bytes, bytearray, memoryview)):
        tag = None  # not a MAC: never authentic
    return StoredLogEvent(
        int(position),
        originator,
        version,
        topic,
        None if state is None else bytes(state),
        None if tag is None else bytes(tag),
    )
