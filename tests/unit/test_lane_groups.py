"""Which projections share a catch-up lane (``registry.readmodels.lanes``)."""

from __future__ import annotations

from typing import Any

from registry.persistence.bulk import Writer
from registry.readmodels import tables as t
from registry.readmodels.deferred_indexes import DEFERRED_INDEXES, DEFERRED_KEYS, deferred_indexes
from registry.readmodels.lanes import LANES, lane_groups
from registry.readmodels.projections import AccountDirectory, Batch, Projection
from registry.readmodels.runner import PROJECTION_NAMES, all_projections


class Extra(Projection):
    """A projection no lane names."""

    name = "extra"
    tables = ()
    topics = frozenset()

    def apply(self, out: Writer, batch: Batch) -> None:
        pass


def names(groups: list[list[Projection]]) -> list[list[str]]:
    return [[p.name for p in group] for group in groups]


def test_every_projection_is_in_exactly_one_lane() -> None:
    placed = [name for lane in LANES for name in lane]
    assert sorted(placed) == sorted(PROJECTION_NAMES)


def test_the_six_projections_make_three_lanes_and_an_unnamed_one_its_own() -> None:
    registry: Any = None  # the directory's loader is never called here
    projections = [*all_projections(registry), Extra(AccountDirectory(lambda _: None))]
    assert names(lane_groups(projections)) == [
        ["serials"],
        ["history", "transactions"],
        ["accounts", "holdings", "supply"],
        ["extra"],
    ]


def test_a_rebuild_of_one_projection_is_one_lane() -> None:
    registry: Any = None
    [serials] = [p for p in all_projections(registry, "__rebuild") if p.name == "serials"]
    assert names(lane_groups([serials])) == [["serials"]]


def test_the_deferred_indexes_are_the_read_models_own() -> None:
    """A renamed index would silently stop being deferred: every name must exist."""
    indexes = {i.name for table in t.metadata.sorted_tables for i in table.indexes}
    assert indexes >= DEFERRED_INDEXES
    assert set(t.metadata.tables) >= DEFERRED_KEYS
    registry: Any = None
    deferred = deferred_indexes(all_projections(registry))
    assert sorted(d.name for d in deferred) == sorted(
        [*DEFERRED_INDEXES, "rm_account_history_pkey", "rm_serial_movements_pkey"]
    )
