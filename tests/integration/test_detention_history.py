"""Detentions written before origins had kinds still load: a version-1
``OriginDetention.Started`` (a project, no ``origin``) is upcast to a ``PROJECT`` origin,
and the detention it started goes on detaining, is listed, and can be confirmed."""

from __future__ import annotations

from pathlib import Path

from eventsourcing.persistence import StoredEvent

from registry.bootstrap import build_registry
from registry.domain.origin_detentions import OriginDetention, OriginKind
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.settings import Settings
from tests.support import (
    PROJECT_OWNER,
    REGULATOR,
    assert_conserved,
    open_trader,
    register_project,
)

LI = Principal("mee", "regulator-li")
P1 = UnitClass(UnitType.CCER, 2024, "P-1")


def test_a_version_1_detention_loads_detains_and_is_confirmed(tmp_path: Path) -> None:
    """The old store: TRD-A holds 10 units of P-1 (registered, issued into its owner's
    account and transferred to TRD-A), detained by the previous version. Its
    Started event is rewritten as that version stored it (no origin, no class_version)
    into a new store, with every other event as is."""
    old = Settings(f"sqlite:///{tmp_path / 'old.sqlite'}")
    registry = build_registry(old)
    try:
        open_trader(registry, "TRD-A")
        register_project(registry, "P-1")
        registry.issue_units(REGULATOR, "ISS-1", P1, 10, "")
        registry.transfer(
            REGULATOR, "T-1", PROJECT_OWNER, "TRD-A", UnitSelector(UnitType.CCER), 10, ""
        )
        registry.restrictions.detain_origin(LI, "P-1", "MEE-D-1", "flagged")
        rows = registry.recorder.select_notifications(start=1, limit=10_000)
        transcoder = registry.mapper.transcoder
        events = []
        for row in rows:
            state = row.state
            if row.topic == OriginDetention.Started.TOPIC:
                decoded = transcoder.decode(state)
                assert decoded.pop("class_version") == 2 and decoded.pop("origin") == "PROJECT:P-1"
                state = transcoder.encode(decoded)  # as version 1 stored it
            events.append(
                StoredEvent(
                    originator_id=row.originator_id,
                    originator_version=row.originator_version,
                    topic=row.topic,
                    state=state,
                )
            )
    finally:
        registry.close()

    new = Settings(f"sqlite:///{tmp_path / 'new.sqlite'}")
    seeded = build_registry(new)
    try:
        present = {  # what a new store starts with (the national accounts)
            (row.originator_id, row.originator_version)
            for row in seeded.recorder.select_notifications(start=1, limit=10_000)
        }
        seeded.recorder.insert_events(
            [e for e in events if (e.originator_id, e.originator_version) not in present]
        )
    finally:
        seeded.close()

    reopened = build_registry(new)  # a fresh process: replayed from the store
    try:
        detention = reopened.store.find(OriginDetention.id_for("P-1"), OriginDetention)
        assert detention is not None and detention.is_active
        assert (detention.origin.kind, detention.origin.value) == (OriginKind.PROJECT, "P-1")
        assert detention.projects == ("P-1",) and detention.resolved == []  # no new events
        assert [h.account_id for h in detention.notified] == ["TRD-A"]
        moved = reopened.cancel(REGULATOR, "C-1", "TRD-A", UnitSelector(UnitType.CCER), 1, "")
        assert moved.refusal_reason == "ORIGIN_DETAINED"
        [listed] = reopened.restrictions.list_restrictions()
        assert listed.restriction_id == "PROJECT:P-1" and listed.accounts == ("TRD-A",)
        reopened.clock = lambda: detention.notified[0].deadline  # the deadline has come
        confirmed = reopened.origins.confirm(REGULATOR, "P-1", "not rebutted")
        assert confirmed.forfeited == {"TRD-A": 10}
        assert_conserved(reopened)
    finally:
        reopened.close()
