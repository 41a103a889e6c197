"""A long catch-up on PostgreSQL runs in lanes (``registry.readmodels.lanes``): the same
rows as one batch at a time, and a lane that fails stops it with nothing lost or
applied twice."""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, text

from registry.application import Registry
from registry.bootstrap import build_registry
from registry.persistence.bulk import Writer
from registry.persistence.engine import make_engine
from registry.readmodels import tables as t
from registry.readmodels.projections import (
    AccountDirectory,
    Batch,
    HistoryProjection,
    Projection,
    SerialsProjection,
)
from registry.readmodels.runner import LANE_BACKLOG, ProjectionRunner, all_projections
from registry.settings import Settings
from tests.integration.test_projection_crashes import dump, seed
from tests.support import fresh_pg_database

pytestmark = pytest.mark.postgres


class Observed(HistoryProjection):
    """The history projection, noting which thread wrote each batch; raising instead
    at the batch that holds position ``fail_at`` (when set)."""

    def __init__(self, directory: AccountDirectory, fail_at: int | None = None) -> None:
        super().__init__(directory)
        self.threads: set[str] = set()
        self.indexes_seen: set[str] = set()
        self.fail_at = fail_at

    def apply(self, out: Writer, batch: Batch) -> None:
        if self.fail_at is not None and any(e.position >= self.fail_at for e in batch):
            raise RuntimeError(f"history refuses the batch holding {self.fail_at}")
        self.threads.add(threading.current_thread().name)
        self.indexes_seen.update(
            name
            for name in ("rm_account_history_pkey", "ix_rm_account_history_kind")
            if out.conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar()
        )
        super().apply(out, batch)


class ObservedSerials(SerialsProjection):
    """The serials projection, noting per batch how many rows it kept in memory before
    and after (None: it loaded the batch's rows from the table)."""

    def __init__(self, directory: AccountDirectory) -> None:
        super().__init__(directory)
        self.resident_rows: list[tuple[int | None, int | None]] = []

    def apply(self, out: Writer, batch: Batch) -> None:
        before = None if self.resident is None else len(self.resident)
        super().apply(out, batch)
        after = None if self.resident is None else len(self.resident)
        self.resident_rows.append((before, after))


def observed(registry: Registry, fail_at: int | None = None) -> tuple[Observed, list[Projection]]:
    """Every projection, the history one observed."""
    projections = all_projections(registry)
    history = Observed(projections[0].directory, fail_at)
    return history, [history if p.name == "history" else p for p in projections]


def reset(engine: Engine) -> None:
    """Read models emptied and every projection back to position 0."""
    with engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            if table is not t.tracking:
                conn.execute(table.delete())
        conn.execute(t.tracking.update().values(position=0))


def index_definitions(engine: Engine) -> dict[str, str]:
    """Every read-model index by name, as PostgreSQL defines it."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'rm\\_%'")
        )
        return {str(row.indexname): str(row.indexdef) for row in rows}


@dataclass
class Reference:
    """A seeded registry whose read models were caught up one batch at a time, as they
    were then, and emptied again."""

    registry: Registry
    engine: Engine
    rows: dict[str, list[tuple[Any, ...]]]
    indexes: dict[str, str]


@contextmanager
def reference(seed_value: int) -> Iterator[Reference]:
    with fresh_pg_database() as url:
        settings = Settings(url)
        registry = build_registry(settings)
        engine = make_engine(settings)
        try:
            seed(registry, batches=6, size=300, rng=random.Random(seed_value))
            ProjectionRunner(registry, engine, batch_size=100, lanes=False).catch_up()
            made = Reference(registry, engine, dump(engine), index_definitions(engine))
            reset(engine)
            yield made
        finally:
            engine.dispose()
            registry.close()


def test_a_catch_up_in_lanes_writes_what_one_batch_at_a_time_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="registry.projections")
    with reference(11) as ref:
        history, projections = observed(ref.registry)
        runner = ProjectionRunner(ref.registry, ref.engine, projections, 100)
        head = runner.head()
        assert head > (LANE_BACKLOG + 1) * 100  # past the lanes' threshold
        assert runner.catch_up() > 0

        assert dump(ref.engine) == ref.rows
        assert set(runner.positions().values()) == {head}
        assert history.threads == {"lane-history+transactions"}
        # from position zero the history was written without its deferred indexes,
        # which were then built as they were
        assert history.indexes_seen == set()
        assert index_definitions(ref.engine) == ref.indexes
        # the log says how long each lane wrote, the figure that says which limits
        (said,) = [r.getMessage() for r in caplog.records if "in lanes" in r.getMessage()]
        lanes = re.findall(r"([a-z+]+) ([0-9.]+) s writing \(([0-9.]+) s CPU\)", said)
        assert [name for name, _, _ in lanes] == [
            "serials",
            "history+transactions",
            "accounts+holdings+supply",
        ]
        assert all(0 <= float(cpu) <= float(busy) > 0 for _, busy, cpu in lanes), said


def stop_half_way(ref: Reference) -> int:
    """A catch-up in lanes whose history lane fails half-way through the log; the head."""
    head = ProjectionRunner(ref.registry, ref.engine).head()
    fail_at = head // 2
    _, projections = observed(ref.registry, fail_at)
    runner = ProjectionRunner(ref.registry, ref.engine, projections, 100)
    with pytest.raises(RuntimeError, match="history refuses"):
        runner.catch_up()
    stopped = runner.positions()
    assert 0 < stopped["history"] < fail_at
    assert max(stopped.values()) <= head
    assert "ix_rm_account_history_kind" not in index_definitions(ref.engine)
    return head


def test_a_lane_that_fails_stops_the_catch_up_and_loses_nothing() -> None:
    """The history lane fails mid-way: the catch-up raises its error, no projection has
    passed what it committed, and the next catch-up first builds the indexes the first
    one deferred, then ends where a clean one does."""
    with reference(12) as ref:
        head = stop_half_way(ref)

        history, projections = observed(ref.registry)
        runner = ProjectionRunner(ref.registry, ref.engine, projections, 100)
        runner.catch_up()
        assert history.indexes_seen == {"rm_account_history_pkey", "ix_rm_account_history_kind"}
        assert dump(ref.engine) == ref.rows
        assert index_definitions(ref.engine) == ref.indexes
        assert set(runner.positions().values()) == {head}


def test_a_follower_builds_what_a_stopped_catch_up_deferred() -> None:
    """A server following in-process may be the next to run the projections."""
    with reference(13) as ref:
        stop_half_way(ref)
        stop = threading.Event()
        stop.set()  # build, then stop before the first step
        ProjectionRunner(ref.registry, ref.engine, batch_size=100).follow(stop)
        assert index_definitions(ref.engine) == ref.indexes


def test_past_its_cap_the_serials_projection_loads_each_batch_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows kept in memory are capped (``RESIDENT_ROWS``): with the cap at 40 rows, the
    batch that leaves more than 40 drops them, every later batch loads its own rows
    from the table, and the rows written are still those of one batch at a time."""
    cap = 40
    monkeypatch.setattr("registry.readmodels.projections.RESIDENT_ROWS", cap)
    with reference(14) as ref:
        serials = ObservedSerials(all_projections(ref.registry)[0].directory)
        projections = [serials if p.name == "serials" else p for p in all_projections(ref.registry)]
        ProjectionRunner(ref.registry, ref.engine, projections, 100).catch_up()

        seen = serials.resident_rows
        assert seen[0] == (0, seen[0][1])  # from zero: kept in memory from the start
        (passed,) = [
            i for i, (before, after) in enumerate(seen) if before is not None and after is None
        ]
        assert seen[passed][0] is not None and seen[passed][0] <= cap
        assert all(before is not None for before, _ in seen[:passed])
        assert passed < len(seen) - 2  # some batches after it loaded their own
        assert all(step == (None, None) for step in seen[passed + 1 :])
        assert serials.resident is None
        assert dump(ref.engine) == ref.rows
