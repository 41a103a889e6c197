"""The registry's PostgreSQL recorder writes exactly what the library's would."""

from __future__ import annotations

from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from registry.bootstrap import build_registry
from registry.persistence.recorder import RegistryPostgresRecorder
from registry.settings import Settings
from tests.support import fresh_pg_database

pytestmark = pytest.mark.postgres


def test_events_land_in_insert_order_with_their_notification_ids() -> None:
    with fresh_pg_database() as url:
        registry = build_registry(Settings(url))
        try:
            recorder = registry.recorder
            assert isinstance(recorder, RegistryPostgresRecorder)
            head = recorder.max_notification_id() or 0
            ids = [uuid4() for _ in range(5)]
            events = [
                StoredEvent(
                    originator_id=ids[n % 5],
                    originator_version=1 + n // 5,
                    topic=f"test.Topic{n}",
                    state=b'{"n": %d}' % n,
                )
                for n in range(1000)
            ]
            returned = recorder.insert_events(events)
            assert returned is not None and len(returned) == 1000
            assert returned == sorted(returned) and returned[0] > head
            stored = recorder.select_notifications(start=head + 1, limit=2000)
            assert [
                (n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in stored
            ] == [
                (i, e.originator_id, e.originator_version, e.topic, e.state)
                for i, e in zip(returned, events, strict=True)
            ]
            # a version already taken fails the whole insert, as in the library
            with pytest.raises(IntegrityError):
                recorder.insert_events(
                    [
                        StoredEvent(ids[0], 999, "test.New", b"{}"),
                        StoredEvent(ids[1], 1, "test.Taken", b"{}"),
                    ]
                )
            assert recorder.max_notification_id() == returned[-1]
        finally:
            registry.close()
