"""Use cases the gRPC API serves: verified emissions and compliance status, allocation
tables, idempotent account state changes and reading the event log. Every case runs on
memory, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from eventsourcing.domain import Snapshot

from registry.application import (
    AllocationRow,
    ComplianceState,
    EmissionsRow,
    EmissionsRowStatus,
    LoggedEvent,
    Registry,
    RowOutcome,
    account_events,
    read_events,
)
from registry.application.commands import MAX_BATCH
from registry.domain.accounts import Account, AccountState, AccountType, Holder
from registry.domain.errors import (
    AccountStateUnchanged,
    InvalidCommand,
    RequestExistsWithDifferentContent,
    RowsInvalid,
    TransactionExistsWithDifferentContent,
    UnknownAccount,
    Violation,
)
from registry.domain.obligations import ComplianceObligation
from registry.domain.rules import ComplianceRules
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import PROJECT_OWNER, REGULATOR, open_company, open_trader, register_project

CEA25 = UnitClass(UnitType.CEA, 2025)
CCER = UnitClass(UnitType.CCER, 2024, "P-0001")
ANY_CEA = UnitSelector(UnitType.CEA)
RESERVE = "CN-ALLOCATION-RESERVE"


@pytest.fixture
def funded(registry: Registry) -> Registry:
    """PWR-0001, PWR-0002 (compliance) and TRD-0001; 5,000 CEA 2025 in the reserve,
    1,000 CCER in the project owner's account PRJ-0001."""
    open_company(registry, "PWR-0001")
    open_company(registry, "PWR-0002")
    open_trader(registry, "TRD-0001")
    registry.issue_units(REGULATOR, "ISS-1", CEA25, 5000, "vintage 2025")
    register_project(registry, "P-0001", PROJECT_OWNER)
    registry.issue_units(REGULATOR, "ISS-2", CCER, 1000, "project P-0001")
    registry.transfer(REGULATOR, "RES-1", "CN-ISSUANCE", RESERVE, ANY_CEA, 5000, "to reserve")
    return registry


def emissions(
    account: str, year: int, tonnes: int, reason: str = "verifier report"
) -> EmissionsRow:
    return EmissionsRow(account, year, tonnes, reason)


# -- verified emissions and compliance status ------------------------------------------


def test_verified_emissions_are_recorded_once_and_corrected(funded: Registry) -> None:
    assert funded.get_compliance_status("PWR-0001", 2025).state is ComplianceState.NOT_VERIFIED
    first = funded.record_verified_emissions(
        REGULATOR,
        [
            emissions("PWR-0001", 2025, 900),
            emissions("PWR-0002", 2025, 1200),
            emissions("PWR-0001", 2024, 0),
        ],
    )
    assert [(r.account_id, r.compliance_year, r.status) for r in first.results] == [
        ("PWR-0001", 2025, EmissionsRowStatus.RECORDED),
        ("PWR-0002", 2025, EmissionsRowStatus.RECORDED),
        ("PWR-0001", 2024, EmissionsRowStatus.RECORDED),
    ]
    assert first.position is not None
    again = funded.record_verified_emissions(
        REGULATOR,
        [emissions("PWR-0001", 2025, 900, "uploaded twice"), emissions("PWR-0002", 2025, 1100)],
    )
    assert [r.status for r in again.results] == [
        EmissionsRowStatus.UNCHANGED,
        EmissionsRowStatus.RECORDED,
    ]
    assert again.position is not None and again.position > first.position
    unchanged = funded.record_verified_emissions(REGULATOR, [emissions("PWR-0002", 2025, 1100)])
    assert unchanged.results[0].status is EmissionsRowStatus.UNCHANGED
    assert unchanged.position is None
    status = funded.get_compliance_status("PWR-0002", 2025)
    assert (status.state, status.verified_emissions, status.obligation, status.outstanding) == (
        ComplianceState.OPEN,
        1100,
        1100,
        1100,
    )
    assert funded.get_compliance_status("PWR-0001", 2024).state is ComplianceState.COMPLIANT


def test_one_save_for_all_rows(funded: Registry) -> None:
    before = read_events(funded, 0, 1).head_position
    recorded = funded.record_verified_emissions(
        REGULATOR, [emissions("PWR-0001", 2025, 10), emissions("PWR-0002", 2025, 20)]
    )
    page = read_events(funded, before, 100)
    assert [e.topic for e in page.events] == [
        ComplianceObligation.Started.TOPIC,
        ComplianceObligation.EmissionsVerified.TOPIC,
    ] * 2
    assert page.events[-1].position == recorded.position == page.head_position


def test_compliance_status_follows_surrenders(funded: Registry) -> None:
    funded.allocate(REGULATOR, "AL-1", "PWR-0001", ANY_CEA, 1000, "free allocation")
    funded.transfer(
        REGULATOR,
        "CC-1",
        PROJECT_OWNER,
        "PWR-0001",
        UnitSelector(UnitType.CCER),
        100,
        "offsets bought",
    )
    funded.surrender(REGULATOR, "SR-1", "PWR-0001", ANY_CEA, 600, 2025, "part")
    status = funded.get_compliance_status("PWR-0001", 2025)
    assert (status.state, status.surrendered_cea, status.obligation) == (
        ComplianceState.NOT_VERIFIED,
        600,
        0,
    )
    funded.record_verified_emissions(REGULATOR, [emissions("PWR-0001", 2025, 750)])
    status = funded.get_compliance_status("PWR-0001", 2025)
    assert (status.state, status.outstanding) == (ComplianceState.OPEN, 150)
    offsets = funded.surrender(
        REGULATOR, "SR-2A", "PWR-0001", UnitSelector(UnitType.CCER), 100, 2025, "offsets"
    )
    assert offsets.refusal_reason == "CCER_CAP_EXCEEDED"  # 5 % of 750 is 37
    funded.set_compliance_rules(
        REGULATOR, 2025, "*", ComplianceRules(ccer_cap_bps=2_000), "offsets up to 20 % this year"
    )
    funded.surrender(
        REGULATOR, "SR-2", "PWR-0001", UnitSelector(UnitType.CCER), 100, 2025, "offsets"
    )
    status = funded.get_compliance_status("PWR-0001", 2025)
    assert (status.state, status.surrendered_ccer, status.outstanding) == (
        ComplianceState.OPEN,
        100,
        50,
    )
    funded.surrender(REGULATOR, "SR-3", "PWR-0001", ANY_CEA, 50, 2025, "rest")
    status = funded.get_compliance_status("PWR-0001", 2025)
    assert (status.state, status.outstanding) == (ComplianceState.COMPLIANT, 0)
    funded.reverse(REGULATOR, "RV-1", "mee", "SR-3", "entered twice")
    assert funded.get_compliance_status("PWR-0001", 2025).state is ComplianceState.OPEN
    with pytest.raises(UnknownAccount):
        funded.get_compliance_status("NOPE-0001", 2025)
    with pytest.raises(InvalidCommand) as raised:
        funded.get_compliance_status("PWR-0001", 1990)
    assert raised.value.reason == "INVALID_COMPLIANCE_YEAR"


def test_any_bad_row_refuses_the_whole_table_naming_every_bad_row(funded: Registry) -> None:
    funded.record_verified_emissions(REGULATOR, [emissions("PWR-0001", 2025, 500)])
    rows = [
        emissions("PWR-0001", 2025, 999),  # fine, but must not be stored
        emissions("TRD-0001", 2025, 10),  # not a compliance account
        emissions("GHOST-0001", 2025, 10),  # unknown
        emissions("bad id", 2025, 10),  # malformed id
        emissions("PWR-0002", 2018, -5),  # two bad fields
        emissions("PWR-0002", 2025, 10, "x" * 501),
        emissions("PWR-0001", 2025, 999),  # same (account, year) twice
        EmissionsRow("PWR-0002", 2026, 1.5, "r"),  # type: ignore[arg-type]
        emissions("PWR-0002", 2027, 10**12 + 1),
    ]
    with pytest.raises(RowsInvalid) as raised:
        funded.record_verified_emissions(REGULATOR, rows)
    error = raised.value
    assert isinstance(error, InvalidCommand) and error.reason == "INVALID_ROWS"
    assert [(v.field, v.reason) for v in error.violations] == [
        ("rows[1].account_id", "NOT_COMPLIANCE_ACCOUNT"),
        ("rows[2].account_id", "UNKNOWN_ACCOUNT"),
        ("rows[3].account_id", "INVALID_ACCOUNT_ID"),
        ("rows[4].compliance_year", "INVALID_COMPLIANCE_YEAR"),
        ("rows[4].verified_emissions", "INVALID_EMISSIONS"),
        ("rows[5].reason", "INVALID_REASON"),
        ("rows[6].account_id", "DUPLICATE_ROW"),
        ("rows[7].verified_emissions", "INVALID_EMISSIONS"),
        ("rows[8].verified_emissions", "EMISSIONS_TOO_LARGE"),
    ]
    assert all(isinstance(v, Violation) and v.description for v in error.violations)
    assert "8 of 9" in error.message
    assert funded.get_compliance_status("PWR-0001", 2025).verified_emissions == 500
    for year in (2026, 2027):
        assert funded.get_compliance_status("PWR-0002", year).state is ComplianceState.NOT_VERIFIED


def test_emissions_batch_limits(funded: Registry) -> None:
    with pytest.raises(InvalidCommand) as raised:
        funded.record_verified_emissions(REGULATOR, [])
    assert (raised.value.reason, raised.value.metadata) == ("EMPTY_BATCH", {"field": "rows"})
    too_many = [emissions("PWR-0001", 2025, n) for n in range(MAX_BATCH + 1)]
    with pytest.raises(InvalidCommand) as raised:
        funded.record_verified_emissions(REGULATOR, too_many)
    assert (raised.value.reason, raised.value.metadata) == (
        "BATCH_TOO_LARGE",
        {"field": "rows", "limit": str(MAX_BATCH)},
    )
    assert InvalidCommand("x").violations == ()


def test_concurrent_first_figures_for_one_obligation_all_land(funded: Registry) -> None:
    """Each call starts the obligation if missing; the losers of that race retry."""

    def record(tonnes: int) -> EmissionsRowStatus:
        rows = [emissions("PWR-0001", 2030, tonnes)]
        return funded.record_verified_emissions(REGULATOR, rows).results[0].status

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(record, [100, 200, 300, 400]))
    assert statuses == [EmissionsRowStatus.RECORDED] * 4
    assert funded.get_compliance_status("PWR-0001", 2030).verified_emissions in (100, 200, 300, 400)
    verified = read_events(funded, 0, 10_000, topics=[ComplianceObligation.EmissionsVerified.TOPIC])
    assert len(verified.events) == 4


# -- allocation tables -------------------------------------------------------------------


def test_allocation_table_in_one_call(funded: Registry) -> None:
    rows = [
        AllocationRow("AL-1", "PWR-0001", "CEA", 3000, "2025 free allocation", vintage=2025),
        AllocationRow("AL-2", "PWR-0002", "CEA", 2500),  # only 2,000 left: refused
        AllocationRow("AL-3", "PWR-0002", "XYZ", 10),  # malformed: rejected
        AllocationRow("AL-4", "TRD-0001", "CEA", 10),  # not a compliance account
        AllocationRow("AL-1", "PWR-0001", "CEA", 3000, "2025 free allocation", vintage=2025),
        AllocationRow("AL-2", "PWR-0002", "CEA", 1),  # repeat, other content
        AllocationRow("AL-5", "PWR-0002", "CCER", 400, source=PROJECT_OWNER),  # not allocation
        AllocationRow("AL-6", "PWR-0002", "CEA", 0),  # rejected
    ]
    results = funded.allocate_many(REGULATOR, rows)
    assert [(r.client_id, r.outcome, r.reason) for r in results] == [
        ("AL-1", RowOutcome.COMPLETED, ""),
        ("AL-2", RowOutcome.REFUSED, "INSUFFICIENT_UNITS"),
        ("AL-3", RowOutcome.REJECTED, "UNKNOWN_UNIT_TYPE"),
        ("AL-4", RowOutcome.REFUSED, "MOVEMENT_NOT_ALLOWED"),
        ("AL-1", RowOutcome.ALREADY_COMPLETED, ""),
        ("AL-2", RowOutcome.REJECTED, TransactionExistsWithDifferentContent.reason),
        ("AL-5", RowOutcome.REFUSED, "MOVEMENT_NOT_ALLOWED"),
        ("AL-6", RowOutcome.REJECTED, "QUANTITY_NOT_POSITIVE"),
    ]
    saved = {r.position for r in results if r.outcome in (RowOutcome.COMPLETED, RowOutcome.REFUSED)}
    assert len(saved) == 1 and None not in saved, "one atomic save for the whole table"
    assert all(
        r.position is None
        for r in results
        if r.outcome in (RowOutcome.REJECTED, RowOutcome.ALREADY_COMPLETED)
    )
    first = results[0].transaction
    assert first is not None and first.source == RESERVE and first.quantity == 3000
    assert results[4].transaction is not None and results[4].transaction.replayed
    assert funded.get_holdings("PWR-0002") == []  # offsets are never free allocation
    again = funded.allocate_many(REGULATOR, rows[:2])
    assert [r.outcome for r in again] == [RowOutcome.ALREADY_COMPLETED, RowOutcome.REFUSED]
    single = funded.allocate(
        REGULATOR,
        "AL-1",
        "PWR-0001",
        UnitSelector(UnitType.CEA, 2025),
        3000,
        "2025 free allocation",
    )
    assert single.replayed, "a row and a single allocation with the same content replay"
    assert funded.allocate_many(REGULATOR, []) == []
    with pytest.raises(InvalidCommand) as raised:
        funded.allocate_many(
            REGULATOR, [AllocationRow(f"X-{n}", "PWR-0001", "CEA", 1) for n in range(MAX_BATCH + 1)]
        )
    assert (raised.value.reason, raised.value.metadata) == (
        "BATCH_TOO_LARGE",
        {"field": "rows", "limit": str(MAX_BATCH)},
    )


# -- idempotent account state changes ---------------------------------------------------


def test_a_retried_state_change_is_answered_not_refused(funded: Registry) -> None:
    frozen = funded.freeze_account(REGULATOR, "PWR-0001", "court order", request_id="RQ-1")
    assert (frozen.account.state, frozen.replayed) == (AccountState.FROZEN, False)
    retry = funded.freeze_account(REGULATOR, "PWR-0001", "court order", request_id="RQ-1")
    assert (retry.account.state, retry.replayed, retry.position) == (
        AccountState.FROZEN,
        True,
        None,
    )
    assert retry.account.version == frozen.account.version
    with pytest.raises(AccountStateUnchanged):
        funded.freeze_account(REGULATOR, "PWR-0001", "another order", request_id="RQ-2")
    with pytest.raises(AccountStateUnchanged):
        funded.freeze_account(REGULATOR, "PWR-0001", "court order")
    with pytest.raises(RequestExistsWithDifferentContent):  # RQ-1 made a freeze
        funded.unfreeze_account(REGULATOR, "PWR-0001", "lifted", request_id="RQ-1")
    with pytest.raises(AccountStateUnchanged):  # request ids are per account
        funded.unfreeze_account(REGULATOR, "PWR-0002", "lifted", request_id="RQ-1")
    assert (
        funded.unfreeze_account(REGULATOR, "PWR-0001", "lifted", request_id="RQ-3").replayed
        is False
    )
    assert (
        funded.unfreeze_account(REGULATOR, "PWR-0001", "lifted", request_id="RQ-3").replayed is True
    )
    late = funded.freeze_account(REGULATOR, "PWR-0001", "court order", request_id="RQ-1")
    assert (late.account.state, late.replayed) == (AccountState.OPEN, True), (
        "a late retry is answered with the account as it is, and changes nothing"
    )
    closed = funded.close_account(REGULATOR, "TRD-0001", "holder request", request_id="RQ-9")
    again = funded.close_account(REGULATOR, "TRD-0001", "holder request", request_id="RQ-9")
    assert (closed.replayed, again.replayed, again.account.state) == (
        False,
        True,
        AccountState.CLOSED,
    )
    with pytest.raises(InvalidCommand) as raised:
        funded.freeze_account(REGULATOR, "PWR-0002", "x", request_id="no spaces allowed")
    assert raised.value.reason == "INVALID_ID"
    events, _ = account_events(funded, "PWR-0001", 0, 100)
    changes = [
        json.loads(e.payload)
        for e in events
        if e.topic in (Account.Frozen.TOPIC, Account.Unfrozen.TOPIC)
    ]
    assert [c["request_id"] for c in changes] == ["RQ-1", "RQ-3"]


def test_an_account_snapshot_from_before_request_ids_still_works() -> None:
    account = Account.open(
        "PWR-0001",
        AccountType.COMPLIANCE,
        Holder("Plant", "91110000100001234X", "POWER", "Beijing"),
        "mee/li",
    )
    snapshot = Snapshot.take(account)
    old_state = {k: v for k, v in snapshot.state.items() if k != "state_requests"}
    restored = replace(snapshot, state=old_state).mutate(None)
    assert isinstance(restored, Account)
    assert not restored.is_replay("RQ-1", AccountState.FROZEN)
    restored.freeze("order", "mee/li", "RQ-1")
    assert restored.is_replay("RQ-1", AccountState.FROZEN)


def test_request_ids_survive_a_restart(funded: Registry) -> None:
    funded.freeze_account(REGULATOR, "PWR-0001", "court order", request_id="RQ-1")
    if funded.env.get("PERSISTENCE_MODULE") == "eventsourcing.popo":
        return
    fresh = Registry(env=dict(funded.env))  # no cache: the state is replayed from the store
    try:
        assert fresh.freeze_account(
            REGULATOR, "PWR-0001", "court order", request_id="RQ-1"
        ).replayed
    finally:
        fresh.close()


# -- the event log -------------------------------------------------------------------------


def everything(registry: Registry) -> list[LoggedEvent]:
    page = read_events(registry, 0, 10_000)
    assert page.last_position == page.head_position
    return page.events


def test_read_the_whole_log_in_pages_without_gap_or_repeat(funded: Registry) -> None:
    funded.allocate(REGULATOR, "AL-1", "PWR-0001", ANY_CEA, 100, "")
    events = everything(funded)
    head = funded.recorder.max_notification_id()
    assert events and events[-1].position == head
    positions = [e.position for e in events]
    assert positions == sorted(set(positions))
    for event in events:
        assert isinstance(event.payload, bytes) and isinstance(json.loads(event.payload), dict)
        assert event.aggregate_version >= 1 and event.topic.startswith("registry.")
    opened = next(
        e
        for e in events
        if e.topic == Account.Opened.TOPIC and json.loads(e.payload)["account_id"] == "PWR-0001"
    )
    assert opened.aggregate_id == str(Account.id_for("PWR-0001"))
    paged, after = [], 0
    while True:
        page = read_events(funded, after, 3)
        assert len(page.events) <= 3 and page.head_position == head
        paged.extend(page.events)
        if page.last_position == after:
            break
        after = page.last_position
    assert paged == events
    caught_up = read_events(funded, head or 0, 10)
    assert (caught_up.events, caught_up.last_position) == ([], head)
    ahead = read_events(funded, (head or 0) + 50, 10)
    assert (ahead.events, ahead.last_position, ahead.head_position) == ([], (head or 0) + 50, head)


def test_filter_by_topic_and_by_account(funded: Registry) -> None:
    funded.allocate(REGULATOR, "AL-1", "PWR-0001", ANY_CEA, 100, "")
    funded.freeze_account(REGULATOR, "PWR-0002", "order")
    funded.allocate(REGULATOR, "AL-2", "PWR-0001", ANY_CEA, 50, "")
    events = everything(funded)
    credited = [e for e in events if e.topic == Account.Credited.TOPIC]
    page = read_events(funded, 0, 100, topics=[Account.Credited.TOPIC])
    assert page.events == credited and page.last_position == page.head_position
    first_two = read_events(funded, 0, 2, topics=[Account.Credited.TOPIC])
    assert first_two.events == credited[:2]
    assert first_two.last_position == credited[1].position
    rest = read_events(funded, first_two.last_position, 100, topics=[Account.Credited.TOPIC])
    assert first_two.events + rest.events == credited

    account = str(Account.id_for("PWR-0001"))
    mine = [e for e in events if e.aggregate_id == account]
    assert [e.topic for e in mine] == [
        Account.Opened.TOPIC,
        Account.Credited.TOPIC,
        Account.Credited.TOPIC,
    ]
    assert read_events(funded, 0, 100, account_id="PWR-0001").events == mine
    paged, after = [], 0
    while True:
        page = read_events(funded, after, 1, account_id="PWR-0001", scan_budget=2)
        paged.extend(page.events)
        if page.last_position == after:
            break
        after = page.last_position
    assert paged == mine, "a small scan budget ends pages early, never skips"
    both = read_events(funded, 0, 100, [Account.Credited.TOPIC], "PWR-0001")
    assert both.events == mine[1:] and both.last_position == both.head_position
    none = read_events(funded, 0, 100, [Account.Frozen.TOPIC], "PWR-0001")
    assert (none.events, none.last_position) == ([], none.head_position)
    other = read_events(funded, 0, 100, ["registry.Transaction.Completed"], "PWR-0001")
    assert (other.events, other.last_position) == ([], other.head_position)


def test_read_events_validates_its_arguments(funded: Registry) -> None:
    for limit in (0, 10_001):
        with pytest.raises(InvalidCommand) as raised:
            read_events(funded, 0, limit)
        assert raised.value.reason == "INVALID_PAGE_SIZE"
    with pytest.raises(InvalidCommand) as raised:
        read_events(funded, -1, 10)
    assert raised.value.reason == "INVALID_POSITION"
    with pytest.raises(UnknownAccount):
        read_events(funded, 0, 10, account_id="NOPE-0001")
    with pytest.raises(InvalidCommand):
        read_events(funded, 0, 10, account_id="bad id")


def test_account_events_by_version(funded: Registry) -> None:
    for n in range(4):
        funded.allocate(REGULATOR, f"AL-{n}", "PWR-0001", ANY_CEA, 10, "")
    events, after = account_events(funded, "PWR-0001", 0, 100)
    assert [e.aggregate_version for e in events] == [1, 2, 3, 4, 5] and after is None
    logged = [e for e in everything(funded) if e.aggregate_id == str(Account.id_for("PWR-0001"))]
    assert [(e.topic, e.payload, e.aggregate_version) for e in events] == [
        (e.topic, e.payload, e.aggregate_version) for e in logged
    ]
    assert all(e.position in (0, log.position) for e, log in zip(events, logged, strict=True)), (
        "the log position, or 0 where a per-aggregate read cannot know it"
    )
    paged: list[LoggedEvent] = []
    cursor: int | None = 0
    while cursor is not None:
        page, cursor = account_events(funded, "PWR-0001", cursor, 2)
        assert len(page) <= 2
        paged.extend(page)
    assert paged == events
    exact, more = account_events(funded, "PWR-0001", 0, 5)
    assert len(exact) == 5 and more is None
    assert account_events(funded, "PWR-0001", 5, 10) == ([], None)
    with pytest.raises(UnknownAccount):
        account_events(funded, "NOPE-0001", 0, 10)
    with pytest.raises(InvalidCommand) as raised:
        account_events(funded, "PWR-0001", 0, 0)
    assert raised.value.reason == "INVALID_PAGE_SIZE"
    with pytest.raises(InvalidCommand) as raised:
        account_events(funded, "PWR-0001", -1, 10)
    assert raised.value.reason == "INVALID_VERSION"
