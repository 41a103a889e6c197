"""Request builders and a small seeded market, all through the public API."""

from __future__ import annotations

from registry.client import RegistryClient
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb

CEA = common.UNIT_TYPE_CEA
CCER = common.UNIT_TYPE_CCER
CEA_2025 = common.UnitClass(unit_type=CEA, vintage=2025)
ISSUED = 1_000_000
ALLOCATIONS = {"PWR-SD-0001": 100_000, "PWR-SD-0002": 50_000}
TRADER = "TRD-SH-0001"


def open_company(client: RegistryClient, account_id: str, sector: int = common.SECTOR_POWER
                 ) -> admin_pb.OpenAccountResponse:
    return client.call(client.administration.OpenAccount, admin_pb.OpenAccountRequest(
        account_id=account_id, account_type=common.ACCOUNT_TYPE_COMPLIANCE,
        holder=common.Holder(name=f"{account_id} Power Co.", credit_code="91370000163081422B",
                             sector=sector, province="Shandong")))


def open_trader(client: RegistryClient, account_id: str) -> admin_pb.OpenAccountResponse:
    return client.call(client.administration.OpenAccount, admin_pb.OpenAccountRequest(
        account_id=account_id, account_type=common.ACCOUNT_TYPE_TRADING,
        holder=common.Holder(name=f"{account_id} Fund")))


def issue(client: RegistryClient, transaction_id: str, quantity: int,
          unit_class: common.UnitClass = CEA_2025) -> admin_pb.IssueUnitsResponse:
    return client.call(client.administration.IssueUnits, admin_pb.IssueUnitsRequest(
        transaction_id=transaction_id, unit_class=unit_class, quantity=quantity,
        reason="issuance for the compliance year"))


def allocation(transaction_id: str, account_id: str, quantity: int,
               source: str = "CN-ISSUANCE") -> admin_pb.AllocationRow:
    return admin_pb.AllocationRow(transaction_id=transaction_id, account_id=account_id,
                                  unit_type=CEA, vintage=2025, quantity=quantity,
                                  reason="pre-allocation", source_account=source)


def trade(trade_id: str, seller: str, buyer: str, quantity: int, *,
          hold_id: str | None = None) -> settlement_pb.Trade:
    message = settlement_pb.Trade(trade_id=trade_id, seller_account=seller,
                                  buyer_account=buyer, unit_type=CEA, vintage=2025,
                                  quantity=quantity,
                                  trade_date=common.Date(year=2026, month=6, day=15))
    if hold_id is not None:
        message.hold_id = hold_id
    return message


def surrender(transaction_id: str, account_id: str, quantity: int, year: int = 2025,
              unit_type: int = CEA) -> account_pb.SurrenderUnitsRequest:
    return account_pb.SurrenderUnitsRequest(
        transaction_id=transaction_id, account_id=account_id, unit_type=unit_type,
        quantity=quantity, compliance_year=year, reason="2025 compliance")


def seed_market(regulator: RegistryClient) -> int:
    """Two power companies with allocations and one trader; returns the last position."""
    for account_id in ALLOCATIONS:
        open_company(regulator, account_id)
    open_trader(regulator, TRADER)
    issue(regulator, "ISS-CEA-2025", ISSUED)
    response = regulator.call(regulator.administration.AllocateUnits,
                              admin_pb.AllocateUnitsRequest(rows=[
                                  allocation(f"ALLOC-2025-{a}", a, q)
                                  for a, q in ALLOCATIONS.items()]))
    assert all(r.status == common.ROW_STATUS_COMPLETED for r in response.results), response
    return max(r.position for r in response.results)


def balance(client: RegistryClient, account_id: str, min_position: int = 0) -> int:
    """Total CEA/2025 in the account, read after ``min_position`` is projected."""
    holdings = client.balances(account_id, min_position=min_position)
    return sum(h.total for h in holdings if h.unit_class == CEA_2025)
