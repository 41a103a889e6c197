"""The aggregate cache kept current with the PostgreSQL event store, and loads of many
aggregates in a few queries.

Several server processes each cache the aggregates they touched; what another process
writes makes those copies stale. Following the log (one query before each group) and
advancing copies in place of re-reading them keeps the groups deciding on current
copies; loading snapshots and the events after them for many aggregates at once keeps a
batch's first reads to two queries.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from copy import deepcopy
from typing import Any
from uuid import UUID

from eventsourcing.application import Application, LRUCache
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import ApplicationRecorder, Notification, Recording, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder

from registry.persistence.recorder import RegistryPostgresRecorder, select_latest_events

SCAN_PAGE = 1000
CACHE_CATCH_UP_LIMIT = 20_000
"""Events written elsewhere after which a process drops its cache instead of following."""

log = logging.getLogger(__name__)


def replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """Apply stored events in order: the library's default projector spends most of its
    time in runtime Protocol checks on every event."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def originators(recorder: ApplicationRecorder, topic: str) -> Iterator[UUID]:
    """Ids of aggregates whose events of ``topic`` are in the log, in log order."""
    for notification in TopicFollower(recorder, [topic]).read():
        yield as_uuid(notification.originator_id)


class TopicFollower:
    """A position in the log and the events of some topics it gained after it.

    Moving the position only to the last event of the topics found made every sweep
    of the housekeeping read the whole log after it: with no hold in a national year,
    683 ms of PostgreSQL per hold sweep every 5 s after a 10x year's trades, growing
    with the log (pg_stat_statements); the proposals sweep scanned the log from its
    start every minute. The position moves to the head read first: commits enter the
    log in position order (the insert holds the table lock), so nothing can appear at
    or below a head already read."""

    def __init__(self, recorder: ApplicationRecorder, topics: Sequence[str]) -> None:
        self.recorder = recorder
        self.topics = list(topics)
        self.after = 0

    def read(self) -> Iterator[Notification]:
        """The notifications of the topics after the position, up to the head now."""
        head = self.recorder.max_notification_id() or 0
        while True:
            page = self.recorder.select_notifications(
                start=self.after + 1, limit=SCAN_PAGE, stop=head, topics=self.topics
            )
            for notification in page:
                yield notification
                self.after = notification.id
            if len(page) < SCAN_PAGE:
                self.after = max(self.after, head)
                return


class PostgresAggregates:
    """The application's aggregate cache, followed along the log of a PostgreSQL store,
    and many aggregates loaded at once from it."""

    def __init__(self, app: Application[UUID], recorder: RegistryPostgresRecorder) -> None:
        self._app = app
        self._recorder = recorder
        self.position: int = recorder.max_notification_id() or 0
        """The log position up to which ``catch_up`` has followed other writers (the
        head at start, when the cache is empty)."""
        self.others_seen_at = -math.inf
        """When the catch-up last found events another process wrote (monotonic)."""
        self._own_saves: list[tuple[int, int]] = []
        """Log ranges this process saved that the catch-up has not passed yet."""

    def saved(self, recordings: Sequence[Recording[UUID]]) -> None:
        """Note a save of this process: when nothing was written between what the cache
        has followed and this save (whose aggregates the caller caches), the catch-up
        need not read its events back."""
        if not recordings:
            return
        first, last = recordings[0].notification.id, recordings[-1].notification.id
        if first == self.position + 1:
            self.position = last
        else:
            self._own_saves.append((first, last))  # the catch-up will read them

    def catch_up(self) -> None:
        """Apply to the cached aggregates what other processes wrote since this one last
        looked (before a group is decided), so the group decides on current copies
        instead of losing its save and trying again: with two server processes, every
        group found the account the other had just changed (CN-SURRENDER, in the
        national year) stale.

        Reads the log after the last position seen, one query (this process's own
        saves move the position on when nothing came between, see ``saved``); a copy
        that missed events is dropped (the next read loads it), and after a long
        absence (more than CACHE_CATCH_UP_LIMIT events) the whole cache is dropped."""
        recorder, cache = self._recorder, self._app.repository.cache
        if cache is None:
            return
        rows = recorder.select_log_after(self.position, CACHE_CATCH_UP_LIMIT + 1)
        if len(rows) > CACHE_CATCH_UP_LIMIT:
            self._app.repository.cache = LRUCache(maxsize=getattr(cache, "maxsize", 20_000))
            head = recorder.max_notification_id() or 0
            log.warning(  # what it touches next is loaded from the store: worth knowing
                "aggregate cache dropped: more than %d events written by other processes "
                "since position %d (now %d); its aggregates are read from the store again",
                CACHE_CATCH_UP_LIMIT,
                self.position,
                head,
            )
            self.position = head
            return
        own, self._own_saves = self._own_saves, []
        if any(not any(first <= position <= last for first, last in own) for position, _ in rows):
            self.others_seen_at = time.monotonic()
        if rows:
            self._own_saves.extend(r for r in own if r[1] > rows[-1][0])
        else:
            self._own_saves.extend(own)
        for position, stored in rows:
            self.position = position
            aggregate_id = as_uuid(stored.originator_id)
            cached = _cached_copy(cache, aggregate_id)
            if cached is None or cached.version >= stored.originator_version:
                continue  # not followed here, or it has this event already
            if cached.version + 1 == stored.originator_version:
                self._advance_cached(aggregate_id, cached, [stored])
            else:
                cache.get(aggregate_id, evict=True)  # it missed events: load it afresh

    def refresh(self, read_versions: dict[UUID, int]) -> bool:
        """Apply to the cached copies of these aggregates what the store has after the
        versions read, in one query; False where there is no cache to refresh.

        A batch of 1,000 trades reads ~1,000 accounts: reading each afresh after a lost
        race took a second per batch. Only copies still at the version read are
        advanced."""
        cache = self._app.repository.cache
        if cache is None:
            return False
        newer: dict[UUID, list[StoredEvent]] = {}
        for stored in self._recorder.select_newer_events(read_versions):
            newer.setdefault(as_uuid(stored.originator_id), []).append(stored)
        for aggregate_id, events in newer.items():
            cached = _cached_copy(cache, aggregate_id)
            if (
                cached is not None
                and cached.version == read_versions[aggregate_id]
                and events[0].originator_version == cached.version + 1
            ):
                self._advance_cached(aggregate_id, cached, events)
        return True

    def _advance_cached(
        self, aggregate_id: UUID, cached: Aggregate, events: Sequence[StoredEvent]
    ) -> None:
        """Cache a copy of ``cached`` with ``events`` (its next ones) applied. The copy
        replaces it, never changes it in place: other threads may hold it."""
        cache = self._app.repository.cache
        assert cache is not None
        cache.put(
            aggregate_id, replay(deepcopy(cached), map(self._app.mapper.to_domain_event, events))
        )

    def load_events(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, Any]:
        """The aggregates among these that exist, replayed from their events alone, in
        one query (after a lost race a batch asks for 1,000 transactions, usually none
        recorded)."""
        events: dict[UUID, list[StoredEvent]] = {}
        for stored in self._recorder.select_newer_events(dict.fromkeys(aggregate_ids, 0)):
            events.setdefault(as_uuid(stored.originator_id), []).append(stored)
        return {
            aggregate_id: replay(None, map(self._app.mapper.to_domain_event, stored))
            for aggregate_id, stored in events.items()
        }

    def load_created(self, aggregate_ids: Sequence[UUID]) -> dict[UUID, Aggregate]:
        """The aggregates among these that exist, as their first event made them, in
        one query: for what is fixed when an aggregate is created and never changed."""
        mapper = self._app.mapper
        return {
            as_uuid(stored.originator_id): replay(None, [mapper.to_domain_event(stored)])
            for stored in self._recorder.select_first_events(aggregate_ids)
        }

    def preload(self, aggregate_ids: Iterable[UUID]) -> set[UUID] | None:
        """Cache those of these aggregates that are not cached yet, read from the store
        now (``load``); the ids among them the store does not have (the caller reads
        those again once it holds the writer lock: another process may create them
        meanwhile, and a cache never holds what does not exist), or None when there is
        no cache to put them in.

        For a group about to take the writer lock: what it would otherwise load under
        the lock (two queries and a replay) is read while the other process holds it.
        In the 10x year's surrenders loading what a group had not cached was a quarter
        of the group thread's work (py-spy), most of it under the lock. Safe at any
        moment on the thread that runs ``catch_up``: a copy read now holds every event
        committed so far, the log position the catch-up follows from is no later than
        that, and anything committed after is after it too, so the next catch-up
        advances the copy (skipping what it has) and nothing is missed."""
        cache = self._app.repository.cache
        if cache is None:
            return None
        wanted = [i for i in dict.fromkeys(aggregate_ids) if _cached_copy(cache, i) is None]
        found = self.load(wanted) if wanted else {}
        for aggregate_id, aggregate in found.items():
            cache.put(aggregate_id, aggregate)
        return {i for i in wanted if i not in found}

    def load(self, aggregate_ids: list[UUID]) -> dict[UUID, Aggregate]:
        """The aggregates among these that exist, as the store has them now
        (``UnitOfWork.prefetch``): a copy of the cached one, else the latest snapshot,
        brought forward with the events after it; two queries for all of them.

        Starting from the cached copy is what the library's repository does for one
        aggregate (its fast-forward), for the same reason: a retry that reads fresh
        after a lost race decoded CN-SURRENDER's whole snapshot (a million blocks after
        a 10x year, seconds), lost again to the other server process meanwhile, and
        read it again."""
        start: dict[UUID, Aggregate] = {}
        cache = self._app.repository.cache
        if cache is not None:
            for aggregate_id in aggregate_ids:
                cached = _cached_copy(cache, aggregate_id)
                if cached is not None:
                    start[aggregate_id] = deepcopy(cached)  # the cached one never changes
        snapshots = self._app.snapshots
        unseen = [i for i in aggregate_ids if i not in start]
        if snapshots is not None and unseen:
            snapshot_recorder = snapshots.recorder
            assert isinstance(snapshot_recorder, PostgresAggregateRecorder)
            for stored in select_latest_events(snapshot_recorder, unseen):
                snapshot = snapshots.mapper.to_domain_event(stored)
                assert isinstance(snapshot, Snapshot)
                aggregate = snapshot.mutate(None)
                assert isinstance(aggregate, Aggregate)
                start[as_uuid(stored.originator_id)] = aggregate
        after = {i: start[i].version if i in start else 0 for i in aggregate_ids}
        events: dict[UUID, list[StoredEvent]] = {}
        for stored in self._recorder.select_newer_events(after):
            events.setdefault(as_uuid(stored.originator_id), []).append(stored)
        mapper = self._app.mapper
        loaded = {
            i: replay(start.get(i), map(mapper.to_domain_event, events.get(i, ())))
            for i in aggregate_ids
        }
        return {i: aggregate for i, aggregate in loaded.items() if aggregate is not None}


def as_uuid(value: UUID | str) -> UUID:
    """A stored originator id as a UUID (psycopg already gives one)."""
    return value if isinstance(value, UUID) else UUID(value)


def _cached_copy(cache: Any, aggregate_id: UUID) -> Aggregate | None:
    """The aggregate the cache holds under this id, or None."""
    try:
        cached = cache.get(aggregate_id)
    except KeyError:
        return None
    return cached if isinstance(cached, Aggregate) else None
