"""GetBalances' restricted quantities without a store read per call: the holdings and
the restriction index's stored version in one statement, the index kept between calls
and replaced when that version moved. A detention or a freeze committed by any process
before a read began shows on that read (never as free units); lifted, it stops showing.
On SQLite and PostgreSQL (where the statement goes through the driver), with a reader
and a writer that are separate registries, as two server processes are."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from registry.application import Registry
from registry.bootstrap import build_registry
from registry.domain.restriction_index import RestrictionIndex
from registry.domain.transactions import Principal
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType
from registry.persistence.engine import make_engine, make_read_engine
from registry.persistence.eventlog import EventLog
from registry.persistence.faults import CONNECTION_LOST, database_fault
from registry.readmodels.queries import ReadModels
from registry.readmodels.runner import ProjectionRunner
from registry.settings import Settings
from tests.support import (
    PROJECT_OWNER,
    REGULATOR,
    fresh_pg_database,
    open_company,
    register_project,
    terminate_all,
)

LI = Principal("mee", "regulator-li")
P1 = UnitClass(UnitType.CCER, 2024, "P-1")
P2 = UnitClass(UnitType.CCER, 2024, "P-2")
CEA = UnitClass(UnitType.CEA, 2025)


@dataclass
class Two:
    """A registry that reads balances and one that writes, on one store, and the read
    models (projected on demand)."""

    url: str
    reader: Registry
    writer: Registry
    engine: object
    read: ReadModels

    def project(self) -> None:
        ProjectionRunner(self.writer, self.read.engine).catch_up()

    def balances(self, account_id: str) -> dict[str, tuple[int, int, int]]:
        """Per unit class: (total, detained, frozen), as GetBalances answers them."""
        rows, version = self.read.holdings_and_version(
            account_id, EventLog.of(self.reader.recorder), RestrictionIndex.id_for()
        )
        restricted = self.reader.restrictions.restricted_quantities(
            account_id, index_version=version, projects={r["project"] for r in rows}
        )
        return {
            r["unit_class"]: (r["total"], *restricted.get(r["unit_class"], (0, 0))) for r in rows
        }

    def index_reads(self) -> int:
        """How many times the reader loaded the index from the store so far."""
        return self.reader.restrictions.index_loads


@pytest.fixture(params=["sqlite", "postgres"])
def two(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Two]:
    def build(url: str) -> Iterator[Two]:
        settings = Settings(url)
        writer = build_registry(settings)
        reader = build_registry(settings)
        engine = make_engine(settings)
        reads = make_read_engine(settings, 2)
        try:
            open_company(writer, "PWR-A")
            register_project(writer, "P-1")
            register_project(writer, "P-2")
            writer.issue_units(REGULATOR, "ISS-1", P1, 100, "")
            writer.issue_units(REGULATOR, "ISS-2", P2, 100, "")
            writer.issue_units(REGULATOR, "ISS-3", CEA, 100, "")
            for cls, quantity in ((P1, 60), (P2, 40)):
                selector = UnitSelector(UnitType.CCER, project=cls.project)
                moved = writer.transfer(
                    REGULATOR, f"T-{cls.project}", PROJECT_OWNER, "PWR-A", selector, quantity, ""
                )
                assert moved.ok, moved
            two = Two(url, reader, writer, engine, ReadModels(engine, reads))
            two.project()
            yield two
        finally:
            reads.dispose()
            engine.dispose()
            reader.close()
            writer.close()

    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        with fresh_pg_database() as url:
            yield from build(url)
    else:
        yield from build(f"sqlite:///{tmp_path / 'registry.sqlite'}")


def test_a_detention_by_another_process_shows_on_the_next_read(two: Two) -> None:
    assert two.balances("PWR-A") == {P1.key: (60, 0, 0), P2.key: (40, 0, 0)}
    two.writer.restrictions.detain_origin(LI, "P-1", "MEE-D-1", "flagged")
    # the read models are not told (nothing moved); the write model is, at once
    assert two.balances("PWR-A") == {P1.key: (60, 60, 0), P2.key: (40, 0, 0)}
    two.writer.restrictions.clear_origin(LI, "P-1", "MEE-E-1", "audited")
    assert two.balances("PWR-A") == {P1.key: (60, 0, 0), P2.key: (40, 0, 0)}


def test_a_freeze_by_another_process_shows_on_the_next_read(two: Two) -> None:
    assert two.balances("PWR-A")[P2.key] == (40, 0, 0)
    [holding] = [h for h in two.writer.get_holdings("PWR-A") if h.unit_class == P2]
    block = holding.blocks[0]
    frozen = SerialBlock(P2, block.first, block.first + 9)
    two.writer.restrictions.freeze_blocks(LI, "F-1", "PWR-A", [frozen], "COURT-1", "order")
    assert two.balances("PWR-A") == {P1.key: (60, 0, 0), P2.key: (40, 0, 10)}
    two.writer.restrictions.release_blocks(LI, "F-1", "order lifted", "COURT-2")
    assert two.balances("PWR-A")[P2.key] == (40, 0, 0)


def test_the_index_is_read_again_only_when_its_version_moved(two: Two) -> None:
    two.writer.restrictions.detain_origin(LI, "P-9", "MEE-D-9", "another origin")
    before = two.index_reads()
    two.balances("PWR-A")
    loaded = two.index_reads()
    assert loaded == before + 1  # the version moved since the reader last looked
    for _ in range(5):  # nothing changed since: the kept copy serves
        assert two.balances("PWR-A") == {P1.key: (60, 0, 0), P2.key: (40, 0, 0)}
    assert two.index_reads() == loaded
    two.writer.restrictions.detain_origin(LI, "P-2", "MEE-D-2", "flagged")
    assert two.balances("PWR-A") == {P1.key: (60, 0, 0), P2.key: (40, 40, 0)}
    assert two.index_reads() == loaded + 1


def test_a_detention_elsewhere_leaves_other_balances_free(two: Two) -> None:
    """A detention in force elsewhere: an account showing no unit class of a detained
    project (and not frozen) has nothing restricted, and is not computed (its
    aggregate is not loaded: ``projects`` says there is nothing to look for)."""
    open_company(two.writer, "PWR-B")
    cea = UnitSelector(UnitType.CEA)
    assert two.writer.transfer(REGULATOR, "T-CEA", "CN-ISSUANCE", "PWR-B", cea, 5, "").ok
    two.project()
    two.writer.restrictions.detain_origin(LI, "P-1", "MEE-D-1", "flagged")
    assert two.balances("PWR-B") == {CEA.key: (5, 0, 0)}
    assert two.reader.restrictions.restricted_quantities("PWR-B", projects=[""]) == {}
    assert two.balances("PWR-A")[P1.key] == (60, 60, 0)


@pytest.mark.postgres
def test_a_dropped_read_connection_fails_once_then_is_replaced(tmp_path: Path) -> None:
    """The driver-level statement keeps what SQLAlchemy did: a connection the database
    ended fails its call once with an error the API answers as retryable, and the pool
    replaces it."""
    with fresh_pg_database() as url:
        settings = Settings(url)
        registry = build_registry(settings)
        engine = make_engine(settings)
        reads = make_read_engine(settings, 1)
        try:
            open_company(registry, "PWR-A")
            ProjectionRunner(registry, engine).catch_up()
            read = ReadModels(engine, reads)
            log = EventLog.of(registry.recorder)
            index = RestrictionIndex.id_for()
            assert read.holdings_and_version("PWR-A", log, index) == ([], 0)
            terminate_all(url)
            with pytest.raises(psycopg.OperationalError) as raised:
                read.holdings_and_version("PWR-A", log, index)
            assert database_fault(raised.value) == CONNECTION_LOST
            assert read.holdings_and_version("PWR-A", log, index) == ([], 0)
        finally:
            reads.dispose()
            engine.dispose()
            registry.close()
