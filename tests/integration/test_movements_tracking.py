"""Migration 0007 gives the serial movements their own tracking row, at the serials
projection's position: a registry projected by the version before upgrades in place,
its movements neither lost nor written twice."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import Engine, func, select

from registry.bootstrap import build_registry
from registry.persistence import migrate
from registry.persistence.engine import make_engine
from registry.readmodels import tables as t
from registry.readmodels.projections import SerialsProjection
from registry.readmodels.runner import ProjectionRunner, all_projections
from registry.settings import ConfigurationError, Settings
from tests.integration.test_catch_up_lanes import reset
from tests.integration.test_projection_crashes import dump, seed
from tests.support import fresh_pg_database

pytestmark = pytest.mark.postgres


def tracking(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {str(name): int(position) for name, position in conn.execute(select(t.tracking))}


def movements(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.serial_movements)).scalar_one())


def test_a_registry_projected_before_0007_upgrades_in_place() -> None:
    """As the version before left it: ``serials`` at the head, both tables written, no
    ``movements`` row (0007's downgrade makes exactly that). The upgrade puts the row at
    ``serials``' position; the next catch-up applies only the newer events, and ends
    with the rows a catch-up from zero writes."""
    with fresh_pg_database() as url:
        settings = Settings(url)
        registry = build_registry(settings)
        engine = make_engine(settings)
        try:
            seed(registry, batches=2, size=200, rng=random.Random(21))
            ProjectionRunner(registry, engine, batch_size=100, lanes=False).catch_up()
            assert migrate.downgrade(settings, "0006")[0].startswith("0007 -> 0006")
            before = tracking(engine)
            assert "movements" not in before and before["serials"] > 0
            written = movements(engine)

            seed(registry, batches=2, size=200, rng=random.Random(22))  # newer events
            migrate.upgrade(settings)
            assert tracking(engine)["movements"] == before["serials"]
            assert movements(engine) == written  # the upgrade writes no rows

            runner = ProjectionRunner(registry, engine, batch_size=100)
            runner.catch_up()
            assert set(runner.positions().values()) == {runner.head()}
            upgraded = dump(engine)

            reset(engine)
            ProjectionRunner(registry, engine, batch_size=100).catch_up()
            assert dump(engine) == upgraded
        finally:
            engine.dispose()
            registry.close()


def test_a_downgrade_waits_for_both_projections_to_stand_together() -> None:
    """Below 0007 one row counts for both tables, so a downgrade while ``serials`` is
    ahead of ``movements`` would lose movements: it is refused, naming the command that
    fixes it, and changes nothing; after that command it goes through."""
    with fresh_pg_database() as url:
        settings = Settings(url)
        registry = build_registry(settings)
        engine = make_engine(settings)
        try:
            seed(registry, batches=1, size=100, rng=random.Random(23))
            directory = all_projections(registry)[0].directory
            ProjectionRunner(registry, engine, [SerialsProjection(directory)]).catch_up()
            ProjectionRunner(registry, engine).positions()  # every row, movements at 0
            ahead = tracking(engine)
            assert ahead["serials"] > ahead["movements"] == 0

            with pytest.raises(ConfigurationError, match="registry project --once") as raised:
                migrate.downgrade(settings, "0006")
            assert f"serials projection is at position {ahead['serials']}" in str(raised.value)
            assert migrate.current_revision(settings) == "0007"
            assert tracking(engine) == ahead

            ProjectionRunner(registry, engine).catch_up()
            migrate.downgrade(settings, "0006")
            assert "movements" not in tracking(engine)
        finally:
            engine.dispose()
            registry.close()
