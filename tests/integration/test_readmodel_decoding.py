"""The runner's own reading of stored events equals the library's mapper, and whatever
the store does to the stored state (compression), projections end equal to the aggregates.

The runner parses stored JSON itself (``registry.readmodels.events``) and takes the
mapper's path only when its shortcut would not be exact. These tests hold the
shortcut to the mapper: field by field on every topic a projection reads, row by row
on every read-model table, and through a store that compresses its events.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from registry.application import Registry
from registry.bootstrap import build_registry
from registry.cli.demo import EXCHANGE, run_demo
from registry.domain.accounts import Account
from registry.domain.units import UnitSelector, UnitType
from registry.persistence import migrate
from registry.persistence.engine import make_engine
from registry.readmodels import tables
from registry.readmodels.check import reconcile
from registry.readmodels.events import EVENT_CLASSES, Event, StateDecoder
from registry.readmodels.runner import ProjectionRunner
from registry.settings import Settings
from tests.support import REGULATOR, open_trader


def history(registry: Registry) -> None:
    """The demo (trades, a hold settled in part, surrenders, a cancellation, a refusal,
    an open hold) and the events it lacks: a freeze, an unfreeze, a closing, a
    reversal, a released hold."""
    assert run_demo(registry, out=lambda _: None)
    open_trader(registry, "TRD-GONE-1")
    registry.close_account(REGULATOR, "TRD-GONE-1", "no longer trading")
    registry.freeze_account(REGULATOR, "TRD-SH-0001", "inquiry")
    registry.unfreeze_account(REGULATOR, "TRD-SH-0001", "inquiry closed")
    assert registry.reverse(REGULATOR, "REV-1", "green-fund", "CXL-0001", "claim withdrawn").ok
    assert registry.release_hold(EXCHANGE, "ORD-88813").ok
    hold = registry.place_hold(EXCHANGE, "ORD-9", "TRD-SH-0001", UnitSelector(UnitType.CEA), 5, 60)
    assert hold.ok


def dump(engine: Engine) -> dict[str, set[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            table.name: {tuple(row) for row in conn.execute(select(table))}
            for table in tables.metadata.sorted_tables
            if table is not tables.tracking
        }


def rebuilt(
    registry: Registry, engine: Engine, *, through_mapper: bool
) -> dict[str, set[tuple[Any, ...]]]:
    tables.metadata.drop_all(engine)
    tables.metadata.create_all(engine)
    runner = ProjectionRunner(registry, engine, batch_size=7)
    runner.reader.decode.fast = not through_mapper
    runner.catch_up()
    return dump(engine)


@contextmanager
def sqlite_store(path: Path, **env: str) -> Iterator[tuple[Registry, Engine]]:
    """A registry on a migrated SQLite file, with extra library settings ``env``."""
    settings = Settings(f"sqlite:///{path}")
    migrate.upgrade(settings)
    registry = (
        Registry(env={**settings.eventsourcing_env(), **env}) if env else build_registry(settings)
    )
    registry.ensure_national_accounts()
    engine = make_engine(settings)
    try:
        yield registry, engine
    finally:
        registry.close()
        engine.dispose()


def test_every_projected_topic_decodes_as_the_mapper_decodes_it(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "registry.sqlite") as (registry, _):
        history(registry)
        fast, slow = StateDecoder(registry.mapper), StateDecoder(registry.mapper)
        assert fast.fast
        slow.fast = False
        seen: set[str] = set()
        for notification in registry.recorder.select_notifications(start=1, limit=10_000):
            if notification.topic not in EVENT_CLASSES:
                continue
            seen.add(notification.topic)
            originator = str(notification.originator_id)
            args = (
                notification.topic,
                originator,
                notification.originator_version,
                notification.state,
            )
            state = fast(*args)
            assert state == slow(*args), notification.topic
            event = Event(notification.id, notification.topic, originator, state)
            domain = registry.mapper.to_domain_event(notification)
            assert event.timestamp() == domain.timestamp
            assert event.uuid() == domain.originator_id
            for name in ("blocks", "released"):
                if hasattr(domain, name):
                    assert [b["_data_"] for b in state[name]] == [
                        [b.unit_class.key, b.first, b.last] for b in getattr(domain, name)
                    ]
            if hasattr(domain, "blocks"):
                assert event.blocks() == [
                    [b.unit_class.key, b.first, b.last] for b in domain.blocks
                ]
            for name, value in vars(domain).items():
                if name in ("originator_id", "originator_version"):
                    continue
                if value is None or isinstance(value, str | int | dict):
                    assert state[name] == value, (notification.topic, name)
        assert seen == set(EVENT_CLASSES), f"never seen: {set(EVENT_CLASSES) - seen}"


def test_projections_through_the_mapper_write_the_same_rows(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "registry.sqlite") as (registry, engine):
        history(registry)
        shortcut = rebuilt(registry, engine, through_mapper=False)
        assert shortcut["rm_transactions"] and shortcut["rm_serial_blocks"]
        assert rebuilt(registry, engine, through_mapper=True) == shortcut
        assert reconcile(registry, engine) == []


@pytest.mark.parametrize("compressor", ["eventsourcing.compressor:ZlibCompressor"])
def test_a_store_that_compresses_its_events_projects_exactly(
    tmp_path: Path, compressor: str
) -> None:
    with sqlite_store(tmp_path / "registry.sqlite", COMPRESSOR_TOPIC=compressor) as (
        registry,
        engine,
    ):
        assert registry.mapper.compressor is not None
        history(registry)
        [stored] = registry.recorder.select_notifications(start=1, limit=1)
        assert not stored.state.startswith(b"{"), "the store did not compress"
        ProjectionRunner(registry, engine).catch_up()
        assert reconcile(registry, engine) == []


def test_an_upcast_event_class_is_read_through_the_mapper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event class at ``class_version`` 2 has its stored v1 states upcast by the
    mapper: the runner must not read them raw."""
    upcast: list[int] = []

    def upcast_v1_v2(state: dict[str, Any]) -> None:
        upcast.append(len(state["blocks"]))

    with sqlite_store(tmp_path / "registry.sqlite") as (registry, engine):
        history(registry)
        plain = rebuilt(registry, engine, through_mapper=False)
        monkeypatch.setattr(Account.Credited, "class_version", 2, raising=False)
        monkeypatch.setattr(
            Account.Credited, "upcast_v1_v2", staticmethod(upcast_v1_v2), raising=False
        )
        assert StateDecoder(registry.mapper).upcast == {Account.Credited.TOPIC}
        assert rebuilt(registry, engine, through_mapper=False) == plain
        assert upcast, "the mapper never upcast a Credited event"
