"""The follower on PostgreSQL: woken by the event table's notifications, it reads once
per wake-up and misses nothing.

Before, a step that applied events was always followed by another step to find the
log empty, and under single trades that empty step cost as much as the full one
(docs/performance.md, "The worker under single trades"). Now the queued notifications
are drained before each read and a short read sleeps at once. The safety-net poll is
set to 30 s here, so an event the follower missed would show as a timeout, not be
picked up by the poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from registry.application import Registry
from registry.bootstrap import build_registry
from registry.domain.units import UnitClass, UnitType
from registry.persistence.engine import make_engine
from registry.readmodels.check import reconcile
from registry.readmodels.runner import ProjectionRunner, wait_for_position
from registry.settings import Settings
from tests.integration.test_ledger_verify import write_some_events
from tests.support import REGULATOR, fresh_pg_database

pytestmark = pytest.mark.postgres

POLL = 30.0
CEA25 = UnitClass(UnitType.CEA, 2025)


class Following:
    """A runner following in a thread; ``steps`` holds what each step applied."""

    def __init__(self, registry: Registry, url: str) -> None:
        self.engine = make_engine(Settings(url))
        self.runner = ProjectionRunner(registry, self.engine)
        self.steps: list[int] = []
        step = self.runner.step

        def counted() -> int:
            count = step()
            self.steps.append(count)
            return count

        self.runner.step = counted  # type: ignore[method-assign]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.runner.follow, args=(self.stop, POLL))

    def reach_head(self, registry: Registry) -> None:
        head = int(registry.recorder.max_notification_id() or 0)
        wait_for_position(self.engine, head, timeout=10.0)


@pytest.fixture
def following(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Registry, Following]]:
    monkeypatch.setenv("REGISTRY_EVENT_KEY", str(tmp_path / "event-key"))
    with fresh_pg_database() as url:
        registry = build_registry(Settings(url))
        follower = Following(registry, url)
        follower.thread.start()
        try:
            yield registry, follower
        finally:
            follower.stop.set()
            follower.thread.join(timeout=5)
            follower.engine.dispose()
            registry.close()


def test_one_step_per_write_and_no_empty_steps(
    following: tuple[Registry, Following],
) -> None:
    """Five issuances (one commit each), each awaited in the read models before the
    next: each is applied by one step and no step comes back empty (before: an empty
    step after each, so at least 5 of 11 or more steps)."""
    registry, follower = following
    write_some_events(registry)  # several commits: a step may wake for one it read
    follower.reach_head(registry)
    time.sleep(0.5)
    before = len(follower.steps)
    for n in range(5):
        registry.issue_units(REGULATOR, f"ISS-S{n}", CEA25, 100, "one commit")
        follower.reach_head(registry)
    after = follower.steps[before:]
    assert len(after) == 5 and 0 not in after, follower.steps
    assert reconcile(registry, follower.engine) == []


def test_writes_racing_the_steps_are_all_applied(
    following: tuple[Registry, Following],
) -> None:
    """Four threads write while the follower steps: commits land between a drain and
    a read, during a step, and during a wait. With the poll at 30 s, the read models
    reach the head within 10 s only if no notification was lost."""
    registry, follower = following

    def writer(prefix: str) -> None:
        for n in range(3):
            write_some_events(registry, f"{prefix}{n}")

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("W", "X", "Y", "Z")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    follower.reach_head(registry)
    # every stored event read once: counted, not taken from the highest id, which
    # passes ids lost by saves that conflicted and were retried (the writers share
    # CN-ISSUANCE and CN-ALLOCATION-RESERVE)
    with follower.engine.connect() as conn:
        table = registry.recorder.events_table_name  # type: ignore[attr-defined]
        stored = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    assert sum(follower.steps) == stored
    assert reconcile(registry, follower.engine) == []
