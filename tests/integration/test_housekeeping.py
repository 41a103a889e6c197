"""Housekeeping on every backend: due holds are released and due proposals recorded as
expired, found from the log's hold events without scanning every hold ever placed;
what is not due, or already ended, is left alone."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from registry.application import Registry
from registry.application.housekeeping import HOLD_TOPICS, PROPOSAL_TOPICS, Housekeeping
from registry.domain.holds import HoldStatus
from registry.domain.proposals import Proposal, ProposalStatus
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import (
    EXCHANGE,
    REGULATOR,
    FakeClock,
    assert_conserved,
    open_company,
    open_trader,
)

CEA = UnitSelector(UnitType.CEA)


def test_due_holds_and_proposals_expire_once(registry: Registry, clock: FakeClock) -> None:
    open_company(registry, "PWR-0001")
    open_trader(registry, "TRD-0001")
    registry.issue_units(REGULATOR, "ISS-1", UnitClass(UnitType.CEA, 2025), 1_000, "")
    registry.transfer(REGULATOR, "T-1", "CN-ISSUANCE", "PWR-0001", CEA, 1_000, "")
    for hold_id, seconds in (("H-SHORT", 60), ("H-LONG", 3_600), ("H-SETTLED", 60)):
        assert registry.place_hold(EXCHANGE, hold_id, "PWR-0001", CEA, 100, seconds).ok
    registry.release_hold(EXCHANGE, "H-SETTLED")  # ended before it was due
    registry.proposals.propose(
        Principal("mee", "li"),
        "P-1",
        "MARKET_HALT",
        {"reason": "inquiry"},
        "urgent",
        validity_seconds=3_600,
    )
    ticks = iter(range(0, 10_000, 100))
    chores = Housekeeping(
        registry, hold_seconds=1, proposal_seconds=1, monotonic=lambda: float(next(ticks))
    )

    assert chores.tick().holds_expired == 0  # nothing due yet
    clock.advance(61)
    done = chores.tick()
    assert (done.holds_expired, done.proposals_expired) == (1, 0)
    assert registry.get_hold(EXCHANGE.party, "H-SHORT").status is HoldStatus.EXPIRED
    assert registry.get_hold(EXCHANGE.party, "H-LONG").status is HoldStatus.ACTIVE
    clock.advance(2 * 3600)
    done = chores.tick()
    assert (done.holds_expired, done.proposals_expired) == (1, 1)
    assert registry.proposals.get("mee", "P-1").status is ProposalStatus.EXPIRED
    assert chores.tick() == type(done)()  # nothing left to do
    held = {h.unit_class.key: h.held for h in registry.get_holdings("PWR-0001")}
    assert held == {"CEA/2025": 0}
    assert_conserved(registry)


def test_a_sweep_reads_only_what_the_log_gained_since_the_last(
    registry: Registry, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no hold in the log, each sweep used to read the whole log again (its
    position moved only on hold events): 683 ms of PostgreSQL a sweep after a 10x
    year. Now a sweep starts after the head the previous one read, and still finds a
    hold placed since: here the first sweep reads from position 1, the second from
    just after the head at the first, and the hold placed between expires."""
    open_company(registry, "PWR-0001")
    registry.issue_units(REGULATOR, "ISS-1", UnitClass(UnitType.CEA, 2025), 1_000, "")
    registry.transfer(REGULATOR, "T-1", "CN-ISSUANCE", "PWR-0001", CEA, 1_000, "")
    starts: list[int | None] = []
    select = registry.recorder.select_notifications

    def recorded(start: int | None, limit: int, *args: Any, **kwargs: Any) -> Any:
        if list(kwargs.get("topics", ())) == list(HOLD_TOPICS):  # the hold sweep's reads
            starts.append(start)
        return select(start, limit, *args, **kwargs)

    monkeypatch.setattr(registry.recorder, "select_notifications", recorded)
    ticks = iter(range(0, 10_000, 100))
    chores = Housekeeping(
        registry, hold_seconds=1, proposal_seconds=10**6, monotonic=lambda: float(next(ticks))
    )
    assert chores.tick().holds_expired == 0
    head = registry.recorder.max_notification_id()
    assert starts == [1]
    assert registry.place_hold(EXCHANGE, "H-1", "PWR-0001", CEA, 100, 60).ok
    clock.advance(61)
    assert chores.tick().holds_expired == 1
    assert starts[1] == (head or 0) + 1
    assert registry.get_hold(EXCHANGE.party, "H-1").status is HoldStatus.EXPIRED


def test_the_proposals_sweep_reads_only_what_the_log_gained_and_keeps_the_pending(
    registry: Registry, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proposals sweep scanned the whole log by topic every minute (``originators``
    from position 1). Now it keeps the pending proposals from the proposal events
    after the head the previous sweep read. Worked through: P-OLD (valid 1 h) and
    P-DONE (valid 1 h) are proposed before the first sweep, which reads from position
    1 and expires nothing; P-DONE is then approved and P-NEW (valid 60 s) proposed.
    After 61 s the second sweep reads from just after the first's head and expires
    P-NEW alone; after two more hours the third expires P-OLD (proposed before the
    first sweep, kept pending in between), and P-DONE, approved, is never loaded."""
    regulator, approver = Principal("mee", "li"), Principal("mee", "wang")
    for proposal_id in ("P-OLD", "P-DONE"):
        registry.proposals.propose(
            regulator, proposal_id, "MARKET_HALT", {"reason": "inquiry"}, "urgent", 7_200
        )
    starts: list[int | None] = []
    select = registry.recorder.select_notifications

    def recorded(start: int | None, limit: int, *args: Any, **kwargs: Any) -> Any:
        if list(kwargs.get("topics", ())) == list(PROPOSAL_TOPICS):
            starts.append(start)
        return select(start, limit, *args, **kwargs)

    monkeypatch.setattr(registry.recorder, "select_notifications", recorded)
    loaded: list[list[UUID]] = []
    expire_due = registry.proposals.expire_due

    def looked_at(among: Any = None) -> Any:
        loaded.append(list(among))
        return expire_due(among)

    monkeypatch.setattr(registry.proposals, "expire_due", looked_at)
    ticks = iter(range(0, 10_000, 100))
    chores = Housekeeping(
        registry, hold_seconds=10**6, proposal_seconds=1, monotonic=lambda: float(next(ticks))
    )
    assert chores.tick().proposals_expired == 0
    assert starts == [1]
    head = registry.recorder.max_notification_id() or 0
    registry.proposals.approve(approver, "mee", "P-DONE")
    registry.proposals.propose(
        regulator, "P-NEW", "MARKET_HALT", {"reason": "inquiry"}, "urgent", 3_600
    )
    clock.advance(3_601)
    assert chores.tick().proposals_expired == 1
    assert starts[1] == head + 1
    assert registry.proposals.get("mee", "P-NEW").status is ProposalStatus.EXPIRED
    assert registry.proposals.get("mee", "P-OLD").status is ProposalStatus.PENDING
    clock.advance(2 * 3_600)
    assert chores.tick().proposals_expired == 1
    assert registry.proposals.get("mee", "P-OLD").status is ProposalStatus.EXPIRED
    assert registry.proposals.get("mee", "P-DONE").status is ProposalStatus.EXECUTED
    old, new = (Proposal.id_for("mee", p) for p in ("P-OLD", "P-NEW"))
    assert loaded == [[old, Proposal.id_for("mee", "P-DONE")], [old, new], [old]]
