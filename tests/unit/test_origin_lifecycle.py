"""The lifecycle of an origin detention as pure domain (docs/origins.md): origins,
notification deadlines, rebuttals, a holder's clearance, confirmation; and the
obligation's invalidated surrenders and their replacement."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import uuid4

import pytest

from registry.domain.block_freezes import BlockFreeze
from registry.domain.errors import (
    DetentionNotActive,
    HolderNotNotified,
    InvalidCommand,
    RebuttalAlreadySubmitted,
    RebuttalDeadlinePassed,
    RebuttalNotSubmitted,
    RebuttalPeriodOpen,
)
from registry.domain.obligations import ComplianceObligation
from registry.domain.origin_detentions import (
    DEFAULT_REBUTTAL_DAYS,
    DetentionStatus,
    HolderStatus,
    Origin,
    OriginDetention,
    OriginKind,
    check_evidence_digests,
    check_rebuttal_days,
)
from registry.domain.restriction_guards import (
    check_detentions,
    detained_blocks,
    movable,
    restricted_quantities,
)
from registry.domain.units import SerialBlock, UnitClass, UnitType

P1 = UnitClass(UnitType.CCER, 2024, "P-1")
P1_25 = UnitClass(UnitType.CCER, 2025, "P-1")
DIGEST = "0f" * 32
WHO = "mee/regulator-li"


def day(month: int, d: int) -> datetime:
    return datetime(2026, month, d, 9, 0, tzinfo=UTC)


def detained(days: int | None = None) -> OriginDetention:
    detention = OriginDetention.start("P-1")
    detention.detain(reference="MEE-D-1", reason="flagged region", principal=WHO, at=day(3, 1))
    detention.notify("A", 100, at=day(3, 1), days=days)
    detention.notify("B", 40, at=day(3, 1), days=days)
    return detention


def rebut(detention: OriginDetention, account: str, at: datetime, rebuttal_id: str = "R-1") -> bool:
    return detention.submit_rebuttal(
        account_id=account,
        rebuttal_id=rebuttal_id,
        statement="audited supply chain",
        evidence=[DIGEST],
        principal="huaneng/operator",
        at=at,
    )


def test_worked_example_rebut_clear_ignore_confirm() -> None:
    """P-1 detained on 1 March with the default 30 days: A (100 units, serials 1-100)
    and B (40, serials 101-140) are notified with the deadline 1 March + 30 days =
    31 March 09:00. A rebuts on 10 March (UNDER_REVIEW) and is cleared on 20 March:
    serials 1-100 are released, 101-140 stay detained. On 30 March confirmation is
    refused (B may rebut until 31 March); on 1 April B's rebuttal is refused and the
    detention is confirmed: A stays CLEARED, B is FORFEITED."""
    detention = detained()
    assert DEFAULT_REBUTTAL_DAYS == 30
    assert {h.account_id: h.deadline for h in detention.notified} == {
        "A": day(3, 31),
        "B": day(3, 31),
    }
    a_units, b_units = SerialBlock(P1, 1, 100), SerialBlock(P1, 101, 140)
    assert rebut(detention, "A", day(3, 10))
    assert not rebut(detention, "A", day(3, 11))  # the same rebuttal again: a replay
    a = detention.holder("A")
    assert a is not None and a.status is HolderStatus.UNDER_REVIEW and a.evidence == (DIGEST,)
    assert detention.clear_holder(
        account_id="A", blocks=[a_units], evidence="audit 4", reason="rebutted", principal=WHO,
        at=day(3, 20),
    )  # fmt: skip
    assert detention.detained_parts(a_units) == []
    assert detention.detained_parts(b_units) == [b_units]
    assert movable([a_units], account_id="X", detentions={"P-1": detention}) == (a_units,)
    check_detentions([a_units], {"P-1": detention})  # cleared serials move, anywhere
    with pytest.raises(RebuttalPeriodOpen) as early:
        detention.confirm(reason="x", principal=WHO, at=day(3, 30))
    assert early.value.metadata["account"] == "B"
    with pytest.raises(RebuttalDeadlinePassed):
        rebut(detention, "B", day(4, 1))
    assert detention.confirm(reason="not rebutted", principal=WHO, at=day(4, 1))
    assert not detention.confirm(reason="not rebutted", principal=WHO, at=day(4, 2))  # retry
    assert detention.status is DetentionStatus.CONFIRMED and not detention.is_active
    assert {h.account_id: h.status for h in detention.notified} == {
        "A": HolderStatus.CLEARED,
        "B": HolderStatus.FORFEITED,
    }
    assert [c.change for c in detention.changes] == [
        "DETAINED",
        "REBUTTAL_SUBMITTED",
        "HOLDER_CLEARED",
        "CONFIRMED",
    ]


def test_the_deadline_itself_is_too_late() -> None:
    detention = detained(days=1)
    with pytest.raises(RebuttalDeadlinePassed) as late:
        rebut(detention, "A", day(3, 2))
    assert late.value.metadata["deadline"] == day(3, 2).isoformat()
    assert rebut(detention, "B", datetime(2026, 3, 2, 8, 59, 59, tzinfo=UTC))


def test_rebuttal_guards() -> None:
    detention = detained()
    with pytest.raises(HolderNotNotified):
        rebut(detention, "C", day(3, 2))
    rebut(detention, "A", day(3, 2))
    with pytest.raises(RebuttalAlreadySubmitted):
        rebut(detention, "A", day(3, 3), rebuttal_id="R-2")
    with pytest.raises(RebuttalNotSubmitted):
        detention.clear_holder(
            account_id="B", blocks=[], evidence="e", reason="r", principal=WHO, at=day(3, 4)
        )
    detention.clear(evidence="audit", reason="all cleared", principal=WHO, at=day(3, 5))
    with pytest.raises(DetentionNotActive):
        rebut(detention, "B", day(3, 6))
    with pytest.raises(DetentionNotActive):
        detention.confirm(reason="x", principal=WHO, at=day(3, 6))


def test_an_undecided_rebuttal_does_not_hold_up_confirmation() -> None:
    """A holder under review when the others' deadlines have passed is decided by the
    confirmation: its units are forfeited too (its rebuttal was not accepted)."""
    detention = detained()
    rebut(detention, "A", day(3, 2))
    with pytest.raises(RebuttalPeriodOpen):  # B may still rebut
        detention.confirm(reason="x", principal=WHO, at=day(3, 3))
    detention.confirm(reason="rebuttal rejected", principal=WHO, at=day(3, 31))
    assert {h.status for h in detention.notified} == {HolderStatus.FORFEITED}


def test_evidence_is_named_by_sha256_digests() -> None:
    assert check_evidence_digests([DIGEST, "a" * 64]) == [DIGEST, "a" * 64]
    for bad in ([], ["A" * 64], ["a" * 63], [DIGEST, DIGEST], ["g" * 64]):
        with pytest.raises(InvalidCommand) as caught:
            check_evidence_digests(bad)
        assert caught.value.reason in ("MISSING_EVIDENCE", "INVALID_EVIDENCE_DIGEST")
    for days in (0, 366, True, "30"):
        with pytest.raises(InvalidCommand):
            check_rebuttal_days(days)  # type: ignore[arg-type]


def test_origins_parse_and_match() -> None:
    project = Origin.parse("P-1")
    assert project == Origin.parse("PROJECT:P-1") and project.key == "PROJECT:P-1"
    assert project.matches(P1) and project.matches(P1_25)
    vintage = Origin.parse("UNIT_CLASS:CCER/2024/P-1")
    assert vintage.kind is OriginKind.UNIT_CLASS and vintage.projects == ("P-1",)
    assert vintage.matches(P1) and not vintage.matches(P1_25)
    assert OriginDetention.id_for_origin(project) == OriginDetention.id_for("P-1")
    assert OriginDetention.id_for_origin(vintage) != OriginDetention.id_for("P-1")
    for bad in ("UNIT_CLASS:CEA/2025", "PROVINCE: Yunnan", "UNIT_CLASS:nonsense", "a b"):
        with pytest.raises(InvalidCommand) as caught:
            Origin.parse(bad)
        assert caught.value.reason == "INVALID_ORIGIN"


def test_two_detentions_of_one_unit_count_it_once() -> None:
    whole = detained()
    vintage = OriginDetention.start(Origin.parse("UNIT_CLASS:CCER/2024/P-1"))
    vintage.detain(reference="MEE-D-2", reason="vintage", principal=WHO, at=day(3, 1))
    holding = [SerialBlock(P1, 1, 10), SerialBlock(P1_25, 1, 5)]
    both = detained_blocks(holding, lambda project: [whole, vintage])
    assert sum(b.quantity for b in both) == 15


def test_a_version_1_start_is_a_project_origin() -> None:
    state = {"project": "P-7"}
    OriginDetention.Started.upcast_v1_v2(state)
    assert state["origin"] == "PROJECT:P-7"


def test_invalidated_surrenders_stop_counting_and_are_owed_again() -> None:
    """30 t CCER surrendered; a confirmation invalidates 20: 10 t still count, 20 t are
    owed by 1 May. A surrender of 25 t on 20 April replaces the 20 (the other 5 count as
    a plain surrender); on 2 May a closed year takes no replacement any more."""
    obligation = ComplianceObligation.start("PWR-A", 2025)
    obligation.record_surrender(uuid4(), "CCER", 30)
    obligation.invalidate_surrender(uuid4(), "CCER", 20, "MEE-D-1", date(2026, 5, 1))
    assert obligation.total_surrendered == 10
    assert (obligation.invalidated, obligation.replacement_remaining) == (20, 20)
    assert obligation.accepts_replacement(date(2026, 5, 1))
    obligation.record_surrender(uuid4(), "CEA", 25)
    obligation.record_replacement(uuid4(), 25)
    assert (obligation.replaced, obligation.replacement_remaining) == (20, 0)
    assert obligation.total_surrendered == 35
    assert not obligation.accepts_replacement(date(2026, 5, 2))


def test_restricted_quantities_count_each_unit_once_per_restriction() -> None:
    """Account TRD-A holds P-1 serials 1-100. Two court orders freeze 1-30 and 21-40: 40
    serials are frozen, not 50. The detention of P-1 with TRD-A's serials 1-60 cleared
    leaves 61-100 detained: 40. CEA/2025 1-10, neither frozen nor detained, is absent."""
    cea = UnitClass(UnitType.CEA, 2025)
    detention = OriginDetention.start("P-1")
    detention.detain(reference="D-1", reason="x", principal=WHO, at=day(3, 1))
    detention.notify("TRD-A", 100, at=day(3, 1))
    rebut(detention, "TRD-A", day(3, 2))
    detention.clear_holder(
        account_id="TRD-A", blocks=[SerialBlock(P1, 1, 60)], evidence="e", reason="r",
        principal=WHO, at=day(3, 3),
    )  # fmt: skip
    freezes = [
        BlockFreeze.impose(
            freeze_id=f"F-{first}",
            account_id="TRD-A",
            blocks=[SerialBlock(P1, first, last)],
            order_reference=f"court {first}",
            reason="freeze",
            principal=WHO,
            at=day(3, 1),
        )
        for first, last in ((1, 30), (21, 40))
    ]
    holding = [SerialBlock(cea, 1, 10), SerialBlock(P1, 1, 100)]
    found = restricted_quantities(
        holding, account_id="TRD-A", block_freezes=freezes, detentions={"P-1": detention}
    )
    assert found == {P1: (40, 40)}
