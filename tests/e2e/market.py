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


def open_company(
    client: RegistryClient, account_id: str, sector: int = common.SECTOR_POWER
) -> admin_pb.OpenAccountResponse:
    return client.call(
        client.administration.OpenAccount,
        admin_pb.OpenAccountRequest(
            account_id=account_id,
            account_type=common.ACCOUNT_TYPE_COMPLIANCE,
            holder=common.Holder(
                name=f"{account_id} Power Co.",
                credit_code="91370000163081422B",
                sector=sector,
                province="Shandong",
            ),
        ),
    )


def open_trader(client: RegistryClient, account_id: str) -> admin_pb.OpenAccountResponse:
    return client.call(
        client.administration.OpenAccount,
        admin_pb.OpenAccountRequest(
            account_id=account_id,
            account_type=common.ACCOUNT_TYPE_TRADING,
            holder=common.Holder(name=f"{account_id} Fund"),
        ),
    )


def issue(
    client: RegistryClient,
    transaction_id: str,
    quantity: int,
    unit_class: common.UnitClass = CEA_2025,
) -> admin_pb.IssueUnitsResponse:
    return client.call(
        client.administration.IssueUnits,
        admin_pb.IssueUnitsRequest(
            transaction_id=transaction_id,
            unit_class=unit_class,
            quantity=quantity,
            reason="issuance for the compliance year",
        ),
    )


def allocation(
    transaction_id: str, account_id: str, quantity: int, source: str = "CN-ISSUANCE"
) -> admin_pb.AllocationRow:
    return admin_pb.AllocationRow(
        transaction_id=transaction_id,
        account_id=account_id,
        unit_type=CEA,
        vintage=2025,
        quantity=quantity,
        reason="pre-allocation",
        source_account=source,
    )


def trade(
    trade_id: str, seller: str, buyer: str, quantity: int, *, hold_id: str | None = None
) -> settlement_pb.Trade:
    message = settlement_pb.Trade(
        trade_id=trade_id,
        seller_account=seller,
        buyer_account=buyer,
        unit_type=CEA,
        vintage=2025,
        quantity=quantity,
        trade_date=common.Date(year=2026, month=6, day=15),
    )
    if hold_id is not None:
        message.hold_id = hold_id
    return message


def surrender(
    transaction_id: str, account_id: str, quantity: int, year: int = 2025, unit_type: int = CEA
) -> account_pb.SurrenderUnitsRequest:
    return account_pb.SurrenderUnitsRequest(
        transaction_id=transaction_id,
        account_id=account_id,
        unit_type=unit_type,
        quantity=quantity,
        compliance_year=year,
        reason="2025 compliance",
    )


def seed_market(regulator: RegistryClient) -> int:
    """Two power companies with allocations and one trader; returns the last position."""
    for account_id in ALLOCATIONS:
        open_company(regulator, account_id)
    open_trader(regulator, TRADER)
    issue(regulator, "ISS-CEA-2025", ISSUED)
    response = regulator.call(
        regulator.administration.AllocateUnits,
        admin_pb.AllocateUnitsRequest(
            rows=[allocation(f"ALLOC-2025-{a}", a, q) for a, q in ALLOCATIONS.items()]
        ),
    )
    assert all(r.status == common.ROW_STATUS_COMPLETED for r in response.results), response
    return max(r.position for r in response.results)


def balance(client: RegistryClient, account_id: str, min_position: int = 0) -> int:
    """Total CEA/2025 in the account, read after ``min_position`` is projected."""
    holdings = client.balances(account_id, min_position=min_position)
    return sum(h.total for h in holdings if h.unit_class == CEA_2025)


# -- builders for the account, administration and audit services -----------------------

NATIONAL_ISSUANCE = "CN-ISSUANCE"
NATIONAL_ACCOUNT_IDS = ["CN-ALLOCATION-RESERVE", "CN-CANCELLATION", "CN-ISSUANCE", "CN-SURRENDER"]


def open_account(
    client: RegistryClient, account_id: str, account_type: int, holder: common.Holder
) -> admin_pb.OpenAccountResponse:
    return client.call(
        client.administration.OpenAccount,
        admin_pb.OpenAccountRequest(
            account_id=account_id, account_type=account_type, holder=holder
        ),
    )


def compliance_holder(
    name: str,
    *,
    sector: int = common.SECTOR_POWER,
    province: str = "Shandong",
    credit_code: str = "91370000163081422B",
) -> common.Holder:
    return common.Holder(name=name, credit_code=credit_code, sector=sector, province=province)


def freeze(
    client: RegistryClient, request_id: str, account_id: str, reason: str = "court order 2026-17"
) -> admin_pb.FreezeAccountResponse:
    return client.call(
        client.administration.FreezeAccount,
        admin_pb.FreezeAccountRequest(request_id=request_id, account_id=account_id, reason=reason),
    )


def unfreeze(
    client: RegistryClient, request_id: str, account_id: str, reason: str = "order lifted"
) -> admin_pb.UnfreezeAccountResponse:
    return client.call(
        client.administration.UnfreezeAccount,
        admin_pb.UnfreezeAccountRequest(
            request_id=request_id, account_id=account_id, reason=reason
        ),
    )


def close(
    client: RegistryClient, request_id: str, account_id: str, reason: str = "holder dissolved"
) -> admin_pb.CloseAccountResponse:
    return client.call(
        client.administration.CloseAccount,
        admin_pb.CloseAccountRequest(request_id=request_id, account_id=account_id, reason=reason),
    )


def allocate(
    client: RegistryClient, *rows: admin_pb.AllocationRow
) -> list[admin_pb.AllocationResult]:
    return list(
        client.call(
            client.administration.AllocateUnits, admin_pb.AllocateUnitsRequest(rows=rows)
        ).results
    )


def reverse(
    transaction_id: str,
    original_party: str,
    original_transaction_id: str,
    reason: str = "allocated in error",
) -> admin_pb.ReverseTransactionRequest:
    return admin_pb.ReverseTransactionRequest(
        transaction_id=transaction_id,
        original_party=original_party,
        original_transaction_id=original_transaction_id,
        reason=reason,
    )


def emissions(
    account_id: str, tonnes: int, year: int = 2025, reason: str = "verification report 2025"
) -> admin_pb.VerifiedEmissionsRow:
    return admin_pb.VerifiedEmissionsRow(
        account_id=account_id, compliance_year=year, verified_emissions=tonnes, reason=reason
    )


def record_emissions(
    client: RegistryClient, *rows: admin_pb.VerifiedEmissionsRow
) -> admin_pb.RecordVerifiedEmissionsResponse:
    return client.call(
        client.administration.RecordVerifiedEmissions,
        admin_pb.RecordVerifiedEmissionsRequest(rows=rows),
    )


def cancel(
    transaction_id: str,
    account_id: str,
    quantity: int,
    unit_type: int = CEA,
    reason: str = "voluntary cancellation",
) -> account_pb.CancelUnitsRequest:
    return account_pb.CancelUnitsRequest(
        transaction_id=transaction_id,
        account_id=account_id,
        unit_type=unit_type,
        quantity=quantity,
        reason=reason,
    )


def compliance(
    client: RegistryClient, account_id: str, year: int = 2025
) -> account_pb.GetComplianceStatusResponse:
    return client.call(
        client.accounts.GetComplianceStatus,
        account_pb.GetComplianceStatusRequest(account_id=account_id, compliance_year=year),
    )


def transaction(client: RegistryClient, transaction_id: str) -> common.Transaction:
    """The caller's party's transaction ``transaction_id`` as recorded (GetTrade reads any
    transaction of the calling party, not only trades)."""
    return client.call(
        client.settlement.GetTrade, settlement_pb.GetTradeRequest(trade_id=transaction_id)
    ).transaction


def head_position(client: RegistryClient) -> int:
    """The newest log position, as StreamEvents reports it."""
    from registry.v1 import audit_service_pb2 as audit_pb

    request = audit_pb.StreamEventsRequest(max_events=1)
    pages = list(client.audit.StreamEvents(request, metadata=client.metadata, timeout=30))
    return pages[0].head_position if pages else 0


def caught_up(client: RegistryClient) -> int:
    """Wait until the read models include everything written so far (read your writes
    for calls that return no position, e.g. OpenAccount); returns that position."""
    head = head_position(client)
    client.balances(NATIONAL_ISSUANCE, min_position=head)
    return head


# -- CCER projects -----------------------------------------------------------------------

PROJECT_OWNER = "PRJ-GS-0117"


def project_details(owner: str = PROJECT_OWNER, **changes: object) -> admin_pb.ProjectDetails:
    details = admin_pb.ProjectDetails(
        owner_account=owner,
        province="Gansu",
        methodology="CCER-14-001-V01",
        sector="WIND",
        verifier="China Quality Certification Centre",
        developer="Gansu Jiuquan Wind Farm Co.",
        crediting_start=common.Date(year=2020, month=1, day=1),
        crediting_end=common.Date(year=2029, month=12, day=31),
    )
    for name, value in changes.items():
        setattr(details, name, value)
    return details


def register_project(
    client: RegistryClient, project_id: str, owner: str = PROJECT_OWNER, **changes: object
) -> admin_pb.RegisterProjectResponse:
    """Open ``owner``'s PROJECT account (a retry of the same opening is answered) and
    register ``project_id`` to it (four eyes off): its CCER are then issued into ``owner``."""
    holder = common.Holder(name="Gansu Jiuquan Wind Farm Co.")
    open_account(client, owner, common.ACCOUNT_TYPE_PROJECT, holder)
    return client.call(
        client.administration.RegisterProject,
        admin_pb.RegisterProjectRequest(
            project_id=project_id,
            details=project_details(owner, **changes),
            reason="validated and registered",
            reference=f"REG-{project_id}",
        ),
    )


def ccer_trade(
    trade_id: str, seller: str, buyer: str, quantity: int, project: str | None = None
) -> settlement_pb.Trade:
    """A CCER trade (of one project, if named): how offsets leave their owner's account."""
    message = settlement_pb.Trade(
        trade_id=trade_id,
        seller_account=seller,
        buyer_account=buyer,
        unit_type=CCER,
        quantity=quantity,
        trade_date=common.Date(year=2026, month=6, day=15),
    )
    if project is not None:
        message.project = project
    return message
