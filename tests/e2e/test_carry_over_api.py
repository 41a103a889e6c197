"""The NET_SALES carry-over limit over a real gRPC channel: what GetComplianceStatus
shows (``net_sales``, ``carry_over_limit``, from the read model) is what SurrenderUnits
enforces (from the event store), to the tonne, for a seller and a buyer.

Rule: MEE, 2023-2024 allowance cap and allocation plan, power: allowances of 2019-2024
carried over up to 1.5 x net sales + 10,000 t (``docs/compliance.md``)."""

from __future__ import annotations

from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import PRECONDITION, Api, rpc_error
from tests.e2e.market import (
    CEA,
    allocate,
    caught_up,
    compliance,
    issue,
    open_company,
    surrender,
)

CEA_2024 = common.UnitClass(unit_type=CEA, vintage=2024)
SELLER, BUYER = "PWR-SD-0001", "PWR-SD-0002"


def allocation_2024(transaction_id: str, account_id: str, quantity: int) -> admin_pb.AllocationRow:
    return admin_pb.AllocationRow(
        transaction_id=transaction_id,
        account_id=account_id,
        unit_type=CEA,
        vintage=2024,
        quantity=quantity,
        reason="2024 allocation",
        source_account="CN-ISSUANCE",
    )


def trade_2024(trade_id: str, seller: str, buyer: str, quantity: int) -> settlement_pb.Trade:
    return settlement_pb.Trade(
        trade_id=trade_id,
        seller_account=seller,
        buyer_account=buyer,
        unit_type=CEA,
        vintage=2024,
        quantity=quantity,
        trade_date=common.Date(year=2026, month=6, day=15),
    )


def carried(
    transaction_id: str, account_id: str, quantity: int
) -> account_pb.SurrenderUnitsRequest:
    """A surrender for 2025 of 2024 allowances (a carried vintage)."""
    request = surrender(transaction_id, account_id, quantity)
    request.vintage = 2024
    return request


def test_the_status_shows_the_limit_the_surrender_enforces(api: Api) -> None:
    """SELLER is allocated 100,000 t of 2024 CEA and BUYER 20,000 t; SELLER sells
    30,000 t to BUYER and buys 10,000 t back: SELLER's net sales 30,000 - 10,000 =
    20,000 t, limit 1.5 x 20,000 + 10,000 = 40,000 t; BUYER's net sales -20,000 t
    (counted as 0), limit 10,000 t. Each may surrender exactly its limit of 2024
    allowances for 2025, not one tonne more."""
    regulator, exchange, operator = api.regulator, api.exchange, api.operator
    open_company(regulator, SELLER)
    open_company(regulator, BUYER)
    issue(regulator, "ISS-24", 120_000, CEA_2024)
    allocate(
        regulator,
        allocation_2024("AL-S", SELLER, 100_000),
        allocation_2024("AL-B", BUYER, 20_000),
    )
    settled = exchange.call(
        exchange.settlement.SettleTrades,
        settlement_pb.SettleTradesRequest(
            trades=[
                trade_2024("T-1", SELLER, BUYER, 30_000),
                trade_2024("T-2", BUYER, SELLER, 10_000),
            ]
        ),
    )
    assert [r.status for r in settled.results] == [settlement_pb.TRADE_STATUS_SETTLED] * 2
    regulator.call(
        regulator.administration.SetComplianceRules,
        admin_pb.SetComplianceRulesRequest(
            compliance_year=2025,
            sector="POWER",
            reason="2023-2024 power plan, period around the test's settlements",
            rules=admin_pb.ComplianceRules(
                ccer_cap_bps=500,
                carry_over=admin_pb.CARRY_OVER_NET_SALES,
                carry_over_max_vintage=2024,
                carry_over_net_sales_bps=15_000,
                carry_over_base_tonnes=10_000,
                carry_over_sales_from="2000-01-01",
                carry_over_sales_to="2099-12-31",
            ),
        ),
    )
    caught_up(regulator)
    for account, sales, limit in ((SELLER, 20_000, 40_000), (BUYER, -20_000, 10_000)):
        status = compliance(regulator, account)
        assert (status.net_sales, status.carry_over_limit) == (sales, limit)
        over = rpc_error(
            lambda a=account, q=limit: operator.call(
                operator.accounts.SurrenderUnits, carried(f"S-OVER-{a}", a, q + 1)
            )
        )
        assert (over.code, over.reason) == (PRECONDITION, "CARRY_OVER_LIMIT_EXCEEDED")
        assert f"limit of {limit} t" in over.message and f"net sales of {sales} t" in over.message
        done = operator.call(
            operator.accounts.SurrenderUnits, carried(f"S-{account}", account, limit)
        )
        assert done.transaction.quantity == limit
        again = rpc_error(
            lambda a=account: operator.call(
                operator.accounts.SurrenderUnits, carried(f"S-MORE-{a}", a, 1)
            )
        )
        assert again.reason == "CARRY_OVER_LIMIT_EXCEEDED"
        assert f"{limit} t already carried" in again.message
        caught_up(regulator)
        after = compliance(regulator, account)
        assert (after.surrendered_cea, after.carry_over_limit) == (limit, limit)
