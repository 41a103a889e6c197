"""Judicial block freezes, origin detentions and the market halt. Pure domain, no I/O."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, UUIDAsHex
from eventsourcing.utils import get_topic, resolve_topic

from registry.application.transcodings import SerialBlockTranscoding
from registry.domain import units
from registry.domain.block_freezes import BlockFreeze, FreezeStatus
from registry.domain.errors import (
    Conflict,
    InvalidCommand,
    Refused,
    RegistryError,
    error_for_reason,
)
from registry.domain.market_halt import MarketHalt, MarketStatus
from registry.domain.origin_detentions import DetentionStatus, OriginDetention
from registry.domain.restriction_guards import (
    FrozenSerials,
    check_block_freezes,
    check_detentions,
    check_halt,
    check_unrestricted,
    movable,
)
from registry.domain.restrictions import HALTED_KINDS, RestrictionChange, blocks_from_rows
from registry.domain.transactions import Principal, TransactionKind
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType

AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
LI = Principal("mee", "li")
WANG = Principal("mee", "wang")
CEA25 = UnitClass(UnitType.CEA, 2025)
CEA24 = UnitClass(UnitType.CEA, 2024)
P1 = UnitClass(UnitType.CCER, 2024, "P-0001")
P2 = UnitClass(UnitType.CCER, 2024, "P-0002")
ACCOUNT = "PWR-0001"
ALL_KINDS = list(TransactionKind)


def b(unit_class: UnitClass, first: int, last: int) -> SerialBlock:
    return SerialBlock(unit_class, first, last)


def freeze(
    *blocks: SerialBlock,
    freeze_id: str = "F-2026-001",
    account: str = ACCOUNT,
    order: str = "(2026) Hu 0101 Zhi Bao 17",
) -> BlockFreeze:
    return BlockFreeze.impose(
        freeze_id=freeze_id,
        account_id=account,
        blocks=blocks,
        order_reference=order,
        reason="asset preservation order",
        principal=LI,
        at=AT,
        proposal="mee:P-77",
    )


def detention(project: str = "P-0001", reference: str = "MEE-D-2026-3") -> OriginDetention:
    d = OriginDetention.start(project)
    assert d.detain(reference=reference, reason="suspected double counting", principal=LI, at=AT)
    return d


def halted() -> MarketHalt:
    h = MarketHalt.start()
    assert h.halt(reason="exchange outage", principal=LI, at=AT)
    return h


def refusal(
    blocks: Sequence[SerialBlock],
    *,
    kind: TransactionKind = TransactionKind.TRANSFER,
    source: str | None = ACCOUNT,
    freezes: Sequence[BlockFreeze] = (),
    detentions: dict[str, OriginDetention] | None = None,
    halt: MarketHalt | None = None,
) -> RegistryError | None:
    try:
        check_unrestricted(
            blocks,
            source_account=source,
            kind=kind,
            block_freezes=freezes,
            detentions=detentions,
            halt=halt,
        )
    except RegistryError as error:
        return error
    return None


def reason_of(call: object, *args: object, **kwargs: object) -> str:
    assert callable(call)
    with pytest.raises(RegistryError) as raised:
        call(*args, **kwargs)
    return raised.value.reason


# -- judicial block freezes -------------------------------------------------------------


def test_a_freeze_records_who_when_why_and_its_blocks_sorted_and_joined() -> None:
    f = freeze(b(CEA25, 101, 200), b(CEA25, 1, 100), b(P1, 5, 9))
    assert f.id == BlockFreeze.id_for("F-2026-001")
    assert f.status is FreezeStatus.ACTIVE and f.is_active
    assert f.blocks == [["CCER/2024/P-0001", 5, 9], ["CEA/2025", 1, 200]]
    assert f.frozen_blocks == (b(P1, 5, 9), b(CEA25, 1, 200))
    assert f.quantity == 205
    assert (f.imposed_by, f.imposed_at, f.reason) == ("mee/li", AT, "asset preservation order")
    assert f.changes == (
        RestrictionChange(
            "IMPOSED",
            AT,
            "mee/li",
            "asset preservation order",
            reference="(2026) Hu 0101 Zhi Bao 17",
            proposal="mee:P-77",
        ),
    )


def test_a_frozen_serial_anywhere_in_a_moved_block_refuses_and_names_the_freeze() -> None:
    f = freeze(b(CEA25, 101, 200))
    for moved in (b(CEA25, 50, 101), b(CEA25, 200, 300), b(CEA25, 150, 160), b(CEA25, 1, 1000)):
        error = refusal([b(CEA24, 1, 10), moved], freezes=[f])
        assert error is not None and error.reason == "SERIALS_FROZEN"
        assert isinstance(error, Refused)
        assert error.metadata["freeze"] == "F-2026-001"
        assert error.metadata["order_reference"] == "(2026) Hu 0101 Zhi Bao 17"
        assert error.metadata["account"] == ACCOUNT
        assert error.metadata["block"] == str(moved)
        assert error.metadata["frozen_block"] == "CEA/2025#101-200"
    error = refusal([b(CEA25, 50, 101)], freezes=[f])
    assert error is not None and error.metadata["serials"] == "CEA/2025#101-101"


def test_a_freeze_blocks_nothing_else() -> None:
    f = freeze(b(CEA25, 101, 200))
    assert refusal([b(CEA25, 1, 100), b(CEA25, 201, 300)], freezes=[f]) is None  # adjacent
    assert refusal([b(CEA24, 101, 200)], freezes=[f]) is None  # other class
    assert refusal([b(CEA25, 101, 200)], freezes=[f], source="TRD-0002") is None  # other account
    assert refusal([b(CEA25, 101, 200)], freezes=[f], source=None) is None  # an issuance
    assert refusal([], freezes=[f]) is None


def test_a_freeze_refuses_every_kind_of_movement_out_of_the_account() -> None:
    f = freeze(b(CEA25, 101, 200))
    for kind in ALL_KINDS:
        error = refusal([b(CEA25, 150, 150)], kind=kind, freezes=[f])
        assert error is not None and error.reason == "SERIALS_FROZEN", kind


def test_release_restores_movement_and_is_recorded_with_its_evidence() -> None:
    f = freeze(b(CEA25, 101, 200))
    f.collect_events()
    assert f.release(
        reason="order discharged",
        evidence="(2026) Hu 0101 Min Chu 9",
        principal=WANG,
        at=AT + timedelta(days=30),
        proposal="mee:P-80",
    )
    assert f.status is FreezeStatus.RELEASED and not f.is_active
    assert (f.released_by, f.release_evidence) == ("mee/wang", "(2026) Hu 0101 Min Chu 9")
    assert refusal([b(CEA25, 101, 200)], freezes=[f]) is None
    assert [c.change for c in f.changes] == ["IMPOSED", "RELEASED"]
    assert f.changes[1].evidence == "(2026) Hu 0101 Min Chu 9"
    [event] = f.collect_events()
    assert isinstance(event, BlockFreeze.Released) and event.principal == "mee/wang"


def test_a_repeated_release_is_a_replay_a_different_one_is_refused() -> None:
    f = freeze(b(CEA25, 1, 10))
    assert f.release(reason="r", evidence="E-1", principal=WANG, at=AT)
    f.collect_events()
    assert not f.release(reason="r again", evidence="E-1", principal=WANG, at=AT)
    with pytest.raises(Refused) as raised:
        f.release(reason="r", evidence="E-2", principal=WANG, at=AT)
    assert raised.value.reason == "FREEZE_NOT_ACTIVE"
    assert raised.value.metadata["freeze"] == "F-2026-001"
    assert f.collect_events() == []


def test_a_retried_freeze_is_the_same_request_however_it_is_cut() -> None:
    f = freeze(b(CEA25, 1, 200))
    f.ensure_same_request(
        account_id=ACCOUNT,
        blocks=[b(CEA25, 101, 200), b(CEA25, 1, 100)],
        order_reference="(2026) Hu 0101 Zhi Bao 17",
    )
    for account, blocks, order in (
        ("TRD-0002", [b(CEA25, 1, 200)], "(2026) Hu 0101 Zhi Bao 17"),
        (ACCOUNT, [b(CEA25, 1, 199)], "(2026) Hu 0101 Zhi Bao 17"),
        (ACCOUNT, [b(CEA25, 1, 200)], "(2026) Hu 0101 Zhi Bao 18"),
    ):
        with pytest.raises(Conflict) as raised:
            f.ensure_same_request(account_id=account, blocks=blocks, order_reference=order)
        assert raised.value.reason == "FREEZE_EXISTS_WITH_DIFFERENT_CONTENT"


def test_overlapping_freezes_are_each_found_by_bisection() -> None:
    """A long frozen block that starts early still covers a block past a short later one."""
    long = freeze(b(CEA25, 1, 1000), freeze_id="F-A", order="case A")
    short = freeze(b(CEA25, 10, 20), freeze_id="F-B", order="case B")
    error = refusal([b(CEA25, 500, 510)], freezes=[short, long])
    assert error is not None and error.metadata["freeze"] == "F-A"
    error = refusal([b(CEA25, 15, 15)], freezes=[long, short])
    assert error is not None and error.metadata["freeze"] in {"F-A", "F-B"}
    long.release(reason="r", evidence="E", principal=WANG, at=AT)
    assert refusal([b(CEA25, 500, 510)], freezes=[short, long]) is None
    error = refusal([b(CEA25, 15, 15)], freezes=[long, short])
    assert error is not None and error.metadata["freeze"] == "F-B"


def test_the_frozen_index_agrees_with_a_brute_force_check() -> None:
    rng = random.Random(20260302)
    classes = [CEA24, CEA25, P1]
    for _ in range(300):
        frozen = [
            freeze(
                *[
                    b(rng.choice(classes), s, s + rng.randrange(50))
                    for s in rng.sample(range(1, 400, 60), rng.randrange(1, 4))
                ],
                freeze_id=f"F-{i}",
                order=f"case {i}",
            )
            for i in range(rng.randrange(0, 4))
        ]
        index = FrozenSerials(ACCOUNT, frozen)
        for _ in range(20):
            first = rng.randrange(1, 500)
            moved = b(rng.choice(classes), first, first + rng.randrange(30))
            expected = any(moved.overlaps(x) for f in frozen for x in f.frozen_blocks)
            found = index.overlap(moved)
            assert (found is not None) == expected
            if found is not None:
                assert moved.overlaps(found[0]) and found[0] in found[1].frozen_blocks


def test_freeze_validation_names_each_problem_and_creates_nothing() -> None:
    def impose(**changes: object) -> str:
        args: dict[str, object] = {
            "freeze_id": "F-1",
            "account_id": ACCOUNT,
            "blocks": [b(CEA25, 1, 10)],
            "order_reference": "case 1",
            "reason": "court order",
            "principal": LI,
            "at": AT,
        }
        args.update(changes)
        with pytest.raises(InvalidCommand) as raised:
            BlockFreeze.impose(**args)  # type: ignore[arg-type]
        return raised.value.reason

    assert impose(order_reference="") == "MISSING_REFERENCE"
    assert impose(order_reference="   ") == "MISSING_REFERENCE"
    assert impose(order_reference="x" * 201) == "INVALID_REFERENCE"
    assert impose(order_reference="case\n1") == "INVALID_REFERENCE"
    assert impose(blocks=[]) == "NO_BLOCKS"
    assert impose(blocks=[b(CEA25, 1, 10), b(CEA25, 10, 20)]) == "OVERLAPPING_BLOCKS"
    assert impose(blocks=[b(CEA25, 5, 6), b(CEA25, 1, 10)]) == "OVERLAPPING_BLOCKS"
    assert impose(reason="") == "MISSING_FIELD"
    assert impose(reason="x" * 501) == "INVALID_REASON"
    assert impose(freeze_id="") == "MISSING_ID"
    assert impose(freeze_id="has space") == "INVALID_ID"
    assert impose(account_id="pwr 1") == "INVALID_ACCOUNT_ID"
    with pytest.raises(ValueError, match="timezone-aware"):
        impose(at=datetime(2026, 3, 2))


def test_release_validation_comes_before_any_event() -> None:
    f = freeze(b(CEA25, 1, 10))
    f.collect_events()
    assert (
        reason_of(f.release, reason="r", evidence="", principal=WANG, at=AT) == "MISSING_EVIDENCE"
    )
    assert (
        reason_of(f.release, reason="r", evidence="e" * 201, principal=WANG, at=AT)
        == "INVALID_REFERENCE"
    )
    assert reason_of(f.release, reason="", evidence="E", principal=WANG, at=AT) == "MISSING_FIELD"
    assert f.collect_events() == [] and f.is_active


def test_blocks_from_json_rows() -> None:
    assert blocks_from_rows([["CEA/2025", 1, 10], ("CCER/2024/P-0001", 3, 3)]) == [
        b(CEA25, 1, 10),
        b(P1, 3, 3),
    ]
    for bad in (
        ["CEA/2025", 1],
        "CEA/2025#1-10",
        ["CEA/2025", 0, 10],
        ["CEA/2025", 10, 9],
        ["CEA/2025", True, 9],
        ["CEA/2025", 1.0, 9],
        [2025, 1, 9],
    ):
        with pytest.raises(InvalidCommand) as raised:
            blocks_from_rows([["CEA/2025", 1, 10], bad])
        assert (raised.value.reason, raised.value.metadata["field"]) == (
            "INVALID_BLOCK",
            "blocks[1]",
        )
    with pytest.raises(InvalidCommand) as raised:
        blocks_from_rows([["XYZ/2025", 1, 10]])
    assert raised.value.reason == "UNKNOWN_UNIT_TYPE"


# -- origin detentions --------------------------------------------------------------------


def test_a_detention_refuses_its_projects_units_wherever_and_however_they_move() -> None:
    d = detention()
    assert d.id == OriginDetention.id_for("P-0001")
    assert d.status is DetentionStatus.DETAINED
    for kind in ALL_KINDS:
        for source in (ACCOUNT, "TRD-0002", None):
            error = refusal(
                [b(CEA25, 1, 10), b(P1, 5, 9), b(P1, 20, 20)],
                kind=kind,
                source=source,
                detentions={"P-0001": d},
            )
            assert error is not None and error.reason == "ORIGIN_DETAINED", (kind, source)
            assert isinstance(error, Refused)
            assert error.metadata == {
                "project": "P-0001",
                "origin": "PROJECT:P-0001",
                "detention": "MEE-D-2026-3",
                "block": "CCER/2024/P-0001#5-9",
                "quantity": "6",
            }


def test_a_detention_leaves_allowances_and_other_projects_alone() -> None:
    asked: list[str] = []

    def lookup(project: str) -> OriginDetention | None:
        asked.append(project)
        return {"P-0001": detention()}.get(project)

    blocks = [b(CEA25, 1, 10), b(CEA24, 1, 10), b(P2, 1, 10)]
    for kind in ALL_KINDS:
        assert refusal(blocks, kind=kind, detentions={"P-0001": detention()}) is None
        check_detentions(blocks, lookup)
    assert set(asked) == {"P-0002"}  # CEA units have no project to look up
    assert refusal([*blocks, b(P1, 1, 1)], detentions=None) is None
    with pytest.raises(Refused) as raised:
        check_detentions([*blocks, b(P1, 1, 1)], lookup)
    assert raised.value.reason == "ORIGIN_DETAINED"


def test_clearance_restores_movement_and_records_its_evidence() -> None:
    d = detention()
    assert d.clear(
        evidence="MEE-C-2026-9",
        reason="verification upheld",
        principal=WANG,
        at=AT + timedelta(days=60),
        proposal="mee:P-90",
    )
    assert d.status is DetentionStatus.CLEARED and not d.is_active
    assert refusal([b(P1, 1, 10)], detentions={"P-0001": d}) is None
    assert [(c.change, c.principal, c.reference, c.evidence) for c in d.changes] == [
        ("DETAINED", "mee/li", "MEE-D-2026-3", ""),
        ("CLEARED", "mee/wang", "MEE-D-2026-3", "MEE-C-2026-9"),
    ]


def test_detention_replays_refusals_and_a_new_detention_after_clearance() -> None:
    d = detention()
    d.collect_events()
    assert not d.detain(reference="MEE-D-2026-3", reason="retry", principal=LI, at=AT)
    with pytest.raises(Refused) as raised:
        d.detain(reference="MEE-D-2026-4", reason="again", principal=LI, at=AT)
    assert raised.value.reason == "ORIGIN_ALREADY_DETAINED"
    assert raised.value.metadata == {"project": "P-0001", "detention": "MEE-D-2026-3"}
    assert d.clear(evidence="E-1", reason="ok", principal=WANG, at=AT)
    assert not d.clear(evidence="E-1", reason="retry", principal=WANG, at=AT)
    assert (
        reason_of(d.clear, evidence="E-2", reason="x", principal=WANG, at=AT)
        == "DETENTION_NOT_ACTIVE"
    )
    assert not d.detain(reference="MEE-D-2026-3", reason="late retry", principal=LI, at=AT)
    assert not d.is_active
    assert d.detain(reference="MEE-D-2026-5", reason="new findings", principal=LI, at=AT)
    assert refusal([b(P1, 1, 1)], detentions={"P-0001": d}) is not None
    assert [type(e).__name__ for e in d.collect_events()] == ["Cleared", "Detained"]


def test_a_project_never_detained_cannot_be_cleared() -> None:
    d = OriginDetention.start("P-0001")
    assert d.status is DetentionStatus.NOT_DETAINED
    assert refusal([b(P1, 1, 1)], detentions={"P-0001": d}) is None
    assert (
        reason_of(d.clear, evidence="E", reason="r", principal=WANG, at=AT)
        == "DETENTION_NOT_ACTIVE"
    )


def test_detention_validation_names_each_problem() -> None:
    assert reason_of(OriginDetention.start, "") == "MISSING_ORIGIN"
    assert reason_of(OriginDetention.start, "CCER/2024/P-0001") == "INVALID_ORIGIN"
    assert reason_of(OriginDetention.start, "P 0001") == "INVALID_ORIGIN"
    assert reason_of(OriginDetention.start, "P" * 129) == "INVALID_ORIGIN"
    assert reason_of(OriginDetention.start, "P-0001", "CEA") == "NOT_CCER_ORIGIN"
    assert reason_of(OriginDetention.start, "P-0001", "VER") == "UNKNOWN_UNIT_TYPE"
    d = OriginDetention.start("P-0001")
    d.collect_events()
    assert reason_of(d.detain, reference="", reason="r", principal=LI, at=AT) == "MISSING_REFERENCE"
    assert reason_of(d.detain, reference="D", reason=" ", principal=LI, at=AT) == "MISSING_FIELD"
    assert d.detain(reference="D", reason="r", principal=LI, at=AT)
    assert reason_of(d.clear, evidence=" ", reason="r", principal=WANG, at=AT) == "MISSING_EVIDENCE"
    assert [type(e).__name__ for e in d.collect_events()] == ["Detained"]


# -- market halt -------------------------------------------------------------------------


def test_a_halt_refuses_settlement_only() -> None:
    h = halted()
    assert h.id == MarketHalt.id_for() and h.status is MarketStatus.HALTED
    assert frozenset({TransactionKind.SETTLEMENT}) == HALTED_KINDS
    for kind in ALL_KINDS:
        error = refusal([b(CEA25, 1, 10)], kind=kind, halt=h)
        if kind is TransactionKind.SETTLEMENT:
            assert error is not None and error.reason == "MARKET_HALTED"
            assert isinstance(error, Refused)
            assert error.metadata["halted_by"] == "mee/li"
            assert error.metadata["halt_reason"] == "exchange outage"
        else:
            assert error is None, kind
    with pytest.raises(Refused):
        check_halt("SETTLEMENT", h)  # the kind as the application's string
    check_halt(TransactionKind.SURRENDER, h)
    check_halt(TransactionKind.SETTLEMENT, None)


def test_lifting_the_halt_resumes_settlement() -> None:
    h = halted()
    assert h.lift(
        reason="exchange restored", principal=WANG, at=AT + timedelta(hours=2), proposal="mee:P-91"
    )
    assert h.status is MarketStatus.OPEN
    assert refusal([b(CEA25, 1, 10)], kind=TransactionKind.SETTLEMENT, halt=h) is None
    assert [(c.change, c.principal, c.reason, c.proposal) for c in h.changes] == [
        ("HALTED", "mee/li", "exchange outage", ""),
        ("LIFTED", "mee/wang", "exchange restored", "mee:P-91"),
    ]
    assert (h.lifted_by, h.lifted_at) == ("mee/wang", AT + timedelta(hours=2))


def test_halt_and_lift_replays_and_refusals() -> None:
    h = MarketHalt.start()
    assert reason_of(h.lift, reason="r", principal=WANG, at=AT) == "MARKET_NOT_HALTED"
    assert h.halt(reason="outage", principal=LI, at=AT)
    assert not h.halt(reason="outage", principal=LI, at=AT)
    assert reason_of(h.halt, reason="another", principal=LI, at=AT) == "MARKET_ALREADY_HALTED"
    assert h.lift(reason="restored", principal=WANG, at=AT)
    assert not h.lift(reason="restored", principal=WANG, at=AT)
    assert reason_of(h.lift, reason="other", principal=WANG, at=AT) == "MARKET_NOT_HALTED"
    assert reason_of(h.halt, reason="", principal=LI, at=AT) == "MISSING_FIELD"
    assert h.halt(reason="outage", principal=LI, at=AT)  # a new halt, same words
    assert [type(e).__name__ for e in h.collect_events()] == [
        "Started",
        "Halted",
        "Lifted",
        "Halted",
    ]


# -- the combined guard and FIFO selection ----------------------------------------------------


def test_the_broadest_restriction_is_named_first() -> None:
    f, d, h = freeze(b(P1, 1, 10)), detention(), halted()
    blocks = [b(P1, 1, 10)]
    every = {"freezes": [f], "detentions": {"P-0001": d}, "halt": h}
    settle = refusal(blocks, kind=TransactionKind.SETTLEMENT, **every)  # type: ignore[arg-type]
    transfer = refusal(blocks, kind=TransactionKind.TRANSFER, **every)  # type: ignore[arg-type]
    assert settle is not None and settle.reason == "MARKET_HALTED"
    assert transfer is not None and transfer.reason == "ORIGIN_DETAINED"
    d.clear(evidence="E", reason="r", principal=WANG, at=AT)
    transfer = refusal(blocks, kind=TransactionKind.TRANSFER, **every)  # type: ignore[arg-type]
    assert transfer is not None and transfer.reason == "SERIALS_FROZEN"


def test_movable_skips_restricted_units_so_fifo_takes_free_ones() -> None:
    holding = units.merge(
        [*(b(CEA25, 10 * i + 1, 10 * i + 5) for i in range(1000)), b(P1, 1, 100), b(P2, 1, 100)]
    )
    f = freeze(b(CEA25, 1, 2), b(CEA25, 11, 35), b(P2, 50, 60))
    index = FrozenSerials(ACCOUNT, [f])
    free = movable(
        holding, account_id=ACCOUNT, block_freezes=index, detentions={"P-0001": detention()}
    )
    cea = [x for x in free if x.unit_class == CEA25]
    assert cea[:3] == [b(CEA25, 3, 5), b(CEA25, 41, 45), b(CEA25, 51, 55)]
    assert b(P2, 1, 49) in free and b(P2, 61, 100) in free
    assert all(x.unit_class != P1 for x in free)
    assert units.total(holding) - units.total(free) == 2 + 15 + 11 + 100
    taken, _ = units.take(free, UnitSelector(UnitType.CEA), 2000)
    check_block_freezes(taken, source_account=ACCOUNT, block_freezes=index)
    taken, _ = units.take(free, UnitSelector(UnitType.CCER), 89)  # all of P-0002 not frozen
    check_unrestricted(
        taken,
        source_account=ACCOUNT,
        kind=TransactionKind.SURRENDER,
        block_freezes=[f],
        detentions={"P-0001": detention()},
    )
    assert movable(holding, account_id="TRD-0002", block_freezes=[f]) == holding


# -- errors, topics and snapshots ---------------------------------------------------------


NEW_REFUSALS = {
    "SERIALS_FROZEN",
    "ORIGIN_DETAINED",
    "MARKET_HALTED",
    "FREEZE_NOT_ACTIVE",
    "ORIGIN_ALREADY_DETAINED",
    "DETENTION_NOT_ACTIVE",
    "MARKET_ALREADY_HALTED",
    "MARKET_NOT_HALTED",
}


def test_recorded_refusals_rebuild_as_their_own_types() -> None:
    for reason in NEW_REFUSALS:
        error = error_for_reason(reason, "m", freeze="F-1")
        assert isinstance(error, Refused) and type(error) is not Refused
        assert (error.reason, error.metadata) == (reason, {"freeze": "F-1"})
    conflict = error_for_reason("FREEZE_EXISTS_WITH_DIFFERENT_CONTENT", "m")
    assert isinstance(conflict, Conflict) and type(conflict) is not Conflict


def test_event_topics_are_stable() -> None:
    assert BlockFreeze.Imposed.TOPIC == "registry.BlockFreeze.Imposed"
    assert BlockFreeze.Released.TOPIC == "registry.BlockFreeze.Released"
    assert OriginDetention.Detained.TOPIC == "registry.OriginDetention.Detained"
    assert OriginDetention.Cleared.TOPIC == "registry.OriginDetention.Cleared"
    assert MarketHalt.Halted.TOPIC == "registry.MarketHalt.Halted"
    assert MarketHalt.Lifted.TOPIC == "registry.MarketHalt.Lifted"


def json_round_trip(aggregate: Aggregate) -> Aggregate:
    """A snapshot through the store's JSON transcoder, as the application stores it."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), SerialBlockTranscoding()):
        transcoder.register(transcoding)
    snapshot = Snapshot.take(aggregate)
    state = transcoder.decode(transcoder.encode(snapshot.state))
    restored = Snapshot(
        originator_id=snapshot.originator_id,
        originator_version=snapshot.originator_version,
        timestamp=snapshot.timestamp,
        topic=snapshot.topic,
        state=state,
    ).mutate(None)
    assert isinstance(restored, type(aggregate))
    return restored


def test_snapshots_round_trip_and_still_restrict() -> None:
    f, d, h = freeze(b(CEA25, 101, 200), b(P1, 1, 5)), detention(), halted()
    for restore in (lambda a: Snapshot.take(a).mutate(None), json_round_trip):
        f2, d2, h2 = restore(f), restore(d), restore(h)
        assert isinstance(f2, BlockFreeze) and isinstance(d2, OriginDetention)
        assert isinstance(h2, MarketHalt)
        assert f2.frozen_blocks == f.frozen_blocks and f2.changes == f.changes
        assert (d2.status, d2.references, d2.changes) == (d.status, d.references, d.changes)
        assert (h2.status, h2.halted_at, h2.changes) == (h.status, AT, h.changes)
        error = refusal([b(CEA25, 200, 201)], freezes=[f2])
        assert error is not None and error.reason == "SERIALS_FROZEN"
        error = refusal([b(P1, 9, 9)], source=None, detentions={"P-0001": d2})
        assert error is not None and error.reason == "ORIGIN_DETAINED"
        error = refusal([b(CEA25, 1, 1)], kind=TransactionKind.SETTLEMENT, halt=h2)
        assert error is not None and error.reason == "MARKET_HALTED"
        assert f2.release(reason="r", evidence="E", principal=WANG, at=AT)
        assert d2.clear(evidence="E", reason="r", principal=WANG, at=AT)
        assert h2.lift(reason="r", principal=WANG, at=AT)


# -- stored topics ------------------------------------------------------------------------


def test_the_restrictions_keep_their_stored_topics_whatever_module_holds_them() -> None:
    """Stored events name their class by topic: the classes set it explicitly, so moving
    them between modules (they were all in ``registry.domain.freezes``) changes nothing
    stored, and events written before still load."""
    expected = {
        BlockFreeze: ("Created", "Imposed", "Released"),
        OriginDetention: ("Created", "Started", "Detained", "Cleared"),
        MarketHalt: ("Created", "Started", "Halted", "Lifted"),
    }
    for aggregate, events in expected.items():
        name = aggregate.__name__
        assert get_topic(aggregate) == f"registry.{name}"
        assert resolve_topic(f"registry.{name}") is aggregate
        for event in events:
            cls = getattr(aggregate, event)
            assert get_topic(cls) == f"registry.{name}.{event}"
            assert resolve_topic(f"registry.{name}.{event}") is cls
