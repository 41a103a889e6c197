"""Stored snapshots checked against the replay of the events.

A snapshot is a shortcut the write model loads instead of replaying an aggregate's
events: a forged snapshot row (an account holding units it was never given) would be
believed. Snapshots are derived data, not evidence, so they are not chained; instead
``check_snapshots`` replays each snapshotted aggregate from its stored events (which the
chain covers) and requires every snapshot to equal the state the replay reaches at its
version. ``registry verify`` runs it after the chain walk.

Decoding needs the domain's event classes and transcodings, but never the application:
no Registry is built on the store (nothing is written, no national account opened), and
a row that does not decode is reported, not raised. The stored form is the one of the
library's JSON transcoder whichever of it or ``MsgspecTranscoder`` wrote a row, so the
faster reads them all; states are compared decoded, never as re-encoded bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Snapshot
from eventsourcing.persistence import Mapper, StoredEvent
from sqlalchemy import Connection

from registry.persistence.eventlog import EventLog
from registry.persistence.transcoder import MsgspecTranscoder


@dataclass(frozen=True)
class SnapshotProblem:
    originator_id: UUID | str
    version: int
    position: int
    """Where the event at the snapshot's version is in the log (0: nowhere)."""
    detail: str


def registry_mapper() -> Mapper[UUID]:
    """The registry's event mapper (its transcodings), without an application or store."""
    from registry.application.registry import Registry

    transcoder = MsgspecTranscoder()
    bare: Any = object.__new__(Registry)  # register_transcodings reads no state
    bare.register_transcodings(transcoder)
    return Mapper(transcoder=transcoder)


def _comparable(mapper: Mapper[UUID], state: Any) -> Any:
    """A state as the transcoder round-trips it, so tuples and lists compare equal."""
    transcoder = mapper.transcoder
    return transcoder.decode(transcoder.encode(state))


def check_snapshots(
    conn: Connection, log: EventLog, mapper: Mapper[UUID] | None = None, batch: int = 1000
) -> Iterator[SnapshotProblem]:
    """Every snapshot that is not the replay of its aggregate's stored events at its
    version (or does not decode, or is ahead of the events)."""
    mapper = mapper or registry_mapper()
    current: Any = None
    current_id: str | None = None
    for originator, version, topic, state in log.snapshots(conn, batch):
        key = str(originator)
        if key != current_id:
            current_id, current = key, None
            events = iter(log.events_of(conn, originator))
        failure: str | None = None
        try:
            stored = mapper.to_domain_event(StoredEvent(originator, version, topic, state))
            if not isinstance(stored, Snapshot):
                raise ValueError(f"topic {topic!r} is not a snapshot")
            while current is None or current.version < version:
                event = next(events, None)
                if event is None:
                    break
                decoded: Any = mapper.to_domain_event(event)
                current = decoded.mutate(current)
            if current is None or current.version != version:
                failure = (
                    f"the events reach version {0 if current is None else current.version}"
                    f", not the snapshot's {version}"
                )
            else:
                expected = Snapshot.take(current)
                if expected.topic != stored.topic or _comparable(
                    mapper, expected.state
                ) != _comparable(mapper, stored.state):
                    failure = (
                        "its state is not the replay of the aggregate's events up to "
                        "that version (forged or altered)"
                    )
        except Exception as error:  # any undecodable row is a finding
            failure = f"it does not decode or replay: {type(error).__name__}: {error}"
            current_id = None  # start this aggregate afresh at its next snapshot
        if failure is not None:
            position = 0
            with suppress(ValueError):
                position = log.position_of(conn, UUID(key), version) or 0
            yield SnapshotProblem(originator, version, position, failure)
