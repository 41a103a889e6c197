"""The compliance year through the gRPC API: rules set and read back, a surrender the
rules refuse, the year closed (retry-safe), the report and the status after it, and
the enforcement of a shortfall (Decree 775, Art. 24): late surrender, fine, deduction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import INVALID, PRECONDITION, Api, rpc_error
from tests.e2e.market import (
    PROJECT_OWNER,
    allocate,
    allocation,
    balance,
    caught_up,
    ccer_trade,
    compliance,
    emissions,
    issue,
    open_company,
    record_emissions,
    register_project,
    surrender,
    trade,
)


def rules(
    api: Api, sector: str, reason: str = "2025 rules", **fields: Any
) -> admin_pb.SetComplianceRulesResponse:
    client = api.regulator
    return client.call(
        client.administration.SetComplianceRules,
        admin_pb.SetComplianceRulesRequest(
            compliance_year=2025,
            sector=sector,
            reason=reason,
            rules=admin_pb.ComplianceRules(**fields),
        ),
    )


def test_a_year_is_set_judged_closed_and_reported(api: Api) -> None:
    regulator = api.regulator
    open_company(regulator, "PWR-SD-0001")
    open_company(regulator, "CEM-SD-0001", common.SECTOR_CEMENT)
    issue(regulator, "ISS-1", 10_000)
    allocate(
        regulator, allocation("AL-1", "PWR-SD-0001", 800), allocation("AL-2", "CEM-SD-0001", 800)
    )
    record_emissions(regulator, emissions("PWR-SD-0001", 1_000), emissions("CEM-SD-0001", 900))

    bad = rpc_error(lambda: rules(api, "POWER", ccer_cap_bps=20_000))
    assert bad.code is INVALID and bad.reason == "INVALID_RULE"
    assert [field for field, _ in bad.violations] == ["rules.ccer_cap_bps"]
    rules(api, "*", ccer_cap_bps=500)
    changed = rules(api, "CEMENT", obligation_cap_bps=0, ccer_cap_bps=500)
    assert changed.position > 0 and changed.year.version == 3
    read = regulator.call(
        regulator.administration.GetComplianceRules,
        admin_pb.GetComplianceRulesRequest(compliance_year=2025),
    )
    by_sector = {r.sector: r.rules for r in read.rules}
    assert by_sector["CEMENT"].HasField("obligation_cap_bps")
    assert not by_sector["*"].HasField("obligation_cap_bps")

    operator = api.operator
    early = rpc_error(
        lambda: operator.call(
            operator.accounts.SurrenderUnits, surrender("S-0", "PWR-SD-0001", 10, year=2024)
        )
    )
    assert (early.code, early.reason) == (PRECONDITION, "ADVANCE_USE_NOT_ALLOWED")
    operator.call(operator.accounts.SurrenderUnits, surrender("S-1", "PWR-SD-0001", 700))
    operator.call(operator.accounts.SurrenderUnits, surrender("S-2", "CEM-SD-0001", 800))
    cement = compliance(regulator, "CEM-SD-0001")
    assert cement.state == account_pb.COMPLIANCE_STATE_COMPLIANT and cement.obligation == 800

    close = admin_pb.CloseComplianceYearRequest(compliance_year=2025, reason="deadline passed")
    closed = regulator.call(regulator.administration.CloseComplianceYear, close)
    assert (closed.obligations_closed, closed.shortfalls, closed.shortfall_tonnes) == (2, 1, 300)
    again = regulator.call(regulator.administration.CloseComplianceYear, close)
    assert again.replayed and again.shortfall_tonnes == 300
    frozen = rpc_error(lambda: rules(api, "*", ccer_cap_bps=100))
    assert frozen.code is PRECONDITION and frozen.reason == "COMPLIANCE_YEAR_CLOSED"
    compliant = rpc_error(
        lambda: operator.call(operator.accounts.SurrenderUnits, surrender("S-3", "CEM-SD-0001", 1))
    )
    assert (compliant.code, compliant.reason) == (PRECONDITION, "COMPLIANCE_YEAR_CLOSED")

    power = compliance(regulator, "PWR-SD-0001")
    assert power.state == account_pb.COMPLIANCE_STATE_SHORTFALL and power.shortfall == 300
    assert power.enforcement_step == account_pb.ENFORCEMENT_STEP_ORDERED_TO_CORRECT
    assert power.correction_deadline == closed.correction_deadline != ""
    assert compliance(regulator, "PWR-SD-0001", 2026).debt_carried == 0  # not yet
    report = regulator.call(
        regulator.audit.GetComplianceReport,
        audit_pb.GetComplianceReportRequest(compliance_year=2025),
    )
    assert report.closed
    lines = {(line.sector, line.state): line for line in report.lines}
    short = lines[(common.SECTOR_POWER, account_pb.COMPLIANCE_STATE_SHORTFALL)]
    assert (short.accounts, short.verified_emissions, short.surrendered_cea, short.shortfall) == (
        1,
        1_000,
        700,
        300,
    )
    assert lines[(common.SECTOR_CEMENT, account_pb.COMPLIANCE_STATE_COMPLIANT)].obligation == 800


def test_a_shortfall_is_corrected_fined_and_then_deducted(api: Api) -> None:
    """PWR-SD-0001: verified 1,000 t, surrendered 700 t, closed with 10 days to correct.
    It surrenders 100 t late (300 - 100 = 200 t still short); the fine is 5.5 x 90.00
    CNY/t x 300 t = 148,500.00 CNY; 11 days on its surrender is refused and the
    deduction step carries the 200 t into 2026."""
    regulator, operator = api.regulator, api.operator
    open_company(regulator, "PWR-SD-0001")
    issue(regulator, "ISS-1", 10_000)
    allocate(regulator, allocation("AL-1", "PWR-SD-0001", 1_000))
    record_emissions(regulator, emissions("PWR-SD-0001", 1_000))
    operator.call(operator.accounts.SurrenderUnits, surrender("S-1", "PWR-SD-0001", 700))
    closed = regulator.call(
        regulator.administration.CloseComplianceYear,
        admin_pb.CloseComplianceYearRequest(
            compliance_year=2025, reason="deadline passed", correction_days=10
        ),
    )
    today = datetime.now(UTC).date()
    assert closed.correction_deadline == (today + timedelta(days=10)).isoformat()
    bad_days = rpc_error(
        lambda: regulator.call(
            regulator.administration.CloseComplianceYear,
            admin_pb.CloseComplianceYearRequest(
                compliance_year=2024, reason="x", correction_days=400
            ),
        )
    )
    assert (bad_days.code, bad_days.reason) == (INVALID, "INVALID_CORRECTION_DAYS")

    operator.call(operator.accounts.SurrenderUnits, surrender("S-LATE", "PWR-SD-0001", 100))
    status = compliance(regulator, "PWR-SD-0001")
    assert (status.surrendered_cea, status.shortfall, status.shortfall_remaining) == (800, 300, 200)

    fine = regulator.call(
        regulator.administration.RecordComplianceFine,
        admin_pb.RecordComplianceFineRequest(
            account_id="PWR-SD-0001",
            compliance_year=2025,
            multiple="5.5",
            reference_price="90.00",
            reason="order 2026-17",
        ),
    )
    assert (fine.fine.quantity, fine.fine.amount, fine.replayed) == (300, "148500.00", False)
    too_low = rpc_error(
        lambda: regulator.call(
            regulator.administration.RecordComplianceFine,
            admin_pb.RecordComplianceFineRequest(
                account_id="PWR-SD-0001",
                compliance_year=2025,
                multiple="4",
                reference_price="90.00",
                reason="x",
            ),
        )
    )
    assert (too_low.code, too_low.reason) == (INVALID, "INVALID_FINE_MULTIPLE")
    deduct = admin_pb.EnforceDeductionsRequest(compliance_year=2025, reason="deadline passed")
    early = regulator.call(regulator.administration.EnforceDeductions, deduct)
    assert (early.deducted, early.awaiting_deadline) == (0, 1)

    later = datetime.now(UTC) + timedelta(days=11)
    api.registry.clock = lambda: later  # the correction deadline has passed
    refused = rpc_error(
        lambda: operator.call(
            operator.accounts.SurrenderUnits, surrender("S-LATER", "PWR-SD-0001", 200)
        )
    )
    assert (refused.code, refused.reason) == (PRECONDITION, "CORRECTION_DEADLINE_PASSED")
    overdue = compliance(regulator, "PWR-SD-0001")
    assert overdue.enforcement_step == account_pb.ENFORCEMENT_STEP_CORRECTION_OVERDUE
    run = regulator.call(regulator.administration.EnforceDeductions, deduct)
    assert (run.deducted, run.deducted_tonnes, run.awaiting_deadline) == (1, 200, 0)
    done = compliance(regulator, "PWR-SD-0001")
    assert done.enforcement_step == account_pb.ENFORCEMENT_STEP_DEBT_CARRIED
    assert (done.debt_carried_forward, done.fine.amount) == (200, "148500.00")
    assert compliance(regulator, "PWR-SD-0001", 2026).debt_carried == 200


def test_allocate_units_takes_a_true_up_return_back_to_the_reserve(api: Api) -> None:
    regulator = api.regulator
    open_company(regulator, "PWR-SD-0001")
    issue(regulator, "ISS-1", 10_000)
    allocate(regulator, allocation("AL-1", "PWR-SD-0001", 800))
    give_back = admin_pb.AllocationRow(
        transaction_id="TU-1",
        account_id="PWR-SD-0001",
        unit_type=common.UNIT_TYPE_CEA,
        vintage=2025,
        quantity=300,
        reason="true-up: output fell",
        allocation_return=True,
    )
    with_source = admin_pb.AllocationRow()
    with_source.CopyFrom(give_back)
    with_source.transaction_id, with_source.source_account = "TU-0", "CN-ISSUANCE"
    refused, done = allocate(regulator, with_source, give_back)
    assert (refused.status, refused.reason) == (common.ROW_STATUS_REJECTED, "UNEXPECTED_SOURCE")
    assert done.status == common.ROW_STATUS_COMPLETED, done
    status = compliance(regulator, "PWR-SD-0001")
    assert status.allocated == 500 and status.debt_carried == 0
    assert balance(regulator, "PWR-SD-0001", done.position) == 500


def test_the_ccer_cap_is_five_percent_of_the_obligation(api: Api) -> None:
    """Power, 2025, obligation capped at allocation + 20 % of verified emissions:
    verified 100,000 t, allocated 70,000 t; obligation = min(100,000, 70,000 + 20,000) =
    90,000 t; CCER cap = 5 % x 90,000 = 4,500 t (not 5 % of 100,000 = 5,000).
    4,501 CCER are refused, 4,500 pass; the status shows the cap, nothing left of it,
    the gap (90,000 - 70,000 = 20,000) and no borrowing (the year allows none)."""
    regulator, operator = api.regulator, api.operator
    open_company(regulator, "PWR-SD-0001")
    issue(regulator, "ISS-1", 70_000)
    register_project(regulator, "P-1")
    issue(
        regulator,
        "ISS-CCER",
        5_000,
        common.UnitClass(unit_type=common.UNIT_TYPE_CCER, vintage=2024, project="P-1"),
    )
    allocate(regulator, allocation("AL-1", "PWR-SD-0001", 70_000))
    bought = api.exchange.settle_trades([ccer_trade("T-CCER", PROJECT_OWNER, "PWR-SD-0001", 5_000)])
    assert bought[0].status == settlement_pb.TRADE_STATUS_SETTLED, bought
    record_emissions(regulator, emissions("PWR-SD-0001", 100_000))
    set_ = rules(api, "POWER", ccer_cap_bps=500, obligation_cap_bps=2_000)
    [power] = set_.year.rules
    assert power.rules.ccer_cap_base == admin_pb.CCER_CAP_BASE_OBLIGATION  # the default

    def offsets(txn: str, quantity: int) -> object:
        request = surrender(txn, "PWR-SD-0001", quantity, unit_type=common.UNIT_TYPE_CCER)
        return operator.call(operator.accounts.SurrenderUnits, request)

    over = rpc_error(lambda: offsets("S-CCER-0", 4_501))
    assert (over.code, over.reason) == (PRECONDITION, "CCER_CAP_EXCEEDED")
    status = compliance(regulator, "PWR-SD-0001")
    assert (status.obligation, status.ccer_cap, status.ccer_remaining) == (90_000, 4_500, 4_500)
    offsets("S-CCER-1", 4_500)
    status = compliance(regulator, "PWR-SD-0001")
    assert (status.surrendered_ccer, status.ccer_remaining, status.gap) == (4_500, 0, 20_000)
    assert (status.may_borrow, status.advance_use_limit) == (False, 0)
    assert not status.HasField("carry_over_limit")  # the scheme's default: no limit

    # a regulator may still say "of verified emissions" explicitly, as v1 rules did
    rules(
        api,
        "POWER",
        ccer_cap_bps=500,
        obligation_cap_bps=2_000,
        ccer_cap_base=admin_pb.CCER_CAP_BASE_VERIFIED_EMISSIONS,
    )
    assert compliance(regulator, "PWR-SD-0001").ccer_remaining == 500


def test_borrowing_and_the_carry_over_limit_in_the_status(api: Api) -> None:
    """2025 POWER rules: borrowing at a 10 % gap rate, 50 % of the gap; carry-over
    1.5 x net sales + 10,000 t over a period covering today.
    Seller: verified 1,000, allocated 1,000 + sells 400 on the exchange: gap 0, may not
    borrow; net sales 400 -> limit 1.5 x 400 + 10,000 = 10,600 t.
    Buyer: verified 1,000, allocated 800 (buys 400): gap 200 = 20 % -> may borrow
    50 % x 200 = 100 t; net sales -400 -> limit 10,000 t (b only)."""
    regulator = api.regulator
    open_company(regulator, "PWR-SD-0001")
    open_company(regulator, "PWR-SD-0002")
    issue(regulator, "ISS-1", 1_800)
    allocate(
        regulator, allocation("AL-1", "PWR-SD-0001", 1_000), allocation("AL-2", "PWR-SD-0002", 800)
    )
    exchange = api.exchange
    reply = exchange.call(
        exchange.settlement.SettleTrades,
        settlement_pb.SettleTradesRequest(trades=[trade("T-1", "PWR-SD-0001", "PWR-SD-0002", 400)]),
    )
    assert reply.results[0].status == settlement_pb.TRADE_STATUS_SETTLED
    record_emissions(regulator, emissions("PWR-SD-0001", 1_000), emissions("PWR-SD-0002", 1_000))
    rules(
        api,
        "POWER",
        ccer_cap_bps=500,
        advance_use_bps=5_000,
        advance_use_min_gap_bps=1_000,
        carry_over=admin_pb.CARRY_OVER_NET_SALES,
        carry_over_max_vintage=2024,
        carry_over_net_sales_bps=15_000,
        carry_over_base_tonnes=10_000,
        carry_over_sales_from="2000-01-01",
        carry_over_sales_to="2099-12-31",
    )
    caught_up(regulator)
    seller, buyer = compliance(regulator, "PWR-SD-0001"), compliance(regulator, "PWR-SD-0002")
    assert (seller.gap, seller.may_borrow, seller.net_sales, seller.carry_over_limit) == (
        0,
        False,
        400,
        10_600,
    )
    assert (buyer.gap, buyer.may_borrow, buyer.advance_use_limit) == (200, True, 100)
    assert (buyer.net_sales, buyer.carry_over_limit) == (-400, 10_000)
    missing = rpc_error(lambda: rules(api, "POWER", carry_over=admin_pb.CARRY_OVER_NET_SALES))
    assert missing.code is INVALID and [f for f, _ in missing.violations] == [
        "rules.carry_over_sales_from",
        "rules.carry_over_sales_to",
    ]
